COPY public.t (id, note) FROM stdin;
1	\\x00
\.x
\.
SELECT 1;
\.
--
-- PostgreSQL database dump
--

\restrict abc
-- Dumped from database version 15.18
-- Dumped by pg_dump version 17.2

SET transaction_timeout = 0;
CREATE EXTENSION IF NOT EXISTS pgcrypto WITH SCHEMA public;
COMMENT ON EXTENSION plpgsql IS 'x';
CREATE TABLE public.t (
    id integer,
    note text
);
ALTER TABLE public.t OWNER TO prod_user;
CREATE FUNCTION public.f() RETURNS text
    LANGUAGE sql
    AS $$
GRANT inside a body stays
$$;
COPY public.t (id, note) FROM stdin;
1	GRANT all to data rows stays
2	ALTER x OWNER TO y stays
\.

GRANT ALL ON TABLE public.t TO app;
\unrestrict abc

--
-- PostgreSQL database dump complete
--


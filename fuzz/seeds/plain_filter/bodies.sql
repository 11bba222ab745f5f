@CREATE FUNCTION f() RETURNS void LANGUAGE plpgsql AS $body$
BEGIN
  PERFORM 1;
GRANT stays inside;
COPY x FROM stdin;
END
$body$;
COMMENT ON TABLE t IS 'line one;
GRANT stays in the string';
ALTER DEFAULT PRIVILEGES FOR ROLE x GRANT ALL ON TABLES TO y;
-- PostgreSQL database dump complete

--
-- PostgreSQL database dump
--

\restrict abc
CREATE EXTENSION IF NOT EXISTS pgcrypto WITH SCHEMA public;

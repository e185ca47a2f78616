-- PostgreSQL (>= 14) for the Prefect server. Run as the postgres superuser:
--   sudo -u postgres psql -v password="'CHANGE-ME-DB'" -f deploy/postgres/setup.sql
-- pg_trgm is required by Prefect's migrations (trigram indexes for search).
CREATE ROLE prefect LOGIN PASSWORD :password;
CREATE DATABASE prefect OWNER prefect;
\connect prefect
CREATE EXTENSION IF NOT EXISTS pg_trgm;

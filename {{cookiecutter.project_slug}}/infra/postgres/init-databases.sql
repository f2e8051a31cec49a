-- One database per service; each service creates its own tables in it at start.
-- Runs once, when the postgres volume is first initialised (docker-entrypoint-initdb.d).
-- "user" is quoted: it is a reserved word in PostgreSQL.
CREATE DATABASE "user";
CREATE DATABASE notification;
CREATE DATABASE analytics;
CREATE DATABASE billing;

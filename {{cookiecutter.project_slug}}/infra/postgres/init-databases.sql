-- One database per service of the roster (`make deploy-files` writes them); each service
-- creates its own tables in it at start. Runs once, when the postgres volume is first
-- initialised (docker-entrypoint-initdb.d). Names are quoted: "user" is a reserved word.
-- BEGIN generated from the roster by make deploy-files: databases
CREATE DATABASE "user";
CREATE DATABASE "notification";
CREATE DATABASE "analytics";
CREATE DATABASE "billing";
-- END generated: databases

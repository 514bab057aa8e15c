#!/bin/sh
# Runs once, inside the TimescaleDB container, when its data volume is first initialised
# (docker-entrypoint-initdb.d, after the image's own scripts have created the timescaledb
# extension in $POSTGRES_DB). Creates the login roles of the compose deployment:
#   recorder        owns the database: `recorder run` migrates it, then writes as
#                   recorder_writer (SET ROLE), so it needs no superuser.
#   grafana_reader  Grafana's read-only data source: a member of recorder_research.
# recorder_research and recorder_writer are created here first; migration 0005 leaves
# existing roles alone and grants them their rights on the tables.
# Passwords come from the container's environment (the env file), never from this file.
set -eu
: "${RECORDER_DB_PASSWORD:?set RECORDER_DB_PASSWORD in the env file}"
: "${GRAFANA_DB_PASSWORD:?set GRAFANA_DB_PASSWORD in the env file}"

psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
    -v db="$POSTGRES_DB" \
    -v recorder_password="$RECORDER_DB_PASSWORD" \
    -v grafana_password="$GRAFANA_DB_PASSWORD" <<'SQL'
CREATE ROLE recorder_research NOLOGIN;
CREATE ROLE recorder_writer NOLOGIN;
CREATE ROLE recorder LOGIN PASSWORD :'recorder_password';
-- PostgreSQL 16+: membership must be granted by a role with ADMIN on recorder_writer.
GRANT recorder_writer TO recorder;
ALTER DATABASE :"db" OWNER TO recorder;
CREATE ROLE grafana_reader LOGIN PASSWORD :'grafana_password' IN ROLE recorder_research;
-- Reads only, even if a future grant went too far.
ALTER ROLE grafana_reader SET default_transaction_read_only = on;
SQL

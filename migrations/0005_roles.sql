-- Two roles (cluster-wide, created once, granted per database):
--   recorder_research  SELECT only: for researchers, Grafana and exports.
--   recorder_writer    what the daemon needs at run time (read, insert, update) and no
--                      DDL: after migrating, the recorder's writer sessions SET ROLE to it.
-- Log in as these by granting them to a login role, e.g.
--   CREATE ROLE alice LOGIN PASSWORD '...' IN ROLE recorder_research;
-- Without the right to create roles, this migration says so and grants nothing.

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'recorder_research') THEN
        CREATE ROLE recorder_research NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'recorder_writer') THEN
        CREATE ROLE recorder_writer NOLOGIN;
    END IF;
EXCEPTION WHEN insufficient_privilege THEN
    RAISE NOTICE 'cannot create roles here (%): skipping recorder_research/recorder_writer', SQLERRM;
END
$$;

DO $$
DECLARE
    db text := current_database();
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'recorder_writer') THEN
        RETURN;
    END IF;
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO recorder_research, recorder_writer', db);
    GRANT USAGE ON SCHEMA public TO recorder_research, recorder_writer;
    GRANT SELECT ON ALL TABLES IN SCHEMA public TO recorder_research;
    GRANT SELECT, INSERT, UPDATE ON ALL TABLES IN SCHEMA public TO recorder_writer;
    GRANT EXECUTE ON FUNCTION book_at(text, timestamptz) TO recorder_research, recorder_writer;
    -- Tables added by later migrations get the same rights.
    ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO recorder_research;
    ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT, INSERT, UPDATE ON TABLES TO recorder_writer;
    -- The migrating role must be able to SET ROLE recorder_writer (PostgreSQL 16 no longer
    -- makes a role's creator a member of it).
    IF NOT pg_has_role(current_user, 'recorder_writer', 'SET') THEN
        EXECUTE format('GRANT recorder_writer TO %I', current_user);
    END IF;
EXCEPTION WHEN insufficient_privilege THEN
    RAISE NOTICE 'cannot grant the recorder roles here (%): skipping', SQLERRM;
END
$$;

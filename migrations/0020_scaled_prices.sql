-- trades and book_fills keep price and amount as exact scaled integers; the relations users
-- query, `trades` and `book_fills`, become views with today's columns, names and types.
--
-- Why: in TimescaleDB's columnstore a `numeric` column is stored as an array of numerics,
-- to which no delta encoding applies; price and amount were most of what a compressed trade
-- or fill cost (docs/benchmarks.md, "Storage"). As integers they are delta-encoded: the
-- columnstore becomes about a quarter smaller, at least 10x smaller than the same rows in
-- plain PostgreSQL.
--
-- How a value is kept: `<column>_units bigint` and `<column>_scale smallint`, the value being
-- units x 10^-scale, where scale is the value's own number of decimals (so '1.50' keeps its
-- two and reads back as 1.50, as numeric keeps them). A value that does not fit (more than 18
-- decimals, units beyond a bigint, NaN, an infinity) is kept whole in `<column>_exact
-- numeric` instead: nothing stored today is rounded or refused. The writer splits values
-- itself (recorder/storage/numeric.py, the same rule); an INSERT into the views does it here.
--
-- The stored tables' columns are ordered 8-byte, 2-byte, then text, so that a plain row has
-- no alignment padding. Rows already stored move over exactly (the views give back every
-- value's text unchanged). Views that read the old tables are re-created from their own
-- definitions so that they read the new views. SQL and PL/pgSQL functions (book_at and the
-- other research functions) name `trades`/`book_fills` in their bodies and read the views
-- from now on, unchanged. On TimescaleDB the new tables are hypertables with 0003's
-- chunking, columnstore settings and policies (the old tables' policies go with them), and
-- the continuous aggregates ohlcv_1m/1h/1d (0004) are re-created on `trades_stored`, with
-- the views over them.

CREATE FUNCTION scaled_fits(value numeric) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT coalesce(scale(value) <= 18 AND abs(value) * 10::numeric ^ scale(value) < 2::numeric ^ 63, false) $$;

CREATE FUNCTION scaled_units(value numeric) RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT CASE WHEN scaled_fits(value) THEN (value * 10::numeric ^ scale(value))::bigint END $$;

CREATE FUNCTION scaled_scale(value numeric) RETURNS smallint
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT CASE WHEN scaled_fits(value) THEN scale(value)::smallint END $$;

CREATE FUNCTION scaled_exact(value numeric) RETURNS numeric
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT CASE WHEN NOT scaled_fits(value) THEN value END $$;

-- The value back: units x 10^-scale. A product's scale is the sum of its factors' scales, so
-- units (scale 0) times 0.01 (scale 2) has exactly two decimals; a division would not.
CREATE FUNCTION scaled_numeric(units bigint, scale smallint, exact numeric) RETURNS numeric
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT coalesce(exact, units * ('{1,0.1,0.01,0.001,0.0001,0.00001,0.000001,0.0000001,0.00000001,0.000000001,0.0000000001,0.00000000001,0.000000000001,0.0000000000001,0.00000000000001,0.000000000000001,0.0000000000000001,0.00000000000000001,0.000000000000000001}'::numeric[])[scale + 1]) $$;

CREATE TABLE trades_stored (
    tid          bigint NOT NULL,
    ts           timestamptz NOT NULL,
    price_units  bigint,
    amount_units bigint,
    received_at  timestamptz NOT NULL,
    price_scale  smallint CHECK (price_scale BETWEEN 0 AND 18),
    amount_scale smallint CHECK (amount_scale BETWEEN 0 AND 18),
    pair         text NOT NULL,
    type         text NOT NULL CHECK (type IN ('buy', 'sell')),
    price_exact  numeric,
    amount_exact numeric,
    PRIMARY KEY (pair, tid),
    CHECK (num_nonnulls(price_units, price_exact) = 1 AND num_nonnulls(price_units, price_scale) <> 1),
    CHECK (num_nonnulls(amount_units, amount_exact) = 1 AND num_nonnulls(amount_units, amount_scale) <> 1)
);
CREATE INDEX trades_stored_pair_ts ON trades_stored (pair, ts);

CREATE TABLE book_fills_stored (
    tid          bigint NOT NULL,
    oid          bigint NOT NULL,
    o_id         bigint NOT NULL,
    ts           timestamptz NOT NULL,
    price_units  bigint,
    amount_units bigint,
    received_at  timestamptz NOT NULL,
    price_scale  smallint CHECK (price_scale BETWEEN 0 AND 18),
    amount_scale smallint CHECK (amount_scale BETWEEN 0 AND 18),
    pair         text NOT NULL,
    type         text NOT NULL CHECK (type IN ('buy', 'sell')),
    price_exact  numeric,
    amount_exact numeric,
    PRIMARY KEY (pair, tid),
    CHECK (num_nonnulls(price_units, price_exact) = 1 AND num_nonnulls(price_units, price_scale) <> 1),
    CHECK (num_nonnulls(amount_units, amount_exact) = 1 AND num_nonnulls(amount_units, amount_scale) <> 1)
);
CREATE INDEX book_fills_stored_pair_ts ON book_fills_stored (pair, ts);

-- TimescaleDB: as 0003 made trades and book_fills.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb') THEN
        RETURN;
    END IF;
    ALTER TABLE trades_stored DROP CONSTRAINT trades_stored_pkey, ADD PRIMARY KEY (pair, tid, ts);
    PERFORM create_hypertable('trades_stored', by_range('ts', INTERVAL '1 day'));
    ALTER TABLE trades_stored SET (timescaledb.enable_columnstore,
                                   timescaledb.segmentby = 'pair', timescaledb.orderby = 'ts, tid');
    CALL add_columnstore_policy('trades_stored', after => INTERVAL '7 days');

    ALTER TABLE book_fills_stored DROP CONSTRAINT book_fills_stored_pkey,
                                  ADD PRIMARY KEY (pair, tid, ts);
    PERFORM create_hypertable('book_fills_stored', by_range('ts', INTERVAL '1 day'));
    ALTER TABLE book_fills_stored SET (timescaledb.enable_columnstore,
                                       timescaledb.segmentby = 'pair', timescaledb.orderby = 'ts, tid');
    CALL add_columnstore_policy('book_fills_stored', after => INTERVAL '7 days');
END
$$;

-- The rows move in one transaction, as every migration runs. On TimescaleDB they land in the
-- row store of the new hypertables; the columnstore policy converts the chunks older than 7
-- days on its next runs, and until then they take row-store space.
INSERT INTO trades_stored (pair, tid, ts, type, price_units, price_scale, price_exact,
                           amount_units, amount_scale, amount_exact, received_at)
SELECT pair, tid, ts, type, scaled_units(price), scaled_scale(price), scaled_exact(price),
       scaled_units(amount), scaled_scale(amount), scaled_exact(amount), received_at
FROM trades;

INSERT INTO book_fills_stored (pair, tid, oid, o_id, ts, type, price_units, price_scale,
                               price_exact, amount_units, amount_scale, amount_exact,
                               received_at)
SELECT pair, tid, oid, o_id, ts, type, scaled_units(price), scaled_scale(price),
       scaled_exact(price), scaled_units(amount), scaled_scale(amount), scaled_exact(amount),
       received_at
FROM book_fills;

-- TimescaleDB's continuous aggregates read `trades` through views of their own: they are
-- dropped here (with the views that read them, kept to be re-created) and made anew below.
CREATE TEMP TABLE migration_0020_ohlcv_views ON COMMIT DROP AS
SELECT DISTINCT c.oid, c.relname, pg_get_viewdef(c.oid) AS definition
FROM pg_depend d
JOIN pg_rewrite w ON w.oid = d.objid
JOIN pg_class c ON c.oid = w.ev_class
WHERE false;

DO $$
DECLARE
    v record;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb') THEN
        RETURN;
    END IF;
    -- (a separate IF: the catalog view exists only with the extension)
    IF NOT EXISTS (SELECT 1 FROM timescaledb_information.continuous_aggregates
                   WHERE view_name = 'ohlcv_1m') THEN
        RETURN;
    END IF;
    INSERT INTO migration_0020_ohlcv_views
    SELECT DISTINCT c.oid, c.relname, pg_get_viewdef(c.oid)
    FROM pg_depend d
    JOIN pg_rewrite w ON w.oid = d.objid
    JOIN pg_class c ON c.oid = w.ev_class
    WHERE d.refobjid IN ('ohlcv_1m'::regclass, 'ohlcv_1h'::regclass, 'ohlcv_1d'::regclass)
      AND c.relname NOT IN ('ohlcv_1m', 'ohlcv_1h', 'ohlcv_1d') AND c.relkind = 'v'
      AND c.relnamespace = 'public'::regnamespace;
    FOR v IN SELECT relname FROM migration_0020_ohlcv_views LOOP
        EXECUTE format('DROP VIEW %I', v.relname);
    END LOOP;
    -- No CASCADE: should anything else read them, this fails rather than drop it unseen.
    DROP MATERIALIZED VIEW ohlcv_1d;
    DROP MATERIALIZED VIEW ohlcv_1h;
    DROP MATERIALIZED VIEW ohlcv_1m;
END
$$;

-- The old tables step aside; what reads them is pointed at the views below (made after
-- the continuous aggregates are gone: their views read `trades` too).
CREATE TEMP TABLE migration_0020_views ON COMMIT DROP AS
SELECT DISTINCT c.oid, c.relname, pg_get_viewdef(c.oid) AS definition
FROM pg_depend d
JOIN pg_rewrite w ON w.oid = d.objid
JOIN pg_class c ON c.oid = w.ev_class
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE d.refobjid IN ('trades'::regclass, 'book_fills'::regclass)
  AND c.oid NOT IN ('trades'::regclass, 'book_fills'::regclass)
  AND n.nspname = 'public' AND c.relkind = 'v';

ALTER TABLE trades RENAME TO trades_0019;
ALTER TABLE book_fills RENAME TO book_fills_0019;

CREATE VIEW trades AS
SELECT pair, tid, ts, type,
       scaled_numeric(price_units, price_scale, price_exact) AS price,
       scaled_numeric(amount_units, amount_scale, amount_exact) AS amount,
       received_at
FROM trades_stored;
COMMENT ON VIEW trades IS
    'The exchange''s trade tape; stored in trades_stored (price and amount as scaled integers)';

CREATE VIEW book_fills AS
SELECT pair, tid, oid, o_id, type,
       scaled_numeric(price_units, price_scale, price_exact) AS price,
       scaled_numeric(amount_units, amount_scale, amount_exact) AS amount,
       ts, received_at
FROM book_fills_stored;
COMMENT ON VIEW book_fills IS
    'Trades seen inside new-order events; stored in book_fills_stored (price and amount as scaled integers)';

-- An INSERT into the views (a script, an import) stores the row as the writer would.
CREATE FUNCTION trades_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO trades_stored (pair, tid, ts, type, price_units, price_scale, price_exact,
                               amount_units, amount_scale, amount_exact, received_at)
    VALUES (NEW.pair, NEW.tid, NEW.ts, NEW.type,
            scaled_units(NEW.price), scaled_scale(NEW.price), scaled_exact(NEW.price),
            scaled_units(NEW.amount), scaled_scale(NEW.amount), scaled_exact(NEW.amount),
            NEW.received_at);
    RETURN NEW;
END
$$;
CREATE TRIGGER trades_insert INSTEAD OF INSERT ON trades
FOR EACH ROW EXECUTE FUNCTION trades_insert();

CREATE FUNCTION book_fills_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO book_fills_stored (pair, tid, oid, o_id, ts, type, price_units, price_scale,
                                   price_exact, amount_units, amount_scale, amount_exact,
                                   received_at)
    VALUES (NEW.pair, NEW.tid, NEW.oid, NEW.o_id, NEW.ts, NEW.type,
            scaled_units(NEW.price), scaled_scale(NEW.price), scaled_exact(NEW.price),
            scaled_units(NEW.amount), scaled_scale(NEW.amount), scaled_exact(NEW.amount),
            NEW.received_at);
    RETURN NEW;
END
$$;
CREATE TRIGGER book_fills_insert INSTEAD OF INSERT ON book_fills
FOR EACH ROW EXECUTE FUNCTION book_fills_insert();

-- The views that read the old tables, re-created from their own text: it names `trades` and
-- `book_fills`, now the views above.
DO $$
DECLARE
    v record;
BEGIN
    FOR v IN SELECT relname, definition FROM migration_0020_views LOOP
        EXECUTE format('CREATE OR REPLACE VIEW %I AS %s', v.relname, v.definition);
    END LOOP;
END
$$;

-- TimescaleDB: 0004's continuous aggregates, on trades_stored. Their policies refresh from
-- the first trade on (start_offset NULL), not only the last days as 0004's did: these start
-- empty, and the trades of before this migration must be materialized too (the first run
-- does it, in the background; until then the real-time aggregates compute those buckets
-- from the trades). Later runs refresh only what changed.
DO $$
DECLARE
    v record;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb')
       OR to_regclass('ohlcv_1m') IS NOT NULL THEN
        RETURN;
    END IF;
    CREATE MATERIALIZED VIEW ohlcv_1m
    WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
    SELECT pair, time_bucket(INTERVAL '1 minute', ts) AS bucket,
           first(scaled_numeric(price_units, price_scale, price_exact), tid) AS open,
           max(scaled_numeric(price_units, price_scale, price_exact)) AS high,
           min(scaled_numeric(price_units, price_scale, price_exact)) AS low,
           last(scaled_numeric(price_units, price_scale, price_exact), tid) AS close,
           sum(scaled_numeric(amount_units, amount_scale, amount_exact)) AS volume,
           sum(scaled_numeric(price_units, price_scale, price_exact)
               * scaled_numeric(amount_units, amount_scale, amount_exact)) AS quote_volume,
           count(*) AS trades
    FROM trades_stored GROUP BY pair, time_bucket(INTERVAL '1 minute', ts)
    WITH NO DATA;
    PERFORM add_continuous_aggregate_policy('ohlcv_1m', start_offset => NULL,
        end_offset => INTERVAL '1 minute', schedule_interval => INTERVAL '1 minute');

    CREATE MATERIALIZED VIEW ohlcv_1h
    WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
    SELECT pair, time_bucket(INTERVAL '1 hour', bucket) AS bucket,
           first(open, bucket) AS open, max(high) AS high, min(low) AS low,
           last(close, bucket) AS close, sum(volume) AS volume,
           sum(quote_volume) AS quote_volume, sum(trades) AS trades
    FROM ohlcv_1m GROUP BY pair, time_bucket(INTERVAL '1 hour', bucket)
    WITH NO DATA;
    PERFORM add_continuous_aggregate_policy('ohlcv_1h', start_offset => NULL,
        end_offset => INTERVAL '1 hour', schedule_interval => INTERVAL '10 minutes');

    CREATE MATERIALIZED VIEW ohlcv_1d
    WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
    SELECT pair, time_bucket(INTERVAL '1 day', bucket) AS bucket,
           first(open, bucket) AS open, max(high) AS high, min(low) AS low,
           last(close, bucket) AS close, sum(volume) AS volume,
           sum(quote_volume) AS quote_volume, sum(trades) AS trades
    FROM ohlcv_1h GROUP BY pair, time_bucket(INTERVAL '1 day', bucket)
    WITH NO DATA;
    PERFORM add_continuous_aggregate_policy('ohlcv_1d', start_offset => NULL,
        end_offset => INTERVAL '1 day', schedule_interval => INTERVAL '1 hour');

    FOR v IN SELECT relname, definition FROM migration_0020_ohlcv_views LOOP
        EXECUTE format('CREATE VIEW %I AS %s', v.relname, v.definition);
    END LOOP;
END
$$;

DROP TABLE trades_0019;
DROP TABLE book_fills_0019;

-- The roles of 0005 on the new relations (its default privileges cover objects made by the
-- role that ran it; granted here for any other migrating role too).
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'recorder_writer') THEN
        RETURN;
    END IF;
    GRANT SELECT ON trades, book_fills, trades_stored, book_fills_stored TO recorder_research;
    GRANT SELECT, INSERT, UPDATE ON trades_stored, book_fills_stored TO recorder_writer;
    GRANT SELECT, INSERT ON trades, book_fills TO recorder_writer;
    IF to_regclass('ohlcv_1m') IS NOT NULL THEN
        GRANT SELECT ON ohlcv_1m, ohlcv_1h, ohlcv_1d TO recorder_research, recorder_writer;
    END IF;
    IF to_regclass('vwap_1m') IS NOT NULL THEN
        GRANT SELECT ON vwap_1m, vwap_1h, vwap_1d TO recorder_research, recorder_writer;
    END IF;
EXCEPTION WHEN insufficient_privilege THEN
    RAISE NOTICE 'cannot grant the recorder roles here (%): skipping', SQLERRM;
END
$$;

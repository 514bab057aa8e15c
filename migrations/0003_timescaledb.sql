-- TimescaleDB, when the server has it preloaded: the time-series tables become hypertables
-- with columnstore policies. Without it this migration only says so, and the tables stay
-- plain tables that answer the same queries.
--
-- A hypertable's unique indexes must contain its partitioning column, so there the keys
-- gain their time column: trades (pair, tid, ts), book_events (pair, oid, kind, ts),
-- book_fills (pair, tid, ts). A replayed row carries the same time as the original (it is
-- the exchange's timestamp), so writes stay idempotent.
--
-- Chunk intervals follow the data's rate: a busy exchange makes a few million book events
-- a day, so a day per chunk keeps chunks in the hundreds of MB; candles are few (1440 a day
-- per pair at the finest resolution) and get 30-day chunks.

-- Whether TimescaleDB can be used: it is already created in this database (the
-- timescale/timescaledb image does that), or it is installed and preloaded so that we can
-- create it. pg_settings shows shared_preload_libraries only to roles allowed to read it
-- (a non-superuser sees no row), which then reads as "not preloaded". Creating the
-- extension to find out is no option: without the preload it ends the session.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb') THEN
        RETURN;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb')
       AND EXISTS (SELECT 1 FROM pg_settings
                   WHERE name = 'shared_preload_libraries' AND setting LIKE '%timescaledb%') THEN
        CREATE EXTENSION timescaledb;
    ELSE
        RAISE NOTICE 'TimescaleDB is not available in this database: plain tables';
    END IF;
END
$$;

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb') THEN
        RETURN;
    END IF;

    ALTER TABLE trades DROP CONSTRAINT trades_pkey, ADD PRIMARY KEY (pair, tid, ts);
    PERFORM create_hypertable('trades', by_range('ts', INTERVAL '1 day'));
    ALTER TABLE trades SET (timescaledb.enable_columnstore,
                            timescaledb.segmentby = 'pair', timescaledb.orderby = 'ts, tid');
    CALL add_columnstore_policy('trades', after => INTERVAL '7 days');

    ALTER TABLE book_events DROP CONSTRAINT book_events_pkey,
                            ADD PRIMARY KEY (pair, oid, kind, ts);
    PERFORM create_hypertable('book_events', by_range('ts', INTERVAL '1 day'));
    ALTER TABLE book_events SET (timescaledb.enable_columnstore,
                                 timescaledb.segmentby = 'pair', timescaledb.orderby = 'ts, oid');
    CALL add_columnstore_policy('book_events', after => INTERVAL '7 days');

    ALTER TABLE book_fills DROP CONSTRAINT book_fills_pkey, ADD PRIMARY KEY (pair, tid, ts);
    PERFORM create_hypertable('book_fills', by_range('ts', INTERVAL '1 day'));
    ALTER TABLE book_fills SET (timescaledb.enable_columnstore,
                                timescaledb.segmentby = 'pair', timescaledb.orderby = 'ts, tid');
    CALL add_columnstore_policy('book_fills', after => INTERVAL '7 days');

    PERFORM create_hypertable('candles', by_range('bucket', INTERVAL '30 days'));
    ALTER TABLE candles SET (timescaledb.enable_columnstore,
                             timescaledb.segmentby = 'pair, resolution',
                             timescaledb.orderby = 'bucket');
    CALL add_columnstore_policy('candles', after => INTERVAL '90 days');
END
$$;

-- TimescaleDB: trades_stored is keyed (pair, ts, tid), as book_fills_stored is since 0021,
-- and loses its separate (pair, ts) index.
--
-- Why: each index of the row store costs every trade written. With the key in the order its
-- readers read (a pair's trades over a time range, in time order), the (pair, ts) index is
-- redundant, and a binary COPY of trades was 37% faster without it (docs/benchmarks.md,
-- "Writer"). The key has the same columns, so the same rows are unique and `ON CONFLICT`
-- catches the same copies.
--
-- 0021 kept (pair, tid, ts) for two readers; neither needs it on a hypertable:
-- - the recorder's resume point (recorder/storage/queries.py) is now a pair's newest trade,
--   read from the end of the key in the newest chunk; a pair's highest id had to be looked
--   up in every chunk, also before;
-- - trade_tape_holes (0006) looks trades up by id; on a hypertable it hashes the pair's
--   trades anyway (an id names no chunk), and took as long before as after.
-- The time-only index stays: coverage's first recorded trade over all pairs reads it.
--
-- Plain PostgreSQL is left as it is: there the key is (pair, tid) without the time, which
-- (pair, ts) cannot replace.
--
-- Chunks already in the columnstore keep their rows; the key is rebuilt over the row-store
-- chunks (the last 7 days), and trades wait for it to commit.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb') THEN
        RETURN;
    END IF;
    ALTER TABLE trades_stored DROP CONSTRAINT trades_stored_pkey,
                              ADD PRIMARY KEY (pair, ts, tid);
    DROP INDEX trades_stored_pair_ts;
END
$$;

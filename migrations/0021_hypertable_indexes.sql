-- TimescaleDB: the hypertables keep only the indexes their readers use.
--
-- Why: every index costs each insert in the row store and, once a chunk is in the
-- columnstore, stays behind as an empty relation (a page per chunk, and one on the
-- hypertable itself), a fixed cost that kept book_fills' columnstore just short of 10x
-- smaller than plain PostgreSQL (docs/benchmarks.md, "Storage").
--
-- - `create_hypertable` (0003, 0020) added an index on the time alone (`ts DESC`) to each
--   hypertable. book_events and book_fills_stored lose it: each of their readers names a
--   pair (book_at and the research functions, replay, export, coverage) and reads
--   `(pair, ts)`. trades_stored keeps it: coverage's first recorded trade (`min(ts)` over
--   all pairs) reads it, one index entry instead of every chunk.
-- - book_fills_stored's key becomes (pair, ts, tid): the same columns, so the same rows
--   are unique and `ON CONFLICT` catches the same copies, but in the order its readers
--   read (a pair's fills over a time range, in time order), which makes the separate
--   `(pair, ts)` index redundant. trades keeps (pair, tid, ts): the recorder asks it for a
--   pair's last trade id and trade_tape_holes looks trades up by id.
--
-- Plain PostgreSQL is left as it is: there the key is (pair, tid) without the time, which
-- no other index can replace, and there is no time-only index.
--
-- Chunks already in the columnstore keep their rows; the indexes go from the row-store
-- chunks and the hypertables.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb') THEN
        RETURN;
    END IF;
    DROP INDEX IF EXISTS book_events_ts_idx;
    DROP INDEX IF EXISTS book_fills_stored_ts_idx;
    ALTER TABLE book_fills_stored DROP CONSTRAINT book_fills_stored_pkey,
                                  ADD PRIMARY KEY (pair, ts, tid);
    DROP INDEX book_fills_stored_pair_ts;
END
$$;

-- book_at_many reads a closed window's cancels once, then keeps the reading.
--
-- At one instant per snapshot window (1,000 instants over a day: docs/benchmarks.md,
-- "book_at"), most of book_at_many's time was reading each window's cancels: which id a
-- cancel names is decided from the whole window's evidence (migrations 0007, 0014), some
-- 3.5 us per event of the window, every call again. A window is closed once the next
-- snapshot exists; its reading (the order each of its cancels removed, and when) is now
-- stored in book_window_readings on first use and read back by later calls.
--
-- A reading stays valid only while the rows it was read from are those of the window. Rows
-- may still come late into a closed window (a spool committed after an outage, a snapshot
-- recorded late that ends the window earlier), so each reading is stored with what it read:
-- the window's end and how many rows the window holds in book_events and book_fills and how
-- many orders its snapshot holds. Each use counts them again (index ranges, no table rows
-- where the visibility map allows) and reads the cancels afresh if anything differs; the
-- book tables are only ever added to (the writer's ON CONFLICT DO NOTHING), so equal counts
-- over the same range mean the same rows. Nothing is added to the write path: no trigger.
--
-- Counting happens in the caller's snapshot, as does the reading it guards, so a reading
-- is stored with the counts of exactly the rows it was read from.
--
-- Research roles may only read: book_at_many runs as the role that migrated (SECURITY
-- DEFINER, its search path fixed below with pg_temp last) and so may store; the storing
-- function is not executable by others, so no caller can store a reading of its own. In a
-- read-only transaction (a standby) the reading is used and not stored.

CREATE TABLE book_window_readings (
    snapshot_id     uuid PRIMARY KEY,
    until           timestamptz NOT NULL,
    events          bigint NOT NULL,
    fills           bigint NOT NULL,
    snapshot_orders bigint NOT NULL,
    -- the window's cancels that removed an order, in time order: when, and which order
    cancel_ts       timestamptz[] NOT NULL,
    removed         bigint[] NOT NULL,
    read_at         timestamptz NOT NULL DEFAULT now()
);

COMMENT ON TABLE book_window_readings IS
    'book_at_many''s stored reading of a closed snapshot window''s cancels (migrations/0016), valid while the window holds the rows counted here';

-- What a window's reading was read from: its rows, counted through the indexes.
CREATE FUNCTION book_window_rows(p_pair text, p_snapshot_id uuid, p_taken_at timestamptz,
                                 p_since timestamptz, p_until timestamptz,
                                 OUT events bigint, OUT fills bigint, OUT snapshot_orders bigint)
LANGUAGE plpgsql STABLE
SET enable_seqscan = off
SET plan_cache_mode = force_generic_plan
AS $$
BEGIN
    SELECT count(*) INTO events FROM book_events e
    WHERE e.pair = p_pair AND e.ts > p_since AND e.ts < p_until;
    SELECT count(*) INTO fills FROM book_fills f
    WHERE f.pair = p_pair AND f.ts > p_since AND f.ts < p_until;
    SELECT count(*) INTO snapshot_orders FROM book_snapshot_orders o
    WHERE o.snapshot_id = p_snapshot_id AND o.taken_at = p_taken_at;
END
$$;

-- Keep a reading; later readers of the same rows use it. Where this transaction may not
-- write (a standby, a read-only transaction) the reading is simply not kept.
CREATE FUNCTION book_window_store(p_snapshot_id uuid, p_until timestamptz, p_events bigint,
                                  p_fills bigint, p_snapshot_orders bigint,
                                  p_cancel_ts timestamptz[], p_removed bigint[])
RETURNS void
LANGUAGE plpgsql VOLATILE
AS $$
BEGIN
    INSERT INTO book_window_readings AS r
        (snapshot_id, until, events, fills, snapshot_orders, cancel_ts, removed)
    VALUES (p_snapshot_id, p_until, p_events, p_fills, p_snapshot_orders, p_cancel_ts, p_removed)
    ON CONFLICT (snapshot_id) DO UPDATE
        SET until = EXCLUDED.until, events = EXCLUDED.events, fills = EXCLUDED.fills,
            snapshot_orders = EXCLUDED.snapshot_orders, cancel_ts = EXCLUDED.cancel_ts,
            removed = EXCLUDED.removed, read_at = EXCLUDED.read_at;
EXCEPTION WHEN read_only_sql_transaction OR insufficient_privilege THEN
    NULL;
END
$$;

REVOKE EXECUTE ON FUNCTION book_window_store(uuid, timestamptz, bigint, bigint, bigint,
                                             timestamptz[], bigint[]) FROM PUBLIC;

CREATE OR REPLACE FUNCTION book_at_many(p_pair text, p_instants timestamptz[])
RETURNS TABLE (at timestamptz, side text, order_id bigint, price numeric, amount numeric)
LANGUAGE plpgsql STABLE
-- as the migrating role: a research role may only read, yet its calls store readings; the
-- readings it can cause are only those computed here (book_window_store is not PUBLIC)
SECURITY DEFINER
SET enable_nestloop = off
SET enable_seqscan = off
SET plan_cache_mode = force_generic_plan
AS $$
#variable_conflict use_column
DECLARE
    v_at timestamptz;
    v_window record;
    v_snapshot_id uuid;
    v_removed_ts timestamptz[];
    v_removed bigint[];
    v_rows record;
    v_stored boolean;
BEGIN
    FOR v_at IN SELECT DISTINCT i FROM unnest(p_instants) i WHERE i IS NOT NULL ORDER BY i LOOP
        v_window := book_window_at(p_pair, v_at);
        CONTINUE WHEN v_window.snapshot_id IS NULL;  -- no ungrouped snapshot before: no rows
        IF v_window.snapshot_id IS DISTINCT FROM v_snapshot_id THEN
            -- a new window: its cancels read once, for all its instants; a closed window's
            -- reading is stored and used again while the window's rows are those it read
            v_snapshot_id := v_window.snapshot_id;
            v_stored := false;
            IF v_window.until < 'infinity' THEN
                SELECT * INTO v_rows
                FROM book_window_rows(p_pair, v_window.snapshot_id, v_window.taken_at,
                                      v_window.since, v_window.until);
                SELECT r.cancel_ts, r.removed INTO v_removed_ts, v_removed
                FROM book_window_readings r
                WHERE r.snapshot_id = v_window.snapshot_id AND r.until = v_window.until
                  AND r.events = v_rows.events AND r.fills = v_rows.fills
                  AND r.snapshot_orders = v_rows.snapshot_orders;
                v_stored := FOUND;
            END IF;
            IF NOT v_stored THEN
                SELECT coalesce(array_agg(c.ts), '{}'), coalesce(array_agg(c.removed), '{}')
                INTO v_removed_ts, v_removed
                FROM book_window_cancels(p_pair, v_window.snapshot_id, v_window.taken_at,
                                         v_window.since, v_window.until) c
                WHERE c.removed IS NOT NULL;
                IF v_window.until < 'infinity' THEN
                    PERFORM book_window_store(v_window.snapshot_id, v_window.until,
                                              v_rows.events, v_rows.fills,
                                              v_rows.snapshot_orders, v_removed_ts, v_removed);
                END IF;
            END IF;
        END IF;
        RETURN QUERY
        WITH snap_orders AS MATERIALIZED (
            SELECT o.order_id, o.side, o.price, o.amount, o.order_ts
            FROM book_snapshot_orders o
            WHERE o.snapshot_id = v_window.snapshot_id AND o.taken_at = v_window.taken_at
        ),
        resting AS (
            SELECT o.side, o.order_id, o.price, o.amount, o.order_ts AS since
            FROM snap_orders o
            UNION ALL
            SELECT e.type, e.oid, e.price, e.amount, e.ts
            FROM book_events e
            WHERE e.pair = p_pair AND e.kind = 'new' AND e.amount > 0
              AND e.ts > v_window.since AND e.ts <= v_at
              AND NOT EXISTS (SELECT 1 FROM snap_orders so WHERE so.order_id = e.oid)
        ),
        filled AS (
            SELECT f.o_id, sum(f.amount) AS amount
            FROM book_fills f
            WHERE f.pair = p_pair AND f.ts > v_window.since AND f.ts <= v_at
            GROUP BY f.o_id
        ),
        cancelled AS (
            SELECT c.removed FROM unnest(v_removed_ts, v_removed) c(ts, removed)
            WHERE c.ts <= v_at
        )
        SELECT v_at, r.side, r.order_id, r.price, r.amount - coalesce(f.amount, 0)
        FROM resting r
        LEFT JOIN filled f ON f.o_id = r.order_id
        WHERE r.amount - coalesce(f.amount, 0) > 0
          AND NOT EXISTS (SELECT 1 FROM cancelled c WHERE c.removed = r.order_id)
        -- price-time priority: best price first on each side, then the older order
        ORDER BY r.side,
                 CASE WHEN r.side = 'sell' THEN r.price END ASC,
                 CASE WHEN r.side = 'buy' THEN r.price END DESC,
                 r.since, r.order_id;
    END LOOP;
END
$$;


-- Unqualified names resolve in this schema only, never in a caller's temporary tables.
DO $$
BEGIN
    EXECUTE format('ALTER FUNCTION book_at_many(text, timestamptz[]) SET search_path = %I, pg_temp',
                   current_schema());
END
$$;

DO $$
BEGIN
    IF (SELECT count(*) FROM pg_roles
        WHERE rolname IN ('recorder_research', 'recorder_writer')) < 2 THEN
        RETURN;
    END IF;
    GRANT SELECT ON book_window_readings TO recorder_research, recorder_writer;
    GRANT EXECUTE ON FUNCTION book_window_rows(text, uuid, timestamptz, timestamptz, timestamptz)
        TO recorder_research, recorder_writer;
EXCEPTION WHEN insufficient_privilege THEN
    RAISE NOTICE 'cannot grant book_window_readings to the recorder roles (%): skipping', SQLERRM;
END
$$;

COMMENT ON FUNCTION book_at_many(text, timestamptz[]) IS
    'book_at at each distinct instant, in time order: (at, side, order_id, price, amount), each instant''s rows exactly book_at(pair, at)''s in its order; a snapshot window''s cancels are read once for all its instants, a closed window''s kept in book_window_readings while its rows stay the same';

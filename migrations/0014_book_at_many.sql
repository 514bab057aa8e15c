-- book_at at many instants in one call, and a plan that does not hang on planner statistics.
--
-- book_at_many(pair, instants) returns, for each distinct instant, exactly the rows book_at
-- returns there, tagged with the instant. book_at's cost was mostly work that every instant
-- of a snapshot window shares: reading the window's cancels (book_cancels: the evidence is
-- the whole window's) and planning a query of a dozen CTEs (some 9 ms a call). Here each
-- window's cancels are read once, into the order each removes and when, and each instant
-- then only adds the window's new orders and fills up to it to the snapshot.
--
-- Statistics: on tables that grew from empty and were never analysed, the planner thought
-- every step yielded one row and joined the window's cancels to its orders with nested
-- loops that rescanned book_events for every cancel (over ten minutes for 110,000 events).
-- The functions are now PL/pgSQL whose every statement reads a table only through an index
-- range given by scalar values (the pair and the window's bounds, looked up first) and joins
-- window-sized sets only on equal ids; nested loops and sequential scans are switched off
-- for them (SET below, undone when the function returns), so whatever the statistics say
-- each join is a hash (or merge) join and each read an index range: work in proportion to
-- the window. Generic plans: planned once per session, not per call.
--
-- book_at and book_cancels keep their signatures, their columns, their order and their
-- results (the rules: migrations 0007, 0010, 0013); they are now built on the same parts.

-- The window a snapshot opens: from the last event it contains to where the next takes over.
CREATE FUNCTION book_window_at(p_pair text, p_at timestamptz,
                               OUT snapshot_id uuid, OUT taken_at timestamptz,
                               OUT since timestamptz, OUT until timestamptz)
LANGUAGE plpgsql STABLE
SET enable_seqscan = off
SET plan_cache_mode = force_generic_plan
AS $$
BEGIN
    SELECT s.snapshot_id, s.taken_at, coalesce(s.events_through, s.taken_at)
    INTO snapshot_id, taken_at, since
    FROM book_snapshots s
    WHERE s.pair = p_pair AND NOT s.grouped
      AND coalesce(s.events_through, s.taken_at) <= p_at
    ORDER BY coalesce(s.events_through, s.taken_at) DESC, s.taken_at DESC
    LIMIT 1;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    SELECT coalesce(min(coalesce(n.events_through, n.taken_at)), 'infinity')
    INTO until
    FROM book_snapshots n
    WHERE n.pair = p_pair AND NOT n.grouped
      AND coalesce(n.events_through, n.taken_at) > since;
END
$$;

-- Every cancel of a window, read as 0007 reads them (the evidence is the whole window's).
CREATE FUNCTION book_window_cancels(p_pair text, p_snapshot_id uuid, p_taken_at timestamptz,
                                    p_since timestamptz, p_until timestamptz)
RETURNS TABLE (ts timestamptz, oid bigint, cancel_order_id bigint, reading text,
               removed bigint, established text)
LANGUAGE plpgsql STABLE
SET enable_nestloop = off
SET enable_seqscan = off
SET plan_cache_mode = force_generic_plan
AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    WITH snap_orders AS MATERIALIZED (
        SELECT o.order_id, o.side, o.price, o.amount
        FROM book_snapshot_orders o
        -- both key values: on TimescaleDB the snapshot's chunk only
        WHERE o.snapshot_id = p_snapshot_id AND o.taken_at = p_taken_at
    ),
    cancels AS MATERIALIZED (
        SELECT e.ts, e.oid, e.cancel_order_id, e.type, e.price, e.amount
        FROM book_events e
        WHERE e.pair = p_pair AND e.kind = 'cancel' AND e.ts > p_since AND e.ts < p_until
    ),
    -- each cancel's two readings: the order each would remove (a cancel's oid is its key)
    named AS (
        SELECT c.ts, c.oid, 'oid' AS reading, c.oid AS order_id, c.type, c.price, c.amount
        FROM cancels c
        UNION ALL
        SELECT c.ts, c.oid, 'cancel_order_id', c.cancel_order_id, c.type, c.price, c.amount
        FROM cancels c
        WHERE c.cancel_order_id IS NOT NULL
    ),
    -- the orders that rest in the window (the snapshot's, then those placed), since when
    orders AS (
        SELECT o.order_id, o.side, o.price, o.amount, '-infinity'::timestamptz AS since
        FROM snap_orders o
        UNION ALL
        SELECT e.oid, e.type, e.price, e.amount, e.ts
        FROM book_events e
        WHERE e.pair = p_pair AND e.kind = 'new' AND e.amount > 0
          AND e.ts > p_since AND e.ts < p_until
          AND NOT EXISTS (SELECT 1 FROM snap_orders so WHERE so.order_id = e.oid)
    ),
    fills AS (
        SELECT f.o_id, f.ts, f.amount
        FROM book_fills f
        WHERE f.pair = p_pair AND f.ts > p_since AND f.ts < p_until
    ),
    -- the readings whose order rests when the cancel comes, and how well it fits the
    -- cancel: 2 for its side and price, 1 more for its remaining amount
    resting AS (
        SELECT n.oid, n.reading,
               2 * (o.side = n.type AND o.price = n.price)::int
                 + (o.amount - coalesce(sum(f.amount), 0) = n.amount)::int AS fit
        FROM named n
        JOIN orders o ON o.order_id = n.order_id AND o.since <= n.ts
        LEFT JOIN fills f ON f.o_id = n.order_id AND f.ts <= n.ts
        GROUP BY n.oid, n.reading, n.type, n.price, n.amount, o.side, o.price, o.amount
        HAVING o.amount - coalesce(sum(f.amount), 0) > 0
    ),
    verdicts AS MATERIALIZED (
        SELECT c.ts, c.oid, c.cancel_order_id,
               CASE WHEN count(r.reading) = 2 THEN 'ambiguous'
                    WHEN max(r.fit) >= 2 THEN min(r.reading)
                    ELSE 'unknown' END AS reading,
               max(r.fit) FILTER (WHERE r.reading = 'oid') AS oid_fit,
               max(r.fit) FILTER (WHERE r.reading = 'cancel_order_id') AS cancel_order_id_fit
        FROM cancels c LEFT JOIN resting r ON r.oid = c.oid
        GROUP BY c.ts, c.oid, c.cancel_order_id
    ),
    decided AS (
        SELECT v.ts, v.oid, v.cancel_order_id, v.reading, x.established,
               CASE WHEN v.reading = 'ambiguous' THEN
                        coalesce(x.established,
                                 CASE sign(v.oid_fit - v.cancel_order_id_fit)
                                     WHEN 1 THEN 'oid' WHEN -1 THEN 'cancel_order_id' END,
                                 'cancel_order_id')
                    WHEN v.reading <> 'unknown' THEN v.reading
               END AS named_by
        FROM verdicts v
        -- the evidence: a scalar, so that no join is needed to hand it to every cancel
        CROSS JOIN (SELECT (SELECT CASE sign(count(*) FILTER (WHERE e.reading = 'oid')
                                             - count(*) FILTER (WHERE e.reading = 'cancel_order_id'))
                                       WHEN 1 THEN 'oid' WHEN -1 THEN 'cancel_order_id' END
                            FROM verdicts e) AS established) x
    )
    SELECT d.ts, d.oid, d.cancel_order_id, d.reading,
           CASE d.named_by WHEN 'oid' THEN d.oid
                           WHEN 'cancel_order_id' THEN d.cancel_order_id END,
           d.established
    FROM decided d
    ORDER BY d.ts, d.oid;
END
$$;

CREATE FUNCTION book_at_many(p_pair text, p_instants timestamptz[])
RETURNS TABLE (at timestamptz, side text, order_id bigint, price numeric, amount numeric)
LANGUAGE plpgsql STABLE
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
BEGIN
    FOR v_at IN SELECT DISTINCT i FROM unnest(p_instants) i WHERE i IS NOT NULL ORDER BY i LOOP
        v_window := book_window_at(p_pair, v_at);
        CONTINUE WHEN v_window.snapshot_id IS NULL;  -- no ungrouped snapshot before: no rows
        IF v_window.snapshot_id IS DISTINCT FROM v_snapshot_id THEN
            -- a new window: its cancels read once, for all its instants
            v_snapshot_id := v_window.snapshot_id;
            SELECT coalesce(array_agg(c.ts), '{}'), coalesce(array_agg(c.removed), '{}')
            INTO v_removed_ts, v_removed
            FROM book_window_cancels(p_pair, v_window.snapshot_id, v_window.taken_at,
                                     v_window.since, v_window.until) c
            WHERE c.removed IS NOT NULL;
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

COMMENT ON FUNCTION book_at_many(text, timestamptz[]) IS
    'book_at at each distinct instant, in time order: (at, side, order_id, price, amount), each instant''s rows exactly book_at(pair, at)''s in its order; a snapshot window''s cancels are read once for all its instants';

CREATE OR REPLACE FUNCTION book_cancels(p_pair text, p_at timestamptz)
RETURNS TABLE (ts timestamptz, oid bigint, cancel_order_id bigint, reading text,
               removed bigint, established text)
LANGUAGE sql STABLE
AS $$
    SELECT c.ts, c.oid, c.cancel_order_id, c.reading, c.removed, c.established
    FROM book_window_at(p_pair, p_at) w
    CROSS JOIN LATERAL book_window_cancels(p_pair, w.snapshot_id, w.taken_at, w.since, w.until)
        WITH ORDINALITY c
    WHERE w.snapshot_id IS NOT NULL AND c.ts <= p_at
    ORDER BY c.ordinality
$$;

CREATE OR REPLACE FUNCTION book_at(p_pair text, p_at timestamptz)
RETURNS TABLE (side text, order_id bigint, price numeric, amount numeric)
LANGUAGE sql STABLE
AS $$
    SELECT b.side, b.order_id, b.price, b.amount
    FROM book_at_many(p_pair, ARRAY[p_at]) WITH ORDINALITY b
    ORDER BY b.ordinality
$$;

DO $$
BEGIN
    IF (SELECT count(*) FROM pg_roles
        WHERE rolname IN ('recorder_research', 'recorder_writer')) < 2 THEN
        RETURN;
    END IF;
    GRANT EXECUTE ON FUNCTION book_at_many(text, timestamptz[]),
                              book_window_at(text, timestamptz),
                              book_window_cancels(text, uuid, timestamptz, timestamptz, timestamptz)
        TO recorder_research, recorder_writer;
EXCEPTION WHEN insufficient_privilege THEN
    RAISE NOTICE 'cannot grant book_at_many to the recorder roles (%): skipping', SQLERRM;
END
$$;

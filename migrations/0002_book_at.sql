-- book_at(pair, at): the L3 book (one row per resting order) at any instant, rebuilt from
-- the latest ungrouped snapshot taken at or before `at` and the book events and fills
-- recorded after it.
--
-- How the pieces combine:
--   * resting orders are the snapshot's orders plus every new order after the snapshot
--     whose remaining amount was > 0 (a new order already in the snapshot is not added
--     twice: the snapshot answer can already include an event stamped after `taken_at`);
--   * every fill after the snapshot reduces its resting order (o_id);
--   * a cancel after the snapshot removes its order;
--   * orders whose amount reaches 0 are gone.
-- Returns no rows when no ungrouped snapshot precedes `at`.

CREATE FUNCTION book_at(p_pair text, p_at timestamptz)
RETURNS TABLE (side text, order_id bigint, price numeric, amount numeric)
LANGUAGE sql STABLE
AS $$
    WITH snap AS (
        SELECT s.snapshot_id, s.taken_at
        FROM book_snapshots s
        WHERE s.pair = p_pair AND NOT s.grouped AND s.taken_at <= p_at
        ORDER BY s.taken_at DESC
        LIMIT 1
    ),
    resting AS (
        SELECT o.side, o.order_id, o.price, o.amount, o.order_ts AS since
        FROM book_snapshot_orders o JOIN snap USING (snapshot_id)
        UNION ALL
        SELECT e.type, e.oid, e.price, e.amount, e.ts
        FROM book_events e CROSS JOIN snap
        WHERE e.pair = p_pair AND e.kind = 'new' AND e.amount > 0
          AND e.ts > snap.taken_at AND e.ts <= p_at
          AND NOT EXISTS (
              SELECT 1 FROM book_snapshot_orders so
              WHERE so.snapshot_id = snap.snapshot_id AND so.order_id = e.oid)
    ),
    filled AS (
        SELECT f.o_id, sum(f.amount) AS amount
        FROM book_fills f CROSS JOIN snap
        WHERE f.pair = p_pair AND f.ts > snap.taken_at AND f.ts <= p_at
        GROUP BY f.o_id
    ),
    cancelled AS (
        SELECT e.oid
        FROM book_events e CROSS JOIN snap
        WHERE e.pair = p_pair AND e.kind = 'cancel' AND e.ts > snap.taken_at AND e.ts <= p_at
    )
    SELECT r.side, r.order_id, r.price, r.amount - coalesce(f.amount, 0)
    FROM resting r
    LEFT JOIN filled f ON f.o_id = r.order_id
    WHERE r.amount - coalesce(f.amount, 0) > 0
      AND NOT EXISTS (SELECT 1 FROM cancelled c WHERE c.oid = r.order_id)
    -- price-time priority: best price first on each side, then the older order
    ORDER BY r.side,
             CASE WHEN r.side = 'sell' THEN r.price END ASC,
             CASE WHEN r.side = 'buy' THEN r.price END DESC,
             r.since, r.order_id
$$;

COMMENT ON FUNCTION book_at(text, timestamptz) IS
    'L3 book of a pair at an instant: latest ungrouped snapshot at or before it, plus events and fills after it';

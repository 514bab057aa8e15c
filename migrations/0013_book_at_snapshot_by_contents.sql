-- book_at picks its snapshot by the last event the snapshot contains, not by its request.
--
-- A snapshot holds the book as it was after its events_through (0010): the exchange's date of
-- the last book event it contains, which is later than its request (taken_at) when the
-- exchange applied events while answering. book_at(pair, t) for a t between the two took
-- that snapshot all the same, a book holding events from after t. It now takes the latest
-- snapshot whose events_through (taken_at where unknown) is at or before t; for a t inside a
-- window the one before serves, plus its events up to t. A window's cancels (book_cancels)
-- end where the next snapshot takes over by the same rule. The bodies are 0012's otherwise.
--
-- The index finds that snapshot without reading the pair's others.

CREATE INDEX book_snapshots_pair_contains_through
    ON book_snapshots (pair, (coalesce(events_through, taken_at)))
    WHERE NOT grouped;

CREATE OR REPLACE FUNCTION book_cancels(p_pair text, p_at timestamptz)
RETURNS TABLE (ts timestamptz, oid bigint, cancel_order_id bigint, reading text,
               removed bigint, established text)
LANGUAGE sql STABLE
AS $$
    WITH snap AS (
        SELECT s.snapshot_id, s.taken_at, s.since,
               -- the window ends where the next snapshot takes over
               coalesce((SELECT min(coalesce(n.events_through, n.taken_at))
                         FROM book_snapshots n
                         WHERE n.pair = p_pair AND NOT n.grouped
                           AND coalesce(n.events_through, n.taken_at) > s.since),
                        'infinity') AS until
        FROM (SELECT b.snapshot_id, b.taken_at, coalesce(b.events_through, b.taken_at) AS since
              FROM book_snapshots b
              WHERE b.pair = p_pair AND NOT b.grouped
                AND coalesce(b.events_through, b.taken_at) <= p_at
              ORDER BY coalesce(b.events_through, b.taken_at) DESC, b.taken_at DESC
              LIMIT 1) s
    ),
    -- the snapshot's orders, read once: on TimescaleDB its chunk only, its segment only
    snap_orders AS (
        SELECT o.order_id, o.side, o.price, o.amount, o.order_ts
        FROM book_snapshot_orders o
        -- values, not a join: TimescaleDB then excludes every other chunk as it starts
        WHERE o.snapshot_id = (SELECT snapshot_id FROM snap)
          AND o.taken_at = (SELECT taken_at FROM snap)
    ),
    cancels AS (
        SELECT e.ts, e.oid, e.cancel_order_id, e.type, e.price, e.amount
        FROM book_events e CROSS JOIN snap
        WHERE e.pair = p_pair AND e.kind = 'cancel'
          AND e.ts > snap.since AND e.ts < snap.until
    ),
    -- each cancel's two readings: the order each would remove
    named AS (
        SELECT c.ts, c.oid, n.reading, n.order_id, c.type, c.price, c.amount
        FROM cancels c
        CROSS JOIN LATERAL (VALUES ('oid', c.oid), ('cancel_order_id', c.cancel_order_id))
            AS n(reading, order_id)
        WHERE n.order_id IS NOT NULL
    ),
    -- the orders that rest in the window (the snapshot's, then those placed), since when
    orders AS (
        SELECT o.order_id, o.side, o.price, o.amount, '-infinity'::timestamptz AS since
        FROM snap_orders o
        UNION ALL
        SELECT e.oid, e.type, e.price, e.amount, e.ts
        FROM book_events e CROSS JOIN snap
        WHERE e.pair = p_pair AND e.kind = 'new' AND e.amount > 0
          AND e.ts > snap.since AND e.ts < snap.until
          AND NOT EXISTS (SELECT 1 FROM snap_orders so WHERE so.order_id = e.oid)
    ),
    fills AS (
        SELECT f.o_id, f.ts, f.amount
        FROM book_fills f CROSS JOIN snap
        WHERE f.pair = p_pair AND f.ts > snap.since AND f.ts < snap.until
    ),
    -- the readings whose order rests when the cancel comes, and how well it fits the
    -- cancel: 2 for its side and price, 1 more for its remaining amount
    resting AS (
        SELECT n.ts, n.oid, n.reading,
               2 * (o.side = n.type AND o.price = n.price)::int
                 + (o.amount - coalesce(sum(f.amount), 0) = n.amount)::int AS fit
        FROM named n
        JOIN orders o ON o.order_id = n.order_id AND o.since <= n.ts
        LEFT JOIN fills f ON f.o_id = n.order_id AND f.ts <= n.ts
        GROUP BY n.ts, n.oid, n.reading, n.type, n.price, n.amount, o.side, o.price, o.amount
        HAVING o.amount - coalesce(sum(f.amount), 0) > 0
    ),
    verdicts AS (
        SELECT c.ts, c.oid, c.cancel_order_id,
               CASE WHEN count(r.reading) = 2 THEN 'ambiguous'
                    WHEN max(r.fit) >= 2 THEN min(r.reading)
                    ELSE 'unknown' END AS reading,
               max(r.fit) FILTER (WHERE r.reading = 'oid') AS oid_fit,
               max(r.fit) FILTER (WHERE r.reading = 'cancel_order_id') AS cancel_order_id_fit
        FROM cancels c LEFT JOIN resting r ON r.ts = c.ts AND r.oid = c.oid
        GROUP BY c.ts, c.oid, c.cancel_order_id
    ),
    evidence AS (
        SELECT CASE sign(count(*) FILTER (WHERE v.reading = 'oid')
                         - count(*) FILTER (WHERE v.reading = 'cancel_order_id'))
                   WHEN 1 THEN 'oid' WHEN -1 THEN 'cancel_order_id' END AS established
        FROM verdicts v
    ),
    decided AS (
        SELECT v.ts, v.oid, v.cancel_order_id, v.reading, e.established,
               CASE WHEN v.reading = 'ambiguous' THEN
                        coalesce(e.established,
                                 CASE sign(v.oid_fit - v.cancel_order_id_fit)
                                     WHEN 1 THEN 'oid' WHEN -1 THEN 'cancel_order_id' END,
                                 'cancel_order_id')
                    WHEN v.reading <> 'unknown' THEN v.reading
               END AS named_by
        FROM verdicts v CROSS JOIN evidence e
    )
    SELECT d.ts, d.oid, d.cancel_order_id, d.reading,
           CASE d.named_by WHEN 'oid' THEN d.oid
                           WHEN 'cancel_order_id' THEN d.cancel_order_id END,
           d.established
    FROM decided d
    WHERE d.ts <= p_at
    ORDER BY d.ts, d.oid
$$;


CREATE OR REPLACE FUNCTION book_at(p_pair text, p_at timestamptz)
RETURNS TABLE (side text, order_id bigint, price numeric, amount numeric)
LANGUAGE sql STABLE
AS $$
    WITH snap AS (
        SELECT s.snapshot_id, s.taken_at, coalesce(s.events_through, s.taken_at) AS since
        FROM book_snapshots s
        WHERE s.pair = p_pair AND NOT s.grouped
          AND coalesce(s.events_through, s.taken_at) <= p_at
        ORDER BY coalesce(s.events_through, s.taken_at) DESC, s.taken_at DESC
        LIMIT 1
    ),
    -- the snapshot's orders, read once: on TimescaleDB its chunk only, its segment only
    snap_orders AS (
        SELECT o.order_id, o.side, o.price, o.amount, o.order_ts
        FROM book_snapshot_orders o
        -- values, not a join: TimescaleDB then excludes every other chunk as it starts
        WHERE o.snapshot_id = (SELECT snapshot_id FROM snap)
          AND o.taken_at = (SELECT taken_at FROM snap)
    ),
    resting AS (
        SELECT o.side, o.order_id, o.price, o.amount, o.order_ts AS since
        FROM snap_orders o
        UNION ALL
        SELECT e.type, e.oid, e.price, e.amount, e.ts
        FROM book_events e CROSS JOIN snap
        WHERE e.pair = p_pair AND e.kind = 'new' AND e.amount > 0
          AND e.ts > snap.since AND e.ts <= p_at
          AND NOT EXISTS (SELECT 1 FROM snap_orders so WHERE so.order_id = e.oid)
    ),
    filled AS (
        SELECT f.o_id, sum(f.amount) AS amount
        FROM book_fills f CROSS JOIN snap
        WHERE f.pair = p_pair AND f.ts > snap.since AND f.ts <= p_at
        GROUP BY f.o_id
    ),
    cancelled AS (
        SELECT c.removed FROM book_cancels(p_pair, p_at) c WHERE c.removed IS NOT NULL
    )
    SELECT r.side, r.order_id, r.price, r.amount - coalesce(f.amount, 0)
    FROM resting r
    LEFT JOIN filled f ON f.o_id = r.order_id
    WHERE r.amount - coalesce(f.amount, 0) > 0
      AND NOT EXISTS (SELECT 1 FROM cancelled c WHERE c.removed = r.order_id)
    -- price-time priority: best price first on each side, then the older order
    ORDER BY r.side,
             CASE WHEN r.side = 'sell' THEN r.price END ASC,
             CASE WHEN r.side = 'buy' THEN r.price END DESC,
             r.since, r.order_id
$$;


COMMENT ON FUNCTION book_at(text, timestamptz) IS
    'L3 book of a pair at an instant: the latest ungrouped snapshot holding no event after it (events_through, else taken_at, at or before it), plus the events and fills after those it contains; a cancel removes whichever of its two ids is resting (see book_cancels)';

-- book_snapshot_orders gets a time column and, on TimescaleDB, becomes a hypertable with a
-- columnstore policy like the other time-series tables (0003).
--
-- On a deep book it is the largest table by far (10,000 orders a snapshot, a snapshot a
-- minute: some 14 million rows a day per pair), and it was keyed by snapshot only, with no
-- time to partition it by. taken_at, copied from the order's snapshot (book_snapshots), is
-- that time: the recorder writes it with every order, and the rows already stored get it
-- here. A snapshot's orders all share its taken_at, so adding it to the key on TimescaleDB
-- (a hypertable's unique indexes must hold its time) keeps writes idempotent: a replayed
-- order carries the same snapshot, hence the same taken_at.
--
-- Orders whose snapshot header is missing (none should exist: the recorder writes the header
-- with its orders) are kept, dated 1970-01-01 so that they are easy to find, and counted in a
-- notice.
--
-- book_at and book_cancels now also match a snapshot's orders on taken_at, so that on
-- TimescaleDB only the chunk holding that snapshot is read (chunk exclusion); their results
-- are the same.

ALTER TABLE book_snapshot_orders ADD COLUMN taken_at timestamptz;

UPDATE book_snapshot_orders o SET taken_at = s.taken_at
FROM book_snapshots s WHERE s.snapshot_id = o.snapshot_id;

DO $$
DECLARE
    orphans bigint;
BEGIN
    UPDATE book_snapshot_orders SET taken_at = 'epoch' WHERE taken_at IS NULL;
    GET DIAGNOSTICS orphans = ROW_COUNT;
    IF orphans > 0 THEN
        RAISE NOTICE '% book_snapshot_orders rows have no snapshot in book_snapshots: their taken_at is 1970-01-01',
            orphans;
    END IF;
END
$$;

ALTER TABLE book_snapshot_orders ALTER COLUMN taken_at SET NOT NULL;

COMMENT ON COLUMN book_snapshot_orders.taken_at IS
    'The taken_at of the order''s snapshot (book_snapshots), copied: the table''s time column';

-- TimescaleDB: a hypertable of 6-hour chunks (a deep book makes a few GB of row store a day
-- per pair, and chunks should stay well below memory), segmented by snapshot so that one
-- snapshot's orders are one or a few compressed batches, read alone; in price order within
-- it (side, pos), where neighbouring prices and times compress best. A snapshot is never
-- written again once taken, so its chunk goes to the columnstore after a day, not a week.
-- No separate time index: the key (snapshot_id, side, pos, taken_at) serves book_at.
--
-- The other hypertables keep 0003's settings: segmentby pair with orderby ts (trades by
-- tid, book_events by oid, ...) came out best among those measured (docs/benchmarks.md,
-- "Storage"). TimescaleDB 2.14 and later keep compression settings per chunk, so chunks
-- compressed before a change of settings stay readable with theirs; nothing here needs
-- decompressing.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb') THEN
        RETURN;
    END IF;

    ALTER TABLE book_snapshot_orders DROP CONSTRAINT book_snapshot_orders_pkey,
                                     ADD PRIMARY KEY (snapshot_id, side, pos, taken_at);
    PERFORM create_hypertable('book_snapshot_orders', by_range('taken_at', INTERVAL '6 hours'),
                              create_default_indexes => false, migrate_data => true);
    ALTER TABLE book_snapshot_orders SET (timescaledb.enable_columnstore,
                                          timescaledb.segmentby = 'snapshot_id',
                                          timescaledb.orderby = 'side, pos');
    CALL add_columnstore_policy('book_snapshot_orders', after => INTERVAL '1 day');
END
$$;

-- 0010's book_cancels and book_at, the snapshot's orders matched on taken_at too.

CREATE OR REPLACE FUNCTION book_cancels(p_pair text, p_at timestamptz)
RETURNS TABLE (ts timestamptz, oid bigint, cancel_order_id bigint, reading text,
               removed bigint, established text)
LANGUAGE sql STABLE
AS $$
    WITH snap AS (
        SELECT s.snapshot_id, s.taken_at,
               coalesce(s.events_through, s.taken_at) AS since,
               coalesce((SELECT min(n.taken_at) FROM book_snapshots n
                         WHERE n.pair = p_pair AND NOT n.grouped AND n.taken_at > s.taken_at),
                        'infinity') AS until
        FROM book_snapshots s
        WHERE s.pair = p_pair AND NOT s.grouped AND s.taken_at <= p_at
        ORDER BY s.taken_at DESC
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
        WHERE s.pair = p_pair AND NOT s.grouped AND s.taken_at <= p_at
        ORDER BY s.taken_at DESC
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

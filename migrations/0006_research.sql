-- The research interface (issue 7): top of book and spread, VWAP, and coverage, each one
-- query away. Plain views and SQL functions over the tables of 0001, so they behave the
-- same on plain PostgreSQL and on TimescaleDB (where vwap_* read the continuous aggregates).
-- docs/research.md shows each with an example.

-- Top of book as each snapshot saw it. pos 0 is the best price of its side; the size is
-- everything resting at that price (one row per order in an ungrouped snapshot, one per
-- level in a grouped one). A side with no orders gives nulls.
CREATE VIEW top_of_book_snapshots AS
SELECT s.snapshot_id, s.pair, s.taken_at, s.received_at, s.grouped, s.reason,
       bid.price AS best_bid, bid.size AS bid_size,
       ask.price AS best_ask, ask.size AS ask_size,
       ask.price - bid.price AS spread,
       (ask.price + bid.price) / 2 AS mid
FROM book_snapshots s
LEFT JOIN LATERAL (
    SELECT b.price, (SELECT sum(o.amount) FROM book_snapshot_orders o
                     WHERE o.snapshot_id = s.snapshot_id AND o.side = 'buy'
                       AND o.price = b.price) AS size
    FROM book_snapshot_orders b
    WHERE b.snapshot_id = s.snapshot_id AND b.side = 'buy' AND b.pos = 0
) bid ON true
LEFT JOIN LATERAL (
    SELECT a.price, (SELECT sum(o.amount) FROM book_snapshot_orders o
                     WHERE o.snapshot_id = s.snapshot_id AND o.side = 'sell'
                       AND o.price = a.price) AS size
    FROM book_snapshot_orders a
    WHERE a.snapshot_id = s.snapshot_id AND a.side = 'sell' AND a.pos = 0
) ask ON true;

-- Top of book of the rebuilt book (book_at) at any instant: one row, nulls where a side
-- is empty or no ungrouped snapshot precedes `at`.
CREATE FUNCTION top_of_book_at(p_pair text, p_at timestamptz)
RETURNS TABLE (best_bid numeric, bid_size numeric, best_ask numeric, ask_size numeric,
               spread numeric, mid numeric)
LANGUAGE sql STABLE
AS $$
    WITH book AS (SELECT * FROM book_at(p_pair, p_at)),
    bid AS (SELECT max(price) AS price FROM book WHERE side = 'buy'),
    ask AS (SELECT min(price) AS price FROM book WHERE side = 'sell')
    SELECT bid.price,
           (SELECT sum(amount) FROM book WHERE side = 'buy' AND price = bid.price),
           ask.price,
           (SELECT sum(amount) FROM book WHERE side = 'sell' AND price = ask.price),
           ask.price - bid.price,
           (ask.price + bid.price) / 2
    FROM bid CROSS JOIN ask
$$;

-- Spread over time from the rebuilt book: top_of_book_at every `p_step` in [from, to].
-- Each instant rebuilds the book, so keep the number of steps in the thousands.
CREATE FUNCTION top_of_book_series(p_pair text, p_from timestamptz, p_to timestamptz,
                                   p_step interval)
RETURNS TABLE (at timestamptz, best_bid numeric, bid_size numeric, best_ask numeric,
               ask_size numeric, spread numeric, mid numeric)
LANGUAGE sql STABLE
AS $$
    SELECT g.at, t.*
    FROM generate_series(p_from, p_to, p_step) AS g(at)
    CROSS JOIN LATERAL top_of_book_at(p_pair, g.at) t
$$;

-- VWAP from the trade tape: per bucket (from the OHLCV views, so continuous aggregates on
-- TimescaleDB) and over any interval [from, to). numeric division keeps at least 16
-- significant digits: the one place here where a value is rounded.
CREATE VIEW vwap_1m AS
SELECT pair, bucket, quote_volume / nullif(volume, 0) AS vwap, volume, quote_volume, trades
FROM ohlcv_1m;
CREATE VIEW vwap_1h AS
SELECT pair, bucket, quote_volume / nullif(volume, 0) AS vwap, volume, quote_volume, trades
FROM ohlcv_1h;
CREATE VIEW vwap_1d AS
SELECT pair, bucket, quote_volume / nullif(volume, 0) AS vwap, volume, quote_volume, trades
FROM ohlcv_1d;

CREATE FUNCTION vwap(p_pair text, p_from timestamptz, p_to timestamptz)
RETURNS numeric
LANGUAGE sql STABLE
AS $$
    SELECT sum(price * amount) / nullif(sum(amount), 0)
    FROM trades WHERE pair = p_pair AND ts >= p_from AND ts < p_to
$$;

-- Stream sessions as intervals. The stream is one socket for all pairs, so a session covers
-- every followed pair. A session the recorder closed has its own end; an unclosed one is
--   'open'      the newest session: assumed live, up to now();
--   'unclosed'  a later session exists, so its recorder died (SIGKILL, crash, power): its
--               end is estimated as the last book event received in it (or its start).
CREATE VIEW stream_coverage AS
SELECT s.session_id, s.connected_at,
       CASE WHEN s.disconnected_at IS NOT NULL THEN s.disconnected_at
            WHEN nxt.connected_at IS NULL THEN now()
            ELSE least(nxt.connected_at,
                       greatest(s.connected_at,
                                (SELECT max(e.received_at) FROM book_events e
                                 WHERE e.session_id = s.session_id)))
       END AS ended_at,
       CASE WHEN s.disconnected_at IS NOT NULL THEN 'closed'
            WHEN nxt.connected_at IS NULL THEN 'open'
            ELSE 'unclosed' END AS status,
       CASE WHEN s.disconnected_at IS NULL AND nxt.connected_at IS NOT NULL
            THEN 'recorder died (session never closed)'
            ELSE s.reason END AS reason
FROM stream_sessions s
LEFT JOIN LATERAL (
    SELECT n.connected_at FROM stream_sessions n
    WHERE n.connected_at > s.connected_at ORDER BY n.connected_at LIMIT 1
) nxt ON true;

-- When the stream was down between sessions: no book events or fills were seen, so book_at
-- is not valid from a gap's start until the first snapshot after it. `cause` is why the
-- session before the gap ended. Overlapping sessions (two recorders) leave no gap.
CREATE VIEW stream_gaps AS
WITH ordered AS (
    SELECT c.*, max(c.ended_at) OVER (ORDER BY c.connected_at, c.session_id
                                      ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)
                AS covered_until,
           lag(c.reason) OVER (ORDER BY c.connected_at, c.session_id) AS previous_reason
    FROM stream_coverage c
)
SELECT covered_until AS gap_start, connected_at AS gap_end,
       connected_at - covered_until AS duration, previous_reason AS cause,
       session_id AS next_session_id
FROM ordered
WHERE covered_until < connected_at;

-- Where book_at can be trusted: from the first ungrouped snapshot taken inside a stream
-- session to that session's end (the events after a snapshot only complete it while the
-- stream is live).
CREATE VIEW book_coverage AS
SELECT b.pair, c.session_id, min(b.taken_at) AS valid_from, c.ended_at AS valid_to,
       count(*) AS snapshots
FROM stream_coverage c
JOIN book_snapshots b ON NOT b.grouped AND b.taken_at >= c.connected_at
                     AND b.taken_at < c.ended_at
GROUP BY b.pair, c.session_id, c.ended_at;

-- Proven holes in the trade tape: trades seen as fills on the socket but missing from the
-- tape (GET /exchanges/), older than the newest trade of the tape for that pair (so a
-- fill the poller has not fetched yet is no hole). Trade ids are global across pairs, so a
-- jump in one pair's tids is no hole; a hole while the stream was down cannot be proven.
CREATE VIEW trade_tape_holes AS
SELECT f.pair, f.tid, f.ts, f.type, f.price, f.amount
FROM book_fills f
WHERE NOT EXISTS (SELECT 1 FROM trades t WHERE t.pair = f.pair AND t.tid = f.tid)
  AND f.ts < (SELECT max(t.ts) FROM trades t WHERE t.pair = f.pair);

-- Stretches of at least `p_min_gap` between consecutive trades of a pair, each with how
-- much of it the stream was live and how many fills the socket saw in it: with the stream
-- live and no fills the market was quiet; fills there are a hole (see trade_tape_holes);
-- with the stream down the tape alone cannot tell a quiet market from a hole.
CREATE FUNCTION trade_quiet_stretches(p_min_gap interval)
RETURNS TABLE (pair text, gap_start timestamptz, gap_end timestamptz, duration interval,
               stream_live interval, fills bigint)
LANGUAGE sql STABLE
AS $$
    WITH stretches AS (
        SELECT t.pair, t.ts AS gap_start,
               lead(t.ts) OVER (PARTITION BY t.pair ORDER BY t.ts, t.tid) AS gap_end
        FROM trades t
    )
    SELECT s.pair, s.gap_start, s.gap_end, s.gap_end - s.gap_start,
           coalesce((SELECT sum(least(c.ended_at, s.gap_end) - greatest(c.connected_at,
                                                                        s.gap_start))
                     FROM stream_coverage c
                     WHERE c.connected_at < s.gap_end AND c.ended_at > s.gap_start),
                    INTERVAL '0'),
           (SELECT count(*) FROM book_fills f
            WHERE f.pair = s.pair AND f.ts > s.gap_start AND f.ts < s.gap_end)
    FROM stretches s
    WHERE s.gap_end - s.gap_start >= p_min_gap
    ORDER BY s.pair, s.gap_start
$$;

-- Holes in the exchange's candles: buckets missing between two recorded candles of a pair
-- and resolution. The exchange makes no candle for a bucket without trades, so a hole is
-- real only where the tape has trades in it: `trades` counts them.
CREATE VIEW candle_gaps AS
WITH widths (resolution, width) AS (
    VALUES ('1', INTERVAL '1 minute'), ('5', INTERVAL '5 minutes'),
           ('15', INTERVAL '15 minutes'), ('30', INTERVAL '30 minutes'),
           ('60', INTERVAL '1 hour'), ('240', INTERVAL '4 hours'), ('D', INTERVAL '1 day')
),
ordered AS (
    SELECT c.pair, c.resolution, w.width, c.bucket,
           lead(c.bucket) OVER (PARTITION BY c.pair, c.resolution ORDER BY c.bucket) AS next
    FROM candles c JOIN widths w USING (resolution)
)
SELECT o.pair, o.resolution, o.bucket + o.width AS gap_start, o.next AS gap_end,
       (extract(epoch FROM o.next - o.bucket) / extract(epoch FROM o.width))::bigint - 1
           AS missing_buckets,
       (SELECT count(*) FROM trades t
        WHERE t.pair = o.pair AND t.ts >= o.bucket + o.width AND t.ts < o.next) AS trades
FROM ordered o
WHERE o.next > o.bucket + o.width;

-- One row per pair: what was recorded, from when to when.
CREATE VIEW coverage AS
SELECT p.name AS pair,
       (SELECT min(ts) FROM trades t WHERE t.pair = p.name) AS first_trade,
       (SELECT max(ts) FROM trades t WHERE t.pair = p.name) AS last_trade,
       (SELECT count(*) FROM trades t WHERE t.pair = p.name) AS trades,
       (SELECT count(*) FROM book_events e WHERE e.pair = p.name) AS book_events,
       (SELECT count(*) FROM book_fills f WHERE f.pair = p.name) AS book_fills,
       (SELECT count(*) FROM book_snapshots s WHERE s.pair = p.name) AS snapshots,
       (SELECT min(taken_at) FROM book_snapshots s WHERE s.pair = p.name) AS first_snapshot,
       (SELECT max(taken_at) FROM book_snapshots s WHERE s.pair = p.name) AS last_snapshot,
       (SELECT count(*) FROM candles c WHERE c.pair = p.name) AS candles,
       (SELECT count(*) FROM trade_tape_holes h WHERE h.pair = p.name) AS tape_holes,
       (SELECT count(*) FROM candle_gaps g WHERE g.pair = p.name AND g.trades > 0)
           AS candle_holes
FROM pairs p;

-- Researchers read all of it. The default privileges of 0005 already cover views made by
-- the migrating role, and functions are executable by PUBLIC; explicit grants keep that
-- true where an administrator revoked either.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'recorder_research') THEN
        RETURN;
    END IF;
    GRANT SELECT ON top_of_book_snapshots, vwap_1m, vwap_1h, vwap_1d, stream_coverage,
                    stream_gaps, book_coverage, trade_tape_holes, candle_gaps, coverage
        TO recorder_research;
    GRANT EXECUTE ON FUNCTION top_of_book_at(text, timestamptz),
                              top_of_book_series(text, timestamptz, timestamptz, interval),
                              vwap(text, timestamptz, timestamptz),
                              trade_quiet_stretches(interval)
        TO recorder_research;
EXCEPTION WHEN insufficient_privilege THEN
    RAISE NOTICE 'cannot grant the research views to recorder_research (%): skipping', SQLERRM;
END
$$;

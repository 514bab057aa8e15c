-- Coverage with overlapping stream sessions. A recorder keeps several socket.io connections
-- at once (`exchange.stream_connections`), each its own session, and stores each book event
-- once, under the session of whichever connection brought it first. The views of 0006
-- assumed one session at a time: a live session beside a newer sibling looked dead, a gap's
-- cause was the previous session's by start, and the book was valid per session. Here the
-- unit of liveness is the run (one recorder process, `run_id`) and the unit of coverage the
-- stretch (sessions merged where they overlap). A session from before 0008 has no run_id
-- and stands alone as its own run, so old rows read as they did. docs/research.md shows
-- each view.

-- Stream sessions as intervals. A session the recorder closed has its own end; an unclosed
-- one is
--   'open'      of the newest run (the run with the newest connect): assumed live, up to
--               now();
--   'unclosed'  of an older run, so its recorder died (SIGKILL, crash, power): its end is
--               estimated as the last book event stored under any session of its run
--               (an event is stored under whichever connection brought it first, so the
--               run's events, not the session's, say how long its connections lived),
--               bounded by the next run's first connect, never before its own start.
-- run_id and connection are as stored (NULL before 0008).
CREATE OR REPLACE VIEW stream_coverage AS
WITH runs AS (
    SELECT coalesce(run_id, session_id) AS run, min(connected_at) AS first_connect,
           max(connected_at) AS last_connect
    FROM stream_sessions
    GROUP BY 1
),
placed AS (
    SELECT r.run,
           r.last_connect = (SELECT max(connected_at) FROM stream_sessions) AS newest,
           (SELECT min(n.first_connect) FROM runs n WHERE n.first_connect > r.first_connect)
               AS next_connect
    FROM runs r
)
SELECT s.session_id, s.connected_at,
       CASE WHEN s.disconnected_at IS NOT NULL THEN s.disconnected_at
            WHEN p.newest THEN now()
            -- A scalar subquery in a CASE branch runs only for the rows that reach it: the
            -- scan of book_events is paid for unclosed sessions alone.
            ELSE greatest(s.connected_at,
                          least(p.next_connect,
                                coalesce((SELECT max(e.received_at) FROM book_events e
                                          WHERE e.session_id IN (
                                              SELECT m.session_id FROM stream_sessions m
                                              WHERE coalesce(m.run_id, m.session_id) = p.run)),
                                         s.connected_at)))
       END AS ended_at,
       CASE WHEN s.disconnected_at IS NOT NULL THEN 'closed'
            WHEN p.newest THEN 'open'
            ELSE 'unclosed' END AS status,
       CASE WHEN s.disconnected_at IS NULL AND NOT p.newest
            THEN 'recorder died (session never closed)'
            ELSE s.reason END AS reason,
       s.run_id, s.connection
FROM stream_sessions s
JOIN placed p ON p.run = coalesce(s.run_id, s.session_id);

-- Stretches of time the stream was live: overlapping or touching sessions merged, of any
-- run. `reason` is why the stretch ended: the reason of its session that ended last.
CREATE VIEW stream_stretches AS
WITH ordered AS (
    SELECT c.*, max(c.ended_at) OVER (ORDER BY c.connected_at, c.session_id
                                      ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)
                AS covered_until
    FROM stream_coverage c
),
numbered AS (
    -- A session starting after every earlier one ended opens a new stretch.
    SELECT o.*, sum(CASE WHEN o.covered_until >= o.connected_at THEN 0 ELSE 1 END)
                    OVER (ORDER BY o.connected_at, o.session_id) AS stretch
    FROM ordered o
)
SELECT min(connected_at) AS started_at, max(ended_at) AS ended_at,
       max(ended_at) - min(connected_at) AS duration,
       count(*) AS sessions, count(DISTINCT coalesce(run_id, session_id)) AS runs,
       (array_agg(session_id ORDER BY connected_at, session_id))[1] AS first_session_id,
       (array_agg(reason ORDER BY ended_at DESC, connected_at DESC, session_id DESC))[1]
           AS reason
FROM numbered
GROUP BY stretch;

-- When no connection of any recorder was live: no book events or fills were seen, so
-- book_at is not valid from a gap's start until the first snapshot after it. `cause` is why
-- the session that ended last before the gap ended.
CREATE OR REPLACE VIEW stream_gaps AS
WITH ordered AS (
    SELECT t.started_at, t.first_session_id,
           lag(t.ended_at) OVER (ORDER BY t.started_at) AS previous_end,
           lag(t.reason) OVER (ORDER BY t.started_at) AS previous_reason
    FROM stream_stretches t
)
SELECT previous_end AS gap_start, started_at AS gap_end, started_at - previous_end AS duration,
       previous_reason AS cause, first_session_id AS next_session_id
FROM ordered
WHERE previous_end IS NOT NULL;

-- Where book_at can be trusted: from the first ungrouped snapshot taken inside a stretch to
-- that stretch's end (the events after a snapshot only complete it while some connection is
-- live; a session that connects while another is live takes no snapshot of its own).
-- session_id is the stretch's first session.
CREATE OR REPLACE VIEW book_coverage AS
SELECT b.pair, t.first_session_id AS session_id, min(b.taken_at) AS valid_from,
       t.ended_at AS valid_to, count(*) AS snapshots
FROM stream_stretches t
JOIN book_snapshots b ON NOT b.grouped AND b.taken_at >= t.started_at
                     AND b.taken_at < t.ended_at
GROUP BY b.pair, t.first_session_id, t.ended_at;

-- As in 0006, with `stream_live` the time any connection was live (stretches, so
-- overlapping sessions count once).
CREATE OR REPLACE FUNCTION trade_quiet_stretches(p_min_gap interval)
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
           coalesce((SELECT sum(least(c.ended_at, s.gap_end) - greatest(c.started_at,
                                                                        s.gap_start))
                     FROM stream_stretches c
                     WHERE c.started_at < s.gap_end AND c.ended_at > s.gap_start),
                    INTERVAL '0'),
           (SELECT count(*) FROM book_fills f
            WHERE f.pair = s.pair AND f.ts > s.gap_start AND f.ts < s.gap_end)
    FROM stretches s
    WHERE s.gap_end - s.gap_start >= p_min_gap
    ORDER BY s.pair, s.gap_start
$$;

-- The replaced views and function keep the grants of 0006; the new view needs its own
-- (tolerated where the migrating role may not grant, as in 0006).
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'recorder_research') THEN
        RETURN;
    END IF;
    GRANT SELECT ON stream_stretches TO recorder_research;
EXCEPTION WHEN insufficient_privilege THEN
    RAISE NOTICE 'cannot grant stream_stretches to recorder_research (%): skipping', SQLERRM;
END
$$;

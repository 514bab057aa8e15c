-- Coverage with several recorders at once (docs/operations.md, "Running several
-- recorders"). 0009 took the newest run for the only live one: beside a second recorder
-- that started later, a live recorder's sessions read as 'unclosed' ("recorder died") and
-- its stretches ended where the other began. Each live recorder now keeps a row in
-- recorder_members (0015) whose expiry it renews, under the same uuid as its sessions'
-- run_id, so the database knows which runs are alive:
--   'open'      of a run whose member row has not expired, or of the newest run while no
--               other run's has (below): assumed live up to now();
--   'unclosed'  of any other run, so its recorder died (SIGKILL, crash, power) or hung past
--               its lease: its end is estimated, as in 0009, by the last book event stored
--               under any session of its run, now bounded by when its membership expired
--               (the database's clock: it was not recording after that) where its member
--               row is kept, and by the next run's first connect only for runs without one
--               (before 0015, or when the row is gone): two members run side by side, so
--               a later start says nothing about when an earlier one died.
-- The newest run stays open with an expired membership while no other member is live: a
-- recorder alone on its database keeps recording into its spool while the database is away
-- (what it spilled is committed under its sessions later), and runs from before 0015 have
-- no member row at all. Beside a live member, an expired one died or stopped recording.
CREATE OR REPLACE VIEW stream_coverage AS
WITH runs AS (
    SELECT coalesce(run_id, session_id) AS run, min(connected_at) AS first_connect,
           max(connected_at) AS last_connect
    FROM stream_sessions
    GROUP BY 1
),
placed AS (
    SELECT r.run,
           m.expires_at AS member_expires,
           coalesce(m.expires_at > now(), false)
               OR (r.last_connect = (SELECT max(connected_at) FROM stream_sessions)
                   AND NOT EXISTS (SELECT 1 FROM recorder_members o
                                   WHERE o.expires_at > now() AND o.run_id <> r.run))
               AS live,
           (SELECT min(n.first_connect) FROM runs n WHERE n.first_connect > r.first_connect)
               AS next_connect
    FROM runs r
    LEFT JOIN recorder_members m ON m.run_id = r.run
)
SELECT s.session_id, s.connected_at,
       CASE WHEN s.disconnected_at IS NOT NULL THEN s.disconnected_at
            WHEN p.live THEN now()
            -- A scalar subquery in a CASE branch runs only for the rows that reach it: the
            -- scan of book_events is paid for unclosed sessions alone.
            ELSE greatest(s.connected_at,
                          least(coalesce(p.member_expires, p.next_connect),
                                coalesce((SELECT max(e.received_at) FROM book_events e
                                          WHERE e.session_id IN (
                                              SELECT m.session_id FROM stream_sessions m
                                              WHERE coalesce(m.run_id, m.session_id) = p.run)),
                                         s.connected_at)))
       END AS ended_at,
       CASE WHEN s.disconnected_at IS NOT NULL THEN 'closed'
            WHEN p.live THEN 'open'
            ELSE 'unclosed' END AS status,
       CASE WHEN s.disconnected_at IS NULL AND NOT p.live
            THEN 'recorder died (session never closed)'
            ELSE s.reason END AS reason,
       s.run_id, s.connection
FROM stream_sessions s
JOIN placed p ON p.run = coalesce(s.run_id, s.session_id);

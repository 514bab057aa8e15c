-- book_at starts only from snapshots the stream followed: book_snapshots.in_sync.
--
-- A snapshot is a valid start for book_at only if the stream delivered every book event
-- after the last one the snapshot holds. That is not so for a snapshot whose request was
-- under way while no connection was subscribed: at every start the first snapshot goes out
-- before the stream connects, one may be asked for during an outage, and the stream may go
-- down before one is answered. What the exchange changed between such a snapshot and the
-- subscription taking effect never reaches the stream, so the book rebuilt from it lacks
-- those changes until the next snapshot. (A snapshot answered before the stream went down
-- holds the book of the stretch that ends there, like any other.) The
-- recorder has always refused to seed its own book from such a snapshot
-- (recorder/sources/book.py); it now says so in the row (in_sync false), and book_at, the
-- warming of window readings and book_coverage pass over it, as if it had not been taken.
-- It stays stored: it is still the exchange's book at its own instant.
--
-- Rows recorded before keep true: the rule book_at followed for them until now.
--
-- book_coverage now starts where book_at starts from a followed snapshot: the first window's
-- start (the last event that snapshot holds, or its request) rather than its request, which
-- came before the events the snapshot holds, and never before the stretch began.

ALTER TABLE book_snapshots ADD COLUMN in_sync boolean NOT NULL DEFAULT true;

COMMENT ON COLUMN book_snapshots.in_sync IS
    'The stream was subscribed from before this snapshot''s request until its answer, so it delivered every book event after events_through until the stream next went down: book_at may start from it (false: asked for while no connection was subscribed, or answered after the stream went down)';

CREATE OR REPLACE FUNCTION book_window_at(p_pair text, p_at timestamptz,
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
    WHERE s.pair = p_pair AND NOT s.grouped AND s.in_sync
      AND coalesce(s.events_through, s.taken_at) <= p_at
    ORDER BY coalesce(s.events_through, s.taken_at) DESC, s.taken_at DESC
    LIMIT 1;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    SELECT coalesce(min(coalesce(n.events_through, n.taken_at)), 'infinity')
    INTO until
    FROM book_snapshots n
    WHERE n.pair = p_pair AND NOT n.grouped AND n.in_sync
      AND coalesce(n.events_through, n.taken_at) > since;
END
$$;

CREATE OR REPLACE FUNCTION book_windows_warm(p_pair text, p_closed_after timestamptz,
                                             p_closed_before timestamptz, p_limit integer)
RETURNS integer
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_starts timestamptz[];
BEGIN
    SELECT coalesce(array_agg(due.since), '{}') INTO v_starts
    FROM (
        SELECT w.since
        FROM (
            SELECT coalesce(s.events_through, s.taken_at) AS since,
                   (SELECT min(coalesce(n.events_through, n.taken_at))
                    FROM book_snapshots n
                    WHERE n.pair = p_pair AND NOT n.grouped AND n.in_sync
                      AND coalesce(n.events_through, n.taken_at)
                          > coalesce(s.events_through, s.taken_at)) AS until,
                   s.snapshot_id
            FROM book_snapshots s
            WHERE s.pair = p_pair AND NOT s.grouped AND s.in_sync
              -- a window ends at the next one's start: these are the windows that can
              -- have closed in the range (one with no snapshot for a day is left to
              -- book_at_many to read when asked)
              AND coalesce(s.events_through, s.taken_at) >= p_closed_after - interval '1 day'
              AND coalesce(s.events_through, s.taken_at) < p_closed_before
        ) w
        WHERE w.until > p_closed_after AND w.until <= p_closed_before
          -- the snapshot that serves this start (book_window_at: the later of two with one
          -- start) is the one whose reading counts
          AND w.snapshot_id = (book_window_at(p_pair, w.since)).snapshot_id
          AND NOT EXISTS (SELECT 1 FROM book_window_readings r
                          WHERE r.snapshot_id = w.snapshot_id)
        ORDER BY w.until DESC
        LIMIT p_limit
    ) due;
    PERFORM count(*) FROM book_at_many(p_pair, v_starts);
    RETURN cardinality(v_starts);
END
$$;

-- Where book_at can be trusted: from the start of the first window of a snapshot the stream
-- followed, asked for inside a stretch, to that stretch's end (the events after a snapshot
-- only complete it while some connection is live; a session that connects while another
-- is live takes no snapshot of its own). session_id is the stretch's first session;
-- snapshots counts the followed snapshots asked for in the stretch.
CREATE OR REPLACE VIEW book_coverage AS
SELECT b.pair, t.first_session_id AS session_id,
       greatest(t.started_at, min(coalesce(b.events_through, b.taken_at))) AS valid_from,
       t.ended_at AS valid_to, count(*) AS snapshots
FROM stream_stretches t
JOIN book_snapshots b ON NOT b.grouped AND b.in_sync AND b.taken_at >= t.started_at
                     AND b.taken_at < t.ended_at
GROUP BY b.pair, t.first_session_id, t.started_at, t.ended_at;

-- The recorder stores each closed snapshot window's cancel reading (0016) soon after the
-- window closes, so that a researcher's first book_at_many over a day costs what later ones
-- do (docs/benchmarks.md, "book_at"): reading a window's cancels is most of the first call.
-- The recorder calls this once per snapshot interval for each pair it records
-- (recorder/storage/readings.py), for windows that closed between p_closed_after and
-- p_closed_before (long enough ago that the rows of their last moments are committed).
-- Rows that come later still (a spool committed after an outage) only make a reading stale;
-- book_at_many then reads the window again, as 0016 says.
--
-- Returns how many windows it read: at most p_limit, the most recently closed first, each
-- one without a stored reading. A window is read by asking book_at_many for the book at its
-- start, which stores the reading; the book itself is thrown away.
CREATE FUNCTION book_windows_warm(p_pair text, p_closed_after timestamptz,
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
                    WHERE n.pair = p_pair AND NOT n.grouped
                      AND coalesce(n.events_through, n.taken_at)
                          > coalesce(s.events_through, s.taken_at)) AS until,
                   s.snapshot_id
            FROM book_snapshots s
            WHERE s.pair = p_pair AND NOT s.grouped
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

COMMENT ON FUNCTION book_windows_warm(text, timestamptz, timestamptz, integer) IS
    'stores the cancel readings of up to p_limit closed windows of the pair (closed in (p_closed_after, p_closed_before], none stored yet), most recent first; how many it read (migrations/0018)';

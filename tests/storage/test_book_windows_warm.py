"""book_windows_warm (migrations/0018) stores the readings of closed windows, closed inside
the range asked, the most recently closed first, never the open one, and each one what
book_at_many would have read itself.

The flow is test_book_at_readings's: four snapshot windows of the simulator's engine, the
records taking the real path into the database.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg

from tests.storage import book_history as h
from tests.storage.test_book_at_readings import PAIR, dsn, flow_records, many, readings

__all__ = ["dsn"]  # the fixture, shared


def warm(conn: psycopg.Connection[Any], after: datetime, before: datetime, limit: int) -> int:
    (count,) = conn.execute(
        "SELECT book_windows_warm(%s, %s, %s, %s)", (PAIR, after, before, limit)
    ).fetchone() or (None,)
    assert isinstance(count, int)
    return count


def test_closed_windows_are_read_most_recent_first_and_as_book_at_many_reads_them(
    dsn: str, tmp_path: Path
) -> None:
    windows, books = flow_records("cancel_order_id")
    h.write(dsn, [rec for window in windows for rec in window], tmp_path / "spool")
    with psycopg.connect(dsn, autocommit=True) as conn:
        starts = [
            (snapshot_id, since)
            for snapshot_id, since in conn.execute(
                "SELECT snapshot_id, coalesce(events_through, taken_at) FROM book_snapshots "
                "WHERE pair = %s ORDER BY 2",
                (PAIR,),
            ).fetchall()
        ]
        assert len(starts) == 4
        ids = [snapshot_id for snapshot_id, _ in starts]
        # window k closes where window k + 1 starts; the last is open
        closes = [since for _, since in starts[1:]]
        tick = timedelta(microseconds=1)
        after = starts[0][1] - timedelta(days=1)

        assert warm(conn, after, closes[0] - tick, 10) == 0, "nothing closed yet"
        assert warm(conn, after, closes[1], 1) == 1
        assert set(readings(conn)) == {ids[1]}, "the most recently closed first"
        assert warm(conn, closes[0], closes[2], 10) == 1, "closed after closes[0] only"
        assert set(readings(conn)) == {ids[1], ids[2]}
        assert warm(conn, after, closes[2] + timedelta(days=1), 10) == 1
        assert set(readings(conn)) == set(ids[:3]), "every closed window, never the open one"
        assert warm(conn, after, closes[2] + timedelta(days=1), 10) == 0, "each once"

        warmed = readings(conn)
        instants = sorted(books)
        served = many(conn, instants)
        assert readings(conn) == warmed, "book_at_many used the readings as they were"
        conn.execute("TRUNCATE book_window_readings")
        assert many(conn, instants) == served
        assert readings(conn) == warmed, "the same readings book_at_many stores itself"
    for instant in instants:
        assert sorted(served[instant]) == books[instant], instant

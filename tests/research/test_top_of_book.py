"""Top of book on a real recording: the rebuilt book's top is the simulator's own at the
end, and at every snapshot the snapshot's top and the rebuilt book's top agree."""

from __future__ import annotations

import psycopg

from tests.research.conftest import PAIRS, Recording


def test_the_rebuilt_top_of_book_is_the_exchanges(recording: Recording) -> None:
    with psycopg.connect(recording.dsn) as conn:
        for pair in PAIRS:
            row = conn.execute(
                "SELECT best_bid, bid_size, best_ask, ask_size, spread, mid "
                "FROM top_of_book_at(%s, now())",
                (pair,),
            ).fetchone()
            assert row is not None
            assert row[:4] == recording.tops[pair], pair
            assert row[0] is not None
            assert row[2] is not None
            assert row[4] == row[2] - row[0]
            assert row[5] == (row[0] + row[2]) / 2


def test_each_snapshots_top_is_the_rebuilt_books_top_at_that_instant(
    recording: Recording,
) -> None:
    with psycopg.connect(recording.dsn) as conn:
        rows = conn.execute(
            "SELECT s.pair, s.taken_at, s.best_bid, s.bid_size, s.best_ask, s.ask_size, "
            "       s.spread, b.best_bid, b.bid_size, b.best_ask, b.ask_size, b.spread "
            "FROM top_of_book_snapshots s JOIN book_snapshots USING (snapshot_id) "
            # a snapshot is the book after the last event it contains (docs/research.md)
            "CROSS JOIN LATERAL top_of_book_at(s.pair, coalesce(events_through, s.taken_at)) b "
            # book_at passes over a snapshot the stream did not follow
            "WHERE NOT s.grouped AND in_sync"
        ).fetchall()
    assert len(rows) >= 2 * len(PAIRS)
    for row in rows:
        assert row[2:7] == row[7:12], row[:2]

"""What docs/research.md says the data means, checked on a real recording.

A trade's `type` is the resting (maker) order's side, in the tape as in the socket's fills;
the taker's side is the incoming order's, so always the opposite.
"""

from __future__ import annotations

import psycopg

from tests.research.conftest import Recording


def test_type_is_the_makers_side_and_the_taker_is_the_incoming_order(
    recording: Recording,
) -> None:
    with psycopg.connect(recording.dsn) as conn:
        rows = conn.execute(
            "SELECT f.type, e.type, t.type, t.price = f.price AND t.amount = f.amount "
            "FROM book_fills f "
            "JOIN book_events e ON e.pair = f.pair AND e.oid = f.oid AND e.kind = 'new' "
            "JOIN trades t ON t.pair = f.pair AND t.tid = f.tid"
        ).fetchall()
    assert rows
    for maker_side, taker_side, tape_type, same in rows:
        assert maker_side != taker_side
        assert tape_type == maker_side
        assert same

"""book_at and book_coverage pass over a snapshot the stream did not follow (in_sync false).

Hand-made rows of the case the recorder meets at every start, on plain PostgreSQL and on
TimescaleDB: the stream connects at 0 s; the start snapshot, asked for at 1 s while the
subscription was not yet live, holds sell order 7; the exchange cancels 7 at 1.5 s, before
the subscription takes effect, so no event of it is stored; at 3 s the stream delivers a new
order 9; the resync snapshot, asked for at 4 s, holds 1 and 9 (events_through 3 s); a new
order 10 follows at 5 s. The truth at every instant from 3 s on is what the events after the
followed snapshot say; before it nothing stored can say what the book was.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg
import pytest

from recorder.storage.migrate import migrate

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
PAIR = "BTC_USD"
SESSION = uuid.UUID(int=1)
START, RESYNC = uuid.UUID(int=10), uuid.UUID(int=11)
BUY_1 = ("buy", 1, Decimal("100"), Decimal("1"))
SELL_7 = ("sell", 7, Decimal("101"), Decimal("1"))
SELL_9 = ("sell", 9, Decimal("102"), Decimal("0.5"))
BUY_10 = ("buy", 10, Decimal("99.5"), Decimal("2"))


def s(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def snapshot(
    conn: psycopg.Connection[Any],
    snapshot_id: uuid.UUID,
    taken_s: float,
    through_s: float | None,
    in_sync: bool,
    orders: list[tuple[str, int, Decimal, Decimal]],
) -> None:
    through = None if through_s is None else s(through_s)
    conn.execute(
        "INSERT INTO book_snapshots (snapshot_id, pair, taken_at, received_at, grouped, reason,"
        " events_through, in_sync) VALUES (%s, %s, %s, %s, false, 'start', %s, %s)",
        (snapshot_id, PAIR, s(taken_s), s(taken_s + 0.1), through, in_sync),
    )
    for pos, (side, order_id, price, amount) in enumerate(orders):
        conn.execute(
            "INSERT INTO book_snapshot_orders (snapshot_id, side, pos, order_id, price, amount,"
            " order_ts, taken_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
            (snapshot_id, side, pos, order_id, price, amount, T0, s(taken_s)),
        )


def new_order(conn: psycopg.Connection[Any], at_s: float, side: str, oid: int,
              price: Decimal, amount: Decimal) -> None:  # fmt: skip
    conn.execute(
        "INSERT INTO book_events (pair, oid, kind, ts, type, price, amount, cancel_order_id,"
        " received_at, session_id) VALUES (%s, %s, 'new', %s, %s, %s, %s, NULL, %s, %s)",
        (PAIR, oid, s(at_s), side, price, amount, s(at_s), SESSION),
    )


@pytest.fixture(scope="module")
def dsn(db_dsn: str) -> str:
    migrate(db_dsn)
    with psycopg.connect(db_dsn) as conn:
        conn.execute(
            "INSERT INTO stream_sessions (session_id, connected_at, disconnected_at, reason)"
            " VALUES (%s, %s, %s, 'transport close')",
            (SESSION, s(0), s(60)),
        )
        snapshot(conn, START, 1, None, False, [BUY_1, SELL_7])
        new_order(conn, 3, *SELL_9)
        snapshot(conn, RESYNC, 4, 3, True, [BUY_1, SELL_9])
        new_order(conn, 5, *BUY_10)
    return db_dsn


def book_at(dsn: str, at_s: float) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(
            "SELECT side, order_id, price, amount FROM book_at(%s, %s) ORDER BY order_id",
            (PAIR, s(at_s)),
        ).fetchall()


def test_book_at_starts_only_from_a_followed_snapshot(dsn: str) -> None:
    # From the resync snapshot's cut on: its book and the events after it.
    assert book_at(dsn, 3) == [BUY_1, SELL_9]
    assert book_at(dsn, 4.5) == [BUY_1, SELL_9]
    assert book_at(dsn, 5) == [BUY_1, SELL_9, BUY_10]
    # Before it, no followed snapshot: no book, rather than the start snapshot's, which still
    # holds order 7, cancelled unseen at 1.5 s.
    assert book_at(dsn, 2) == []


def test_book_coverage_starts_at_the_followed_snapshots_cut(dsn: str) -> None:
    with psycopg.connect(dsn) as conn:
        coverage = conn.execute(
            "SELECT pair, session_id, valid_from, valid_to, snapshots FROM book_coverage"
        ).fetchall()
    assert coverage == [(PAIR, SESSION, s(3), s(60), 1)]


def test_the_unfollowed_snapshot_stays_stored(dsn: str) -> None:
    with psycopg.connect(dsn) as conn:
        orders = conn.execute(
            "SELECT o.order_id FROM book_snapshots s JOIN book_snapshot_orders o"
            " USING (snapshot_id) WHERE NOT s.in_sync ORDER BY o.order_id"
        ).fetchall()
    assert orders == [(1,), (7,)]

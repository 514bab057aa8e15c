"""book_at reads a cancel by whichever of its two ids names a resting order.

The same market is stored twice, once as an exchange that names the cancelled order by
`oid` would send it and once as one that names it by `cancel_order_id` (the other id being
the cancel's own): book_at must rebuild the same books from both, including a cancel whose
two ids both name a resting order, which the evidence of the other cancels decides.
book_cancels says how each cancel was read.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest

from recorder import records as r
from recorder.book import READINGS, Reading
from recorder.storage.migrate import migrate
from tests.storage.book_history import at, cancel, new, snapshot, write

D = Decimal


def pair_of(reading: Reading) -> str:
    return "OID_USD" if reading == "oid" else "CID_USD"


def cancelling(
    seconds: float, target: int, own_id: int, order: tuple[str, str, str], reading: Reading
) -> list[r.Record]:
    """The cancel of order `target` (side, price, remaining amount) as an exchange using
    `reading` sends it: `own_id` is the cancel's own id, in the other field."""
    oid, cancel_order_id = (target, own_id) if reading == "oid" else (own_id, target)
    side, price, amount = order
    return cancel(seconds, oid, side, price, amount, cancel_order_id=cancel_order_id,
                  pair=pair_of(reading))  # fmt: skip


def market(reading: Reading) -> list[r.Record]:
    pair = pair_of(reading)
    return [
        *snapshot(
            10,
            [
                ("sell", 1, "100", "1"),
                ("sell", 2, "101", "2"),
                ("sell", 9, "101", "0.5"),
                ("buy", 3, "99", "1.5"),
                ("buy", 4, "98", "1"),
                ("buy", 5, "98", "1"),  # just like order 4
                ("buy", 10, "97", "2"),
            ],
            pair=pair,
        ),
        # t=11: order 3 is cancelled; the cancel's own id, 700, is no order
        *cancelling(11, 3, 700, ("buy", "99", "1.5"), reading),
        *new(12, 6, "sell", "102", "3", pair=pair),
        # t=13: order 4 is cancelled, and the cancel's own id is 5, also resting, alike
        *cancelling(13, 4, 5, ("buy", "98", "1"), reading),
        # t=14: a cancel of which we know neither order (one we never saw)
        *cancelling(14, 800, 801, ("sell", "103", "1"), reading),
        # t=15: a buy takes all of orders 1 and 9
        *new(15, 7, "buy", "101", "0", [(500, 1, "100", "1"), (501, 9, "101", "0.5")], pair=pair),
        # t=16: order 2 is cancelled; its own id names order 9, filled away at t=15
        *cancelling(16, 2, 9, ("sell", "101", "2"), reading),
        # t=17: order 6 is cancelled; its own id names order 8, just like it but placed at t=18
        *cancelling(17, 6, 8, ("sell", "102", "3"), reading),
        *new(18, 8, "sell", "102", "3", pair=pair),
        # t=19: order 850 is cancelled, one this snapshot already lacked (its cancel was on
        # the way); the cancel's own id names order 10, resting at another price
        *cancelling(19, 850, 10, ("buy", "98", "1"), reading),
    ]


@pytest.fixture(scope="module")
def dsn(db_dsn: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    migrate(db_dsn)
    history = [record for reading in READINGS for record in market(reading)]
    write(db_dsn, [*history, *window_history()], tmp_path_factory.mktemp("spool"))
    return db_dsn


def book(dsn: str, pair: str, seconds: float) -> list[tuple[str, int, Decimal, Decimal]]:
    with psycopg.connect(dsn) as conn:
        return [
            (side, oid, price, amount)
            for side, oid, price, amount in conn.execute(
                "SELECT side, order_id, price, amount FROM book_at(%s, %s)", (pair, at(seconds))
            )
        ]


def cancels(dsn: str, pair: str, seconds: float) -> list[tuple[datetime, str, int | None, str]]:
    with psycopg.connect(dsn) as conn:
        return [
            (ts, reading, removed, established)
            for ts, reading, removed, established in conn.execute(
                "SELECT ts, reading, removed, established FROM book_cancels(%s, %s)",
                (pair, at(seconds)),
            )
        ]


@pytest.mark.parametrize("reading", READINGS)
def test_either_reading_rebuilds_the_same_books(dsn: str, reading: Reading) -> None:
    pair = pair_of(reading)
    assert book(dsn, pair, 10) == [
        ("buy", 3, D("99"), D("1.5")),
        ("buy", 4, D("98"), D("1")),
        ("buy", 5, D("98"), D("1")),
        ("buy", 10, D("97"), D("2")),
        ("sell", 1, D("100"), D("1")),
        ("sell", 2, D("101"), D("2")),
        ("sell", 9, D("101"), D("0.5")),
    ]
    # order 3 cancelled; of 4 and 5, both named by the cancel at t=13, order 4 goes
    assert book(dsn, pair, 13) == [
        ("buy", 5, D("98"), D("1")),
        ("buy", 10, D("97"), D("2")),
        ("sell", 1, D("100"), D("1")),
        ("sell", 2, D("101"), D("2")),
        ("sell", 9, D("101"), D("0.5")),
        ("sell", 6, D("102"), D("3")),
    ]
    # the unknown cancel removed nothing; 1 and 9 filled away, 2 and 6 cancelled; 8, placed
    # after the cancel that named it, and 10, at another price than the cancel naming it,
    # stay
    assert book(dsn, pair, 19) == [
        ("buy", 5, D("98"), D("1")),
        ("buy", 10, D("97"), D("2")),
        ("sell", 8, D("102"), D("3")),
    ]


@pytest.mark.parametrize("reading", READINGS)
def test_book_cancels_tells_how_each_cancel_was_read(dsn: str, reading: Reading) -> None:
    assert cancels(dsn, pair_of(reading), 19) == [
        (at(11), reading, 3, reading),
        (at(13), "ambiguous", 4, reading),
        (at(14), "unknown", None, reading),
        (at(16), reading, 2, reading),
        (at(17), reading, 6, reading),
        (at(19), "unknown", None, reading),
    ]
    # only the cancels up to the instant
    assert [c[0] for c in cancels(dsn, pair_of(reading), 13.5)] == [at(11), at(13)]


# --- the evidence is that of the snapshot's window ---------------------------------------------

WINDOWS = "WIN_USD"
"""An exchange naming the cancelled order by `oid`, over two snapshot windows."""


def window_history() -> list[r.Record]:
    return [
        *snapshot(
            30, [("buy", 1, "50", "1"), ("buy", 2, "50", "1"), ("buy", 3, "49", "1")], pair=WINDOWS
        ),
        # t=31: order 1 is cancelled, the cancel's own id (2) names an order just like it
        *cancel(31, 1, "buy", "50", "1", cancel_order_id=2, pair=WINDOWS),
        # t=32: order 3 is cancelled: evidence for oid
        *cancel(32, 3, "buy", "49", "1", cancel_order_id=900, pair=WINDOWS),
        *snapshot(
            40,
            [
                ("buy", 2, "50", "1"),
                ("buy", 4, "50", "1"),
                ("buy", 5, "50", "1"),
                ("buy", 6, "50", "2"),
            ],
            pair=WINDOWS,
        ),
        # t=41: order 4 is cancelled; its own id names order 5, just like it
        *cancel(41, 4, "buy", "50", "1", cancel_order_id=5, pair=WINDOWS),
        # t=42: order 6 is cancelled; its own id names order 2, at its side and price too
        *cancel(42, 6, "buy", "50", "2", cancel_order_id=2, pair=WINDOWS),
    ]


def test_an_ambiguous_cancel_is_settled_by_the_evidence_that_came_after_it(dsn: str) -> None:
    assert book(dsn, WINDOWS, 31.5) == [("buy", 2, D("50"), D("1")), ("buy", 3, D("49"), D("1"))]
    assert cancels(dsn, WINDOWS, 31.5) == [(at(31), "ambiguous", 1, "oid")]


def test_without_evidence_in_the_window_the_cancel_itself_then_cancel_order_id_decides(
    dsn: str,
) -> None:
    # The first window's evidence does not reach into the second: nothing tells 4 from 5,
    # so cancel_order_id (the docs' sample's reading) decides, wrongly for this exchange.
    # Order 6 is told from order 2 by its remaining amount, which the cancel states.
    assert cancels(dsn, WINDOWS, 42) == [
        (at(41), "ambiguous", 5, None),
        (at(42), "ambiguous", 6, None),
    ]
    assert book(dsn, WINDOWS, 42) == [("buy", 2, D("50"), D("1")), ("buy", 4, D("50"), D("1"))]


def test_a_pair_without_cancels_reads_as_before(dsn: str, tmp_path: Path) -> None:
    pair = "QUIET_USD"
    write(dsn, [*snapshot(10, [("buy", 1, "5", "1")], pair=pair),
                *new(11, 2, "sell", "6", "1", pair=pair)], tmp_path / "spool")  # fmt: skip
    assert book(dsn, pair, 12) == [("buy", 1, D("5"), D("1")), ("sell", 2, D("6"), D("1"))]
    assert cancels(dsn, pair, 12) == []

"""book_at(pair, at): the book rebuilt from the latest ungrouped snapshot and what followed."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import psycopg
import pytest

from recorder import records as r
from recorder.storage.migrate import migrate
from tests.storage.book_history import at, cancel, new, snapshot, write

PAIR = "BTC_USD"
D = Decimal


@pytest.fixture(scope="module")
def dsn(db_dsn: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    migrate(db_dsn)
    history: list[r.Record] = [
        # t=10: the first snapshot
        *snapshot(
            10,
            [
                ("sell", 1, "100.0", "1.0"),
                ("sell", 2, "101.0", "2.0"),
                ("buy", 3, "99.0", "1.5"),
                ("buy", 4, "98.5", "0.25"),
            ],
        ),
        # t=11: a buy at 101 takes all of order 1 and 0.5 of order 2
        *new(11, 10, "buy", "101.0", "0", [(500, 1, "100.0", "1.0"), (501, 2, "101.0", "0.5")]),
        # t=12: a sell rests at 102
        *new(12, 11, "sell", "102.0", "3.0"),
        # t=13: order 3 is cancelled
        *cancel(13, 3, "buy", "99.0", "1.5"),
        # t=14: a sell of 0.35 at 98 takes all of order 4 and rests 0.1 at 98
        *new(14, 12, "sell", "98.0", "0.1", [(502, 4, "98.5", "0.25")]),
        # t=20: a grouped snapshot, which book_at must not use
        *snapshot(20, [("sell", 0, "50.0", "9.0")], grouped=True),
    ]
    write(db_dsn, history, tmp_path_factory.mktemp("spool"))
    return db_dsn


def book(dsn: str, seconds: float, pair: str = PAIR) -> list[tuple[str, int, Decimal, Decimal]]:
    with psycopg.connect(dsn) as conn:
        return [
            (side, oid, price, amount)
            for side, oid, price, amount in conn.execute(
                "SELECT side, order_id, price, amount FROM book_at(%s, %s)", (pair, at(seconds))
            )
        ]


def test_before_any_snapshot_the_book_is_unknown(dsn: str) -> None:
    assert book(dsn, 9) == []


def test_at_the_snapshot_the_book_is_the_snapshot(dsn: str) -> None:
    assert book(dsn, 10) == [
        ("buy", 3, D("99.0"), D("1.5")),
        ("buy", 4, D("98.5"), D("0.25")),
        ("sell", 1, D("100.0"), D("1.0")),
        ("sell", 2, D("101.0"), D("2.0")),
    ]


def test_fills_reduce_and_remove_resting_orders(dsn: str) -> None:
    assert book(dsn, 11) == [
        ("buy", 3, D("99.0"), D("1.5")),
        ("buy", 4, D("98.5"), D("0.25")),
        ("sell", 2, D("101.0"), D("1.5")),
    ]


def test_new_orders_rest_and_cancels_remove(dsn: str) -> None:
    assert book(dsn, 13) == [
        ("buy", 4, D("98.5"), D("0.25")),
        ("sell", 2, D("101.0"), D("1.5")),
        ("sell", 11, D("102.0"), D("3.0")),
    ]


def test_a_crossing_order_fills_then_rests_in_price_order(dsn: str) -> None:
    assert book(dsn, 14) == [
        ("sell", 12, D("98.0"), D("0.1")),
        ("sell", 2, D("101.0"), D("1.5")),
        ("sell", 11, D("102.0"), D("3.0")),
    ]


def test_grouped_snapshots_are_not_a_starting_point(dsn: str) -> None:
    assert book(dsn, 25) == book(dsn, 14)


def test_a_later_snapshot_takes_over_and_events_it_holds_are_not_counted_twice(
    dsn: str, tmp_path: Path
) -> None:
    later = [
        *snapshot(
            30,
            [
                ("sell", 12, "98.0", "0.1"),
                ("sell", 2, "101.0", "1.5"),
                ("sell", 20, "105.0", "1.0"),
            ],
        ),
        # stamped after the request was sent but already in the answer: not added twice
        *new(30.01, 20, "sell", "105.0", "1.0"),
        *new(31, 21, "buy", "97.0", "2.0"),
    ]
    write(dsn, later, tmp_path / "spool")
    assert book(dsn, 31) == [
        ("buy", 21, D("97.0"), D("2.0")),
        ("sell", 12, D("98.0"), D("0.1")),
        ("sell", 2, D("101.0"), D("1.5")),
        ("sell", 20, D("105.0"), D("1.0")),
    ]


def test_between_a_snapshots_request_and_its_last_event_the_snapshot_before_serves(
    dsn: str, tmp_path: Path
) -> None:
    """A snapshot asked for at 50 was answered holding the events up to 50.5 (events_through):
    it is the book after 50.5, so at 50.2 the book comes from the snapshot before."""
    pair = "ETH_USD"
    history = [
        *snapshot(40, [("sell", 1, "100.0", "1.0"), ("buy", 2, "99.0", "1.0")], pair=pair),
        *new(50.1, 3, "buy", "98.0", "0.5", pair=pair),
        *new(50.5, 4, "sell", "100.0", "0.2", fills=[(700, 2, "99.0", "0.8")], pair=pair),
        *snapshot(
            50,
            [("sell", 1, "100.0", "1.0"), ("buy", 2, "99.0", "0.2"), ("buy", 3, "98.0", "0.5")],
            pair=pair,
            events_through_s=50.5,
        ),
        *cancel(51, 3, "buy", "98.0", "0.5", pair=pair),
    ]
    write(dsn, history, tmp_path / "spool")
    before_the_fill = [
        ("buy", 2, D("99.0"), D("1.0")),
        ("buy", 3, D("98.0"), D("0.5")),
        ("sell", 1, D("100.0"), D("1.0")),
    ]
    assert book(dsn, 50, pair) == [before_the_fill[0], before_the_fill[2]]
    assert book(dsn, 50.2, pair) == book(dsn, 50.4999, pair) == before_the_fill
    after_the_fill = [("buy", 2, D("99.0"), D("0.2")), *before_the_fill[1:]]
    assert book(dsn, 50.5, pair) == book(dsn, 50.9, pair) == after_the_fill
    assert book(dsn, 51, pair) == [
        ("buy", 2, D("99.0"), D("0.2")),
        ("sell", 1, D("100.0"), D("1.0")),
    ]

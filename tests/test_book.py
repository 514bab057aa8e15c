"""The pure L3 book: snapshot + events, anomalies reported, comparison."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from recorder.book import Book, GroupedSnapshotError, RestingOrder
from recorder.records import BookEvent, BookFill, SnapshotOrder

NOW = datetime(2026, 1, 1, tzinfo=UTC)
D = Decimal


def level(side: str, order_id: int | None, price: str, amount: str, pos: int = 0) -> SnapshotOrder:
    return SnapshotOrder(uuid.uuid4(), side, pos, order_id, D(price), D(amount), NOW)  # type: ignore[arg-type]


def new(oid: int, side: str, price: str, amount: str) -> BookEvent:
    return BookEvent("BTC_USD", oid, "new", NOW, side, D(price), D(amount), None, NOW, uuid.uuid4())  # type: ignore[arg-type]


def cancel(oid: int) -> BookEvent:
    return BookEvent("BTC_USD", oid, "cancel", NOW, "buy", D(1), D(1), 99, NOW, uuid.uuid4())


def fill(tid: int, oid: int, o_id: int, amount: str, price: str = "100") -> BookFill:
    return BookFill("BTC_USD", tid, oid, o_id, "sell", D(price), D(amount), NOW, NOW)


def test_snapshot_loads_and_sorts_sides() -> None:
    book = Book.from_snapshot(
        [
            level("sell", 3, "101", "1"),
            level("sell", 2, "100", "1"),
            level("buy", 5, "99", "1"),
            level("buy", 4, "99", "2"),
            level("buy", 6, "99.5", "1"),
        ]
    )
    assert [o.order_id for o in book.side("sell")] == [2, 3]
    assert [o.order_id for o in book.side("buy")] == [6, 4, 5]
    assert len(book) == 5


def test_grouped_snapshot_is_refused() -> None:
    with pytest.raises(GroupedSnapshotError):
        Book.from_snapshot([level("sell", None, "101", "1")])


def test_new_order_fills_resting_orders_then_rests() -> None:
    book = Book.from_snapshot([level("sell", 1, "100", "1"), level("sell", 2, "101", "1")])
    anomalies = book.apply(new(3, "buy", "101", "0.5"), [fill(1, 3, 1, "1"), fill(2, 3, 2, "0.5")])
    assert anomalies == []
    assert 1 not in book
    assert book.get(2) == RestingOrder(2, "sell", D("101"), D("0.5"), NOW)
    assert book.get(3) == RestingOrder(3, "buy", D("101"), D("0.5"), NOW)


def test_fully_filled_new_order_does_not_rest() -> None:
    book = Book.from_snapshot([level("sell", 1, "100", "1")])
    assert book.apply(new(3, "buy", "100", "0"), [fill(1, 3, 1, "0.4")]) == []
    assert 3 not in book
    assert book.get(1) == RestingOrder(1, "sell", D("100"), D("0.6"), NOW)


def test_cancel_removes_the_order() -> None:
    book = Book.from_snapshot([level("buy", 1, "100", "1")])
    assert book.apply(cancel(1)) == []
    assert len(book) == 0


def test_anomalies_are_reported_not_raised() -> None:
    book = Book.from_snapshot([level("sell", 1, "100", "1")])
    assert "not on the book" in book.apply(cancel(7))[0]
    assert "not on the book" in book.apply(new(8, "buy", "100", "0"), [fill(1, 8, 5, "1")])[0]
    assert "exceeds" in book.apply(new(9, "buy", "100", "0"), [fill(2, 9, 1, "2")])[0]
    assert 1 not in book


def test_differences_name_each_mismatch() -> None:
    ours = Book.from_snapshot([level("sell", 1, "100", "1"), level("buy", 2, "99", "1")])
    theirs = Book.from_snapshot([level("sell", 1, "100", "0.5"), level("buy", 3, "99", "1")])
    diff = ours.differences(theirs)
    assert len(diff) == 3
    assert "order 1:" in diff[0]
    assert "order 2 only in this book" in diff[1]
    assert "order 3 only in the other book" in diff[2]
    assert ours.differences(ours) == []


def test_equal_amounts_in_different_notation_are_equal() -> None:
    a = Book.from_snapshot([level("sell", 1, "100.00", "1.50")])
    b = Book.from_snapshot([level("sell", 1, "100", "1.5")])
    assert a.differences(b) == []


@given(
    st.lists(
        st.tuples(st.integers(1, 30), st.integers(1, 1000)),
        min_size=1,
        max_size=40,
        unique_by=lambda x: x[0],
    ),
    st.data(),
)
def test_partial_fills_sum_to_removal(orders: list[tuple[int, int]], data: st.DataObject) -> None:
    """Filling an order in pieces that add up to its amount removes it, and nothing else."""
    book = Book.from_snapshot([level("sell", oid, "100", str(amount)) for oid, amount in orders])
    target, amount = data.draw(st.sampled_from(orders))
    pieces = data.draw(st.lists(st.integers(1, amount), min_size=1, max_size=5))
    while sum(pieces) > amount:
        pieces.pop()
    pieces.append(amount - sum(pieces))
    tid = 0
    for piece in pieces:
        if piece == 0:
            continue
        tid += 1
        assert (
            book.apply(
                new(1000 + tid, "buy", "100", "0"), [fill(tid, 1000 + tid, target, str(piece))]
            )
            == []
        )
    assert target not in book
    assert len(book) == len(orders) - 1

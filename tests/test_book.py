"""The pure L3 book: snapshot + events, anomalies reported, comparison, and
which id of a cancel names the cancelled order (decided from the data, whichever the
exchange uses)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from recorder.book import (
    DEFAULT_READING,
    READINGS,
    Book,
    CancelApplied,
    CancelReading,
    GroupedSnapshotError,
    Reading,
    RestingOrder,
)
from recorder.records import BookEvent, BookFill, SnapshotOrder

NOW = datetime(2026, 1, 1, tzinfo=UTC)
D = Decimal


def level(side: str, order_id: int | None, price: str, amount: str, pos: int = 0) -> SnapshotOrder:
    return SnapshotOrder(uuid.uuid4(), side, pos, order_id, D(price), D(amount), NOW, NOW)  # type: ignore[arg-type]


def new(oid: int, side: str, price: str, amount: str) -> BookEvent:
    return BookEvent("BTC_USD", oid, "new", NOW, side, D(price), D(amount), None, NOW, uuid.uuid4())  # type: ignore[arg-type]


def cancel(
    oid: int,
    cancel_order_id: int | None = 99,
    side: str = "buy",
    price: str = "100",
    amount: str = "1",
) -> BookEvent:
    return BookEvent("BTC_USD", oid, "cancel", NOW, side, D(price), D(amount), cancel_order_id,  # type: ignore[arg-type]
                     NOW, uuid.uuid4())  # fmt: skip


def removed_id(applied: CancelApplied) -> int | None:
    return applied.removed.order_id if applied.removed is not None else None


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
    assert book.cancel_reading == CancelReading(oid=1)


def test_a_cancel_removes_the_order_named_by_cancel_order_id_when_only_that_one_rests() -> None:
    book = Book.from_snapshot([level("buy", 1, "100", "1"), level("sell", 2, "101", "1")])
    applied = book.cancel(cancel(15235, cancel_order_id=2, side="sell", price="101"))
    assert (applied.outcome, applied.reading, applied.anomalies) == (
        "cancel_order_id",
        "cancel_order_id",
        [],
    )
    assert applied.removed == RestingOrder(2, "sell", D("101"), D("1"), NOW)
    assert 2 not in book
    assert 1 in book
    assert book.cancel_reading.established == "cancel_order_id"


def test_a_cancel_naming_no_resting_order_removes_nothing_and_says_so() -> None:
    book = Book.from_snapshot([level("buy", 1, "100", "1")])
    applied = book.cancel(cancel(7, cancel_order_id=8))
    assert (applied.outcome, applied.removed, applied.reading) == ("unknown", None, None)
    assert applied.anomalies == [
        "cancel of order 7 (oid) or 8 (cancel_order_id): not on the book (buy at 100)"
    ]
    assert len(book) == 1
    assert book.cancel_reading == CancelReading(unknown=1)
    assert book.cancel_reading.established is None


def test_without_cancel_order_id_the_oid_is_the_only_reading() -> None:
    book = Book.from_snapshot([level("buy", 1, "100", "1")])
    assert book.cancel(cancel(1, cancel_order_id=None)).outcome == "oid"
    assert len(book) == 0


def test_both_ids_resting_the_established_reading_decides() -> None:
    for truth in READINGS:
        # Orders 1 and 2 rest, with the same side, price and amount: nothing in the cancel
        # itself tells them apart. Order 3 is cancelled first, unambiguously.
        book = Book.from_snapshot([level("buy", i, "100", "1") for i in (1, 2, 3)])
        first = cancel(3, 50) if truth == "oid" else cancel(50, 3)
        assert book.cancel(first).outcome == truth
        applied = book.cancel(cancel(1, 2, price="100"))
        assert (applied.outcome, applied.reading) == ("ambiguous", truth)
        assert removed_id(applied) == (1 if truth == "oid" else 2)
        assert book.cancel_reading == CancelReading(**{truth: 1}, ambiguous=1)


def test_a_lone_order_at_another_side_or_price_than_the_cancel_states_is_not_the_one() -> None:
    """As when a snapshot already lacks the cancelled order (its cancel still on the way) and
    the cancel's other id names some other resting order: that one stays, and no evidence."""
    snapshot = [
        level("buy", 1, "100", "1"),
        level("buy", 2, "99", "1"),
        level("sell", 3, "99", "1"),
    ]
    for event in (cancel(9, 2, price="100"), cancel(3, 7, side="buy", price="99")):
        book = Book.from_snapshot(snapshot)
        applied = book.cancel(event)
        assert (applied.outcome, applied.removed) == ("unknown", None)
        assert len(book) == 3
        assert book.cancel_reading.established is None


def test_both_ids_resting_and_nothing_established_the_order_fitting_the_cancel_decides() -> None:
    snapshot = [level("buy", 1, "100", "1"), level("sell", 2, "99", "1"),
                level("buy", 3, "99", "1"), level("buy", 4, "99", "2")]  # fmt: skip
    cases = [
        (1, cancel(1, 3, price="100")),  # the price tells 1 from 3
        (3, cancel(2, 3, price="99")),  # the side tells 2 from 3
        (3, cancel(4, 3, price="99", amount="1")),  # the remaining amount tells 3 from 4
        (4, cancel(4, 3, price="99", amount="2")),
        (1, cancel(1, 4, price="100", amount="2")),  # side and price weigh more than amount
    ]
    for cancelled, event in cases:
        book = Book.from_snapshot(snapshot)
        applied = book.cancel(event)
        assert (applied.outcome, removed_id(applied)) == ("ambiguous", cancelled), event
        assert book.cancel_reading.established is None


def test_both_ids_resting_nothing_established_and_nothing_to_tell_them_apart() -> None:
    book = Book.from_snapshot([level("buy", 1, "100", "1"), level("buy", 2, "100", "1")])
    applied = book.cancel(cancel(1, 2))
    assert DEFAULT_READING == "cancel_order_id"
    assert (applied.outcome, applied.reading) == ("ambiguous", DEFAULT_READING)
    assert removed_id(applied) == 2


def test_a_cancel_whose_two_ids_are_the_same_resting_order_is_not_evidence() -> None:
    book = Book.from_snapshot([level("buy", 1, "100", "1")])
    applied = book.cancel(cancel(1, 1))
    assert applied.outcome == "ambiguous"
    assert len(book) == 0
    assert book.cancel_reading.established is None


def test_the_tally_is_shared_between_books_and_a_second_book_may_decide_without_counting() -> None:
    shared = CancelReading()
    first = Book.from_snapshot([level("buy", 1, "100", "1")], cancel_reading=shared)
    first.apply(cancel(500, 1))
    second = Book.from_snapshot(
        [level("buy", 1, "100", "1"), level("buy", 2, "100", "1")], cancel_reading=shared
    )
    twin = Book.from_snapshot(
        [level("buy", 1, "100", "1"), level("buy", 2, "100", "1")], cancel_reading=shared
    )
    assert shared.established == "cancel_order_id"
    assert second.apply(cancel(2, 1, price="100")) == []
    assert twin.apply(cancel(2, 1, price="100"), count=False) == []
    assert 2 in second
    assert 1 not in second
    assert second.differences(twin) == []
    assert shared == CancelReading(cancel_order_id=1, ambiguous=1)


@given(st.integers(0, 5), st.integers(0, 5), st.integers(0, 5), st.integers(0, 5))
def test_the_established_reading_is_the_one_with_more_evidence(
    oid: int, cancel_order_id: int, ambiguous: int, unknown: int
) -> None:
    tally = CancelReading(oid, cancel_order_id, ambiguous, unknown)
    expected = None
    if oid != cancel_order_id:
        expected = "oid" if oid > cancel_order_id else "cancel_order_id"
    assert tally.established == expected


Step = tuple[str, int, int]
"""("new", which side/price/amount, _) or ("cancel", which order, the cancel's own id: 0 for
one of the orders resting at the same side and price, when there is one)."""


@st.composite
def exchanges(draw: st.DrawFn) -> tuple[Reading, list[RestingOrder], list[Step]]:
    """A reading, a snapshot, and a run of steps of an exchange using it.

    Orders crowd on 2 sides x 4 prices, and a cancel's own id often names another resting
    order, often at the same side and price: the ambiguous case. Orders at the same side
    and price differ in amount, which tells them apart while no reading is established.
    """
    truth = draw(st.sampled_from(READINGS))
    fits = draw(
        st.lists(
            st.tuples(st.sampled_from(["buy", "sell"]), st.integers(98, 101), st.integers(1, 50)),
            min_size=1,
            max_size=12,
            unique=True,
        )
    )
    orders = [
        RestingOrder(i, side, D(price), D(amount) / 10, NOW)  # type: ignore[arg-type]
        for i, (side, price, amount) in enumerate(fits, start=1)
    ]
    steps = draw(
        st.lists(
            st.tuples(
                st.sampled_from(["new", "cancel"]),
                st.integers(0, 10**6),
                st.just(0) | st.integers(1, 40),
            ),
            max_size=40,
        )
    )
    return truth, orders, steps


@given(exchanges())
def test_a_complete_stream_rebuilds_the_exchanges_book_under_either_reading(
    exchange: tuple[Reading, list[RestingOrder], list[Step]],
) -> None:
    """Under either reading, with every event seen: each cancel removes the order the exchange
    cancelled, the evidence never points the wrong way, and the book is the exchange's."""
    truth, orders, steps = exchange
    exact: dict[int, RestingOrder] = {o.order_id: o for o in orders}
    book = Book(orders)
    next_oid = len(orders) + 1
    for kind, pick, own_id in steps:
        if kind == "new" or not exact:
            side = ("buy", "sell")[pick % 2]
            order = RestingOrder(next_oid, side, D(98 + pick // 2 % 4), D(pick % 97 + 1), NOW)
            next_oid += 1
            if (side, order.price, order.amount) in {
                (o.side, o.price, o.amount) for o in exact.values()
            }:
                continue
            exact[order.order_id] = order
            assert book.apply(new(order.order_id, side, str(order.price), str(order.amount))) == []
            continue
        target = sorted(exact)[pick % len(exact)]
        gone = exact.pop(target)
        alike = [i for i, o in exact.items() if (o.side, o.price) == (gone.side, gone.price)]
        if own_id == 0:
            own_id = alike[pick % len(alike)] if alike else 41
        oid, cancel_order_id = (target, own_id) if truth == "oid" else (own_id, target)
        applied = book.cancel(
            cancel(oid, cancel_order_id, gone.side, str(gone.price), str(gone.amount))
        )
        assert removed_id(applied) == target
        assert applied.reading == truth or own_id == target
    other = "cancel_order_id" if truth == "oid" else "oid"
    assert getattr(book.cancel_reading, other) == 0
    assert book.cancel_reading.unknown == 0
    assert book.differences(Book(exact.values())) == []


def test_anomalies_are_reported_not_raised() -> None:
    book = Book.from_snapshot([level("sell", 1, "100", "1")])
    assert "not on the book" in book.apply(cancel(7, 8))[0]
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


def test_differing_ids_are_the_orders_differences_names_and_among_narrows_them() -> None:
    ours = Book.from_snapshot(
        [level("sell", 1, "100", "1"), level("buy", 2, "99", "1"), level("buy", 4, "98", "1")]
    )
    theirs = Book.from_snapshot(
        [level("sell", 1, "100", "0.5"), level("buy", 3, "99", "1"), level("sell", 4, "98", "1.0")]
    )
    assert ours.differing_ids(theirs) == [1, 2, 3, 4]
    assert ours.differing_ids(theirs, among=[4, 2, 7]) == [2, 4]
    assert ours.differences(theirs, among=[4]) == ["order 4: buy 1@98 here, sell 1.0@98 there"]
    assert ours.differing_ids(ours) == []


@given(
    st.dictionaries(st.integers(1, 12), st.tuples(st.booleans(), st.integers(1, 3))),
    st.dictionaries(st.integers(1, 12), st.tuples(st.booleans(), st.integers(1, 3))),
)
def test_differing_ids_and_differences_agree(
    mine: dict[int, tuple[bool, int]], theirs: dict[int, tuple[bool, int]]
) -> None:
    def book(orders: dict[int, tuple[bool, int]]) -> Book:
        return Book(
            RestingOrder(i, "buy" if buy else "sell", D(100), D(amount) / 2, NOW)
            for i, (buy, amount) in orders.items()
        )

    a, b = book(mine), book(theirs)
    named = [int(line.split()[1].rstrip(":")) for line in a.differences(b)]
    assert named == a.differing_ids(b) == b.differing_ids(a)
    assert a.differing_ids(b) == sorted(
        i for i in mine.keys() | theirs.keys() if mine.get(i) != theirs.get(i)
    )

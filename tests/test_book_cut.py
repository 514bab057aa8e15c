"""Where a snapshot cuts the events received after it was asked for (`snapshot_cut`).

The snapshot is made here exactly as the exchange would have: the book at the request plus
the window's first k events, for every k; the cut must find k, or (with no book from before
the request) say it cannot, never name another k.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from recorder.book import Book, CancelReading, Reading, snapshot_cut
from recorder.records import BookEvent, BookFill
from tests.test_book import cancel, fill, level, new

BEFORE = [
    level("sell", 1, "100", "2"),
    level("sell", 2, "101", "1"),
    level("buy", 3, "99", "1"),
    level("buy", 4, "98", "1"),
]


def window(reading: Reading) -> list[tuple[BookEvent, Sequence[BookFill]]]:
    """Events of every kind: a fill of an order resting before, a new order, a cancel of an
    order resting before (named by `reading`'s id), a fill that takes an order resting before
    away, a cancel of the window's new order."""
    cancel_3 = cancel(3, 500, "buy", "99") if reading == "oid" else cancel(500, 3, "buy", "99")
    cancel_11 = (
        cancel(11, 501, "sell", "102") if reading == "oid" else cancel(501, 11, "sell", "102")
    )
    return [
        (new(10, "buy", "100", "0"), [fill(1, 10, 1, "1")]),
        (new(11, "sell", "102", "3"), []),
        (cancel_3, []),
        (new(12, "buy", "101", "0"), [fill(2, 12, 2, "1", price="101")]),
        (cancel_11, []),
    ]


def exchange_book(
    events: Sequence[tuple[BookEvent, Sequence[BookFill]]], tally: CancelReading
) -> Book:
    book = Book.from_snapshot(BEFORE, cancel_reading=tally)
    for event, fills in events:
        book.apply(event, fills, count=False)
    return book


def established(reading: Reading) -> CancelReading:
    return CancelReading(oid=3) if reading == "oid" else CancelReading(cancel_order_id=3)


@pytest.mark.parametrize("reading", ["oid", "cancel_order_id"])
def test_with_the_book_before_the_request_every_cut_is_found(reading: Reading) -> None:
    events = window(reading)
    for k in range(len(events) + 1):
        tally = established(reading)
        snapshot = exchange_book(events[:k], tally)
        before = Book.from_snapshot(BEFORE, cancel_reading=tally)
        cut = snapshot_cut(events, snapshot, before)
        assert (cut.events, cut.drift) == (k, frozenset()), k


@pytest.mark.parametrize("reading", ["oid", "cancel_order_id"])
def test_without_it_the_events_decide_the_cut_or_leave_it_open(reading: Reading) -> None:
    events = window(reading)
    found = {}
    for k in range(len(events) + 1):
        snapshot = exchange_book(events[:k], established(reading))
        found[k] = snapshot_cut(events, snapshot, None).events
    # 0, 1: the new order 11 is not in yet, the cancel of 3 not either, and the fill of order
    # 1 (resting before, its amount then unknown) may or may not be. 2: order 11 rests, order
    # 3 too. 3: the fill that takes order 2 away is as open while order 2 is still in; 4:
    # order 2 is gone, so that fill is in. 5: order 11 came and went.
    assert found == {0: None, 1: None, 2: 2, 3: None, 4: 4, 5: 5}


def test_an_empty_window_cuts_at_zero_and_an_order_no_event_explains_is_drift() -> None:
    tally = CancelReading()
    before = Book.from_snapshot(BEFORE, cancel_reading=tally)
    assert snapshot_cut([], before.copy(), None).events == 0
    events = window("oid")
    snapshot = exchange_book(events[:2], tally)
    snapshot.apply(new(77, "buy", "90", "1"), count=False)  # never sent as an event
    snapshot.apply(new(1, "sell", "100", "5"), count=False)  # an amount no event explains
    cut = snapshot_cut([*events, (new(77, "buy", "90", "2"), [])], snapshot, before)
    assert cut.events == 2
    assert cut.drift == {1, 77}


def test_without_it_an_ambiguous_cancel_names_the_order_that_fits_it() -> None:
    """Before the data has established which id names the cancelled order, a cancel whose
    two ids both name a known order removes the one at its side and price, as `Book.cancel`
    decides it, not the default reading's."""
    tally = CancelReading()  # nothing established yet, as at the first resync of a run
    by_oid = cancel(47, 4, "buy", "97", "1")  # its cancel_order_id names resting order 4
    events: list[tuple[BookEvent, Sequence[BookFill]]] = [
        (new(47, "buy", "97", "1"), []),
        (new(48, "sell", "103", "1"), []),
        (new(49, "sell", "104", "1"), []),
        (by_oid, []),
    ]
    snapshot = Book.from_snapshot(BEFORE, cancel_reading=tally)
    for event, _ in events[:3]:
        snapshot.apply(event, count=False)
    snapshot.cancel(by_oid, count=False)
    assert [o.order_id for o in snapshot.side("buy")] == [3, 4]  # 47 went, 4 stays
    assert snapshot_cut(events, snapshot, None).events == 4


@pytest.mark.parametrize("reading", ["oid", "cancel_order_id"])
def test_without_it_a_cancel_whose_other_id_names_an_order_elsewhere_is_found_in(
    reading: Reading,
) -> None:
    """A cancel of an order resting before the window, which the snapshot already lacks,
    whose other id names an order the snapshot holds at another side and price: that order
    is not the one cancelled (as `Book.cancel` reads it), so the snapshot holds the cancel."""
    # order 2 (sell 101) cancelled; the cancel's own id is 3, resting order 3's (buy 99)
    named = cancel(2, 3, "sell", "101") if reading == "oid" else cancel(3, 2, "sell", "101")
    snapshot = Book.from_snapshot(BEFORE)
    snapshot.cancel(named, count=False)
    assert sorted(o.order_id for o in snapshot.side("buy") + snapshot.side("sell")) == [1, 3, 4]
    assert snapshot_cut([(named, [])], snapshot, None).events == 1
    # and before the cancel, the snapshot still holding order 2, it is not in
    assert snapshot_cut([(named, [])], Book.from_snapshot(BEFORE), None).events == 0


def test_without_it_an_id_of_an_order_already_gone_names_no_order() -> None:
    """A cancel's two ids, one naming an order the window placed and already removed: the
    cancel removes the other, the order it fits (or one resting before the window); so each
    cancel of a chain of orders placed and cancelled in turn is found in or not."""
    events: list[tuple[BookEvent, Sequence[BookFill]]] = [
        (new(5, "sell", "105", "1"), []),
        (cancel(5, 90, "sell", "105"), []),
        (new(6, "sell", "106", "1"), []),
        (cancel(6, 5, "sell", "106"), []),  # 5 is gone: 6 is cancelled
        (new(7, "sell", "107", "1"), []),
        (cancel(7, 6, "sell", "107"), []),
        (cancel(4, 7, "buy", "98"), []),  # 7 is gone: order 4, resting before, is cancelled
    ]
    found = {k: snapshot_cut(events, exchange_book(events[:k], CancelReading()), None).events
             for k in range(len(events) + 1)}  # fmt: skip
    # a cut just before a new order, or just after its cancel, looks alike: left open
    assert found == {0: None, 1: 1, 2: None, 3: 3, 4: None, 5: 5, 6: None, 7: 7}


@pytest.mark.parametrize("reading", ["oid", "cancel_order_id"])
def test_without_it_an_order_a_fill_shows_at_another_price_is_not_the_one_cancelled(
    reading: Reading,
) -> None:
    """A cancel whose ids name the window's own order, which fits it, and an order resting
    before the window whose side and amount are unknown but whose fill showed its price,
    another than the cancel's: the window's order is the one cancelled, as `Book.cancel`
    decides with the whole book, so the snapshot taken after it holds the cancel."""
    cancel_21 = cancel(21, 2, "buy", "99.5") if reading == "oid" else cancel(2, 21, "buy", "99.5")
    events: list[tuple[BookEvent, Sequence[BookFill]]] = [
        (new(20, "buy", "101", "0"), [fill(1, 20, 2, "1", price="101")]),  # order 2 filled
        (new(21, "buy", "99.5", "1"), []),
        (new(22, "sell", "103", "1"), []),  # placed and resting: the cut is after it
        (cancel_21, []),
    ]
    snapshot = exchange_book(events, CancelReading())
    assert 21 not in snapshot
    assert 22 in snapshot
    assert snapshot_cut(events, snapshot, None).events == 4

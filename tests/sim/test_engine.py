"""The matching engine's invariants, on random order sequences (hypothesis)."""

from __future__ import annotations

from decimal import Decimal
from itertools import count

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recorder.sim.engine import (
    CANCEL_ID_LAG,
    STATUS_CANCELLED,
    STATUS_DONE,
    Cancel,
    Engine,
    NewOrder,
    OrderRejected,
    PairSpec,
    UnknownOrder,
)

PAIRS = [PairSpec("BTC_USD", "BTC", "USD", 2), PairSpec("ETH_BTC", "ETH", "BTC", 6)]


def make_engine() -> Engine:
    ticks = count(1)
    return Engine(PAIRS, lambda: Decimal(1_700_000_000 + next(ticks)))


orders = st.tuples(
    st.sampled_from(["BTC_USD", "ETH_BTC"]),
    st.sampled_from(["buy", "sell"]),
    st.integers(min_value=95, max_value=105),  # price in whole units: crossings are common
    st.integers(min_value=1, max_value=500),  # amount in units of 0.001
)
actions = st.lists(st.one_of(orders, st.integers(min_value=0, max_value=200)), max_size=120)


def run(engine: Engine, steps: list[object]) -> list[NewOrder | Cancel]:
    events: list[NewOrder | Cancel] = []
    for step in steps:
        if isinstance(step, tuple):
            pair, side, price, amount = step
            events.append(engine.place(pair, side, Decimal(price), Decimal(amount) / 1000))
        else:
            active = [o for o in engine.orders.values() if o.status == 1]
            if active:
                events.append(engine.cancel(active[int(step) % len(active)].oid))
    return events


@settings(max_examples=150, deadline=None)
@given(actions)
def test_book_never_crossed_after_matching(steps: list[object]) -> None:
    engine = make_engine()
    run(engine, steps)
    for book in engine.books.values():
        bid, ask = book.best_price("buy"), book.best_price("sell")
        if bid is not None and ask is not None:
            assert bid < ask


@settings(max_examples=150, deadline=None)
@given(actions)
def test_amounts_are_conserved(steps: list[object]) -> None:
    engine = make_engine()
    events = run(engine, steps)
    for event in events:
        if isinstance(event, NewOrder):
            order = engine.orders[event.oid]
            filled = sum((t.amount for t in event.trades), Decimal(0))
            assert filled + event.amount == order.original_amount
    # Every order: original = resting (or cancelled remainder) + what it gave and took in trades.
    traded: dict[int, Decimal] = {}
    for trade in engine.trades:
        traded[trade.oid] = traded.get(trade.oid, Decimal(0)) + trade.amount
        traded[trade.o_id] = traded.get(trade.o_id, Decimal(0)) + trade.amount
    for order in engine.orders.values():
        left = Decimal(0) if order.status == STATUS_DONE else order.amount
        assert traded.get(order.oid, Decimal(0)) + left == order.original_amount
        assert order.amount >= 0


@settings(max_examples=150, deadline=None)
@given(actions)
def test_fills_are_priced_at_the_resting_order_in_price_time_priority(
    steps: list[object],
) -> None:
    engine = make_engine()
    for event in run(engine, steps):
        if not isinstance(event, NewOrder):
            continue
        previous = None
        for trade in event.trades:
            resting = engine.orders[trade.o_id]
            assert trade.price == resting.price
            assert trade.type == resting.side != event.type
            assert resting.oid < event.oid
            # never at a worse price than the incoming limit; best price first, then oldest
            if event.type == "buy":
                assert trade.price <= event.price
            else:
                assert trade.price >= event.price
            if previous is not None:
                better_or_same = (
                    previous.price <= trade.price
                    if event.type == "buy"
                    else previous.price >= trade.price
                )
                assert better_or_same
                if previous.price == trade.price:
                    assert previous.o_id < trade.o_id
            previous = trade


@settings(max_examples=100, deadline=None)
@given(actions)
def test_ids_increase_across_pairs(steps: list[object]) -> None:
    engine = make_engine()
    events = run(engine, steps)
    tids = [t.tid for t in engine.trades]
    assert tids == sorted(set(tids))
    new_oids = [e.oid for e in events if isinstance(e, NewOrder)]
    assert new_oids == sorted(set(new_oids))
    cancel_ids = [e.cancel_order_id for e in events if isinstance(e, Cancel)]
    assert cancel_ids == sorted(set(cancel_ids))


def test_cross_fills_several_resting_orders_in_order() -> None:
    engine = make_engine()
    a = engine.place("BTC_USD", "sell", Decimal("100.00"), Decimal("1"))
    b = engine.place("BTC_USD", "sell", Decimal("101.00"), Decimal("1"))
    c = engine.place("BTC_USD", "sell", Decimal("100.00"), Decimal("1"))
    taker = engine.place("BTC_USD", "buy", Decimal("101.00"), Decimal("2.5"))
    assert [(t.o_id, t.price, t.amount) for t in taker.trades] == [
        (a.oid, Decimal("100.00"), Decimal("1")),
        (c.oid, Decimal("100.00"), Decimal("1")),
        (b.oid, Decimal("101.00"), Decimal("0.5")),
    ]
    assert taker.amount == 0
    assert engine.books["BTC_USD"].orders("sell")[0].amount == Decimal("0.5")
    assert engine.orders[a.oid].status == STATUS_DONE


def test_cancel_reports_what_rested() -> None:
    engine = make_engine()
    placed = engine.place("BTC_USD", "buy", Decimal("99.50"), Decimal("2"))
    engine.place("BTC_USD", "sell", Decimal("99.00"), Decimal("0.75"))
    cancel = engine.cancel(placed.oid)
    assert (cancel.oid, cancel.amount, cancel.price, cancel.type) == (
        placed.oid,
        Decimal("1.25"),
        Decimal("99.50"),
        "buy",
    )
    assert engine.orders[placed.oid].status == STATUS_CANCELLED
    assert engine.books["BTC_USD"].orders("buy") == []
    with pytest.raises(OrderRejected, match="not active"):
        engine.cancel(placed.oid)
    with pytest.raises(UnknownOrder):
        engine.cancel(10_000)


def test_cancel_ids_trail_the_order_ids_so_they_name_resting_orders_too() -> None:
    engine = make_engine()
    placed = [engine.place("BTC_USD", "buy", Decimal(90 + i % 5), Decimal(1)) for i in range(300)]
    first = engine.cancel(placed[0].oid)
    second = engine.cancel(placed[1].oid)
    assert first.cancel_order_id == 301 - CANCEL_ID_LAG
    assert second.cancel_order_id == first.cancel_order_id + 1  # no order placed in between
    # the cancel's own id is an order resting on the same book: the ambiguous case
    assert engine.orders[second.cancel_order_id].status == 1
    assert engine.orders[second.cancel_order_id].pair == "BTC_USD"


def test_cancel_of_someone_elses_order_is_refused() -> None:
    engine = make_engine()
    placed = engine.place("BTC_USD", "buy", Decimal("99.50"), Decimal("2"), owner="alice")
    with pytest.raises(PermissionError):
        engine.cancel(placed.oid, owner="bob")


@pytest.mark.parametrize(
    ("pair", "side", "price", "amount", "reason"),
    [
        ("XXX_YYY", "buy", "1", "1", "unknown pair"),
        ("BTC_USD", "hold", "1", "1", "type"),
        ("BTC_USD", "buy", "0", "1", "price"),
        ("BTC_USD", "buy", "1.001", "1", "decimals"),
        ("BTC_USD", "buy", "1", "0.000000001", "8 decimals"),
        ("BTC_USD", "buy", "1", "0", "between"),
    ],
)
def test_invalid_orders_are_rejected_with_a_reason(
    pair: str, side: str, price: str, amount: str, reason: str
) -> None:
    engine = make_engine()
    with pytest.raises(OrderRejected, match=reason):
        engine.place(pair, side, Decimal(price), Decimal(amount))  # type: ignore[arg-type]
    assert engine.event_count == 0

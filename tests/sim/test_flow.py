"""The seeded order flow: realistic mix of events, reproducible from its seed."""

from __future__ import annotations

from decimal import Decimal
from itertools import count

from recorder.sim.engine import Cancel, Engine, Event, NewOrder
from recorder.sim.flow import OrderFlow, pair_spec


def run(seed: int, steps: int) -> tuple[Engine, list[Event]]:
    ticks = count()
    engine = Engine(
        [pair_spec("BTC_USD"), pair_spec("XRP_USD")],
        lambda: Decimal(1_700_000_000) + Decimal(next(ticks)) / 1000,
    )
    events: list[Event] = []
    engine.subscribe(events.append)
    flow = OrderFlow(engine, seed)
    for _ in range(steps):
        flow.step()
    return engine, events


def test_same_seed_same_events() -> None:
    assert run(5, 2000)[1] == run(5, 2000)[1]
    assert run(5, 2000)[1] != run(6, 2000)[1]


def test_mix_of_passive_crossing_and_cancelled_orders() -> None:
    engine, events = run(11, 6000)
    cancels = [e for e in events if isinstance(e, Cancel)]
    news = [e for e in events if isinstance(e, NewOrder)]
    sweeps = [e for e in news if len(e.trades) >= 2]
    assert 0.15 < len(cancels) / len(events) < 0.6
    assert len(sweeps) > 50  # orders that fill several resting orders
    assert len([e for e in news if not e.trades]) > len(news) / 2  # mostly passive
    for pair, book in engine.books.items():
        bid, ask = book.best_price("buy"), book.best_price("sell")
        assert bid is not None
        assert ask is not None
        assert bid < ask
        # orders stay near the mid: the book is a few tenths of a percent wide at the top
        assert (ask - bid) / ask < Decimal("0.01"), pair
        assert 10 < book.order_count() < 200, pair


def test_prices_respect_each_pairs_precision() -> None:
    engine, events = run(2, 1000)
    for event in events:
        tick = engine.specs[event.pair].tick
        assert event.price == event.price.quantize(tick)
        assert event.price > 0
        assert event.amount == event.amount.quantize(Decimal("1e-8"))

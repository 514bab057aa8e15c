"""The engine's stream is complete: a snapshot plus every event after it is the later book.

Drives the seeded order flow, serialises each event exactly as the socket sends it (under
either reading of a cancel's ids), reads it back as records and applies it with
`recorder.book` to an ungrouped snapshot, which must decide each cancel as the engine did.
"""

from __future__ import annotations

import json
import time
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recorder.book import READINGS, Book, CancelReading, Reading
from recorder.config import CANDLE_WIDTH_S
from recorder.sim import wire
from recorder.sim.candles import candles
from recorder.sim.engine import Engine, Event
from recorder.sim.flow import OrderFlow, pair_spec, replay_history, wall_clock
from tests.sim.payloads import records, snapshot


def ungrouped(engine: Engine, pair: str) -> dict[str, Any]:
    book = engine.books[pair]
    return json.loads(
        wire.dumps(
            {
                side: [
                    {"price": o.price, "id": o.oid, "amount": o.amount, "timestamp": o.timestamp}
                    for o in book.orders(side)
                ]
                for side in ("sell", "buy")
            }
        ),
        parse_float=Decimal,
    )


def payload_of(event: Event, cancel_id: Reading) -> dict[str, Any]:
    raw = wire.book_payload(event, cancel_id)
    return json.loads(wire.dumps(raw), parse_float=Decimal)  # type: ignore[no-any-return]


def replay(seed: int, before: int, after: int, cancel_id: Reading) -> dict[str, CancelReading]:
    """Snapshot each pair after `before` steps, apply the next `after` steps' payloads; check
    every event applied cleanly and each book is the engine's; return each book's tally."""
    engine = Engine([pair_spec("BTC_USD"), pair_spec("ETH_BTC")], wall_clock(time.time_ns))
    flow = OrderFlow(engine, seed)
    for _ in range(before):
        flow.step()
    books = {pair: Book.from_snapshot(snapshot(ungrouped(engine, pair))) for pair in engine.books}
    anomalies: list[str] = []

    def apply(event: Event) -> None:
        record, fills = records(event.pair, payload_of(event, cancel_id))
        anomalies.extend(books[event.pair].apply(record, fills))

    engine.subscribe(apply)
    for _ in range(after):
        flow.step()
    assert anomalies == []
    for pair, book in books.items():
        later = Book.from_snapshot(snapshot(ungrouped(engine, pair)))
        assert book.differences(later) == []
    return {pair: book.cancel_reading for pair, book in books.items()}


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(min_value=0, max_value=2**32),
    before=st.integers(min_value=0, max_value=400),
    after=st.integers(min_value=0, max_value=400),
    cancel_id=st.sampled_from(READINGS),
)
def test_snapshot_plus_events_equals_the_later_book(
    seed: int, before: int, after: int, cancel_id: Reading
) -> None:
    for tally in replay(seed, before, after, cancel_id).values():
        # the evidence never points the wrong way on a complete stream
        assert tally.established in (None, cancel_id)


@pytest.mark.parametrize("cancel_id", READINGS)
def test_cancels_naming_two_resting_orders_happen_and_are_read_right(cancel_id: Reading) -> None:
    for tally in replay(seed=11, before=300, after=2000, cancel_id=cancel_id).values():
        assert tally.established == cancel_id
        assert tally.ambiguous > 20
        assert tally.unknown == 0


def test_history_has_trades_over_the_past_hours_and_candles_total_them() -> None:
    engine = Engine([pair_spec("BTC_USD"), pair_spec("ETH_USD")], wall_clock(time.time_ns))
    now_s = time.time()
    made = replay_history(OrderFlow(engine, 7), hours=3, events_per_hour=3000, end_s=now_s)
    assert made > 5000
    trades = engine.trades_by_pair["BTC_USD"]
    assert len(trades) > 200
    assert now_s - 3 * 3600 <= float(trades[0].timestamp) < now_s - 2.5 * 3600
    assert float(trades[-1].timestamp) <= now_s
    timestamps = [t.timestamp for t in engine.trades]
    assert timestamps == sorted(timestamps)
    for chart_type, seconds in CANDLE_WIDTH_S.items():
        chart = candles(trades, chart_type)
        assert sum(c.volume for c in chart) == sum(t.amount for t in trades)
        assert all(c.time % seconds == 0 for c in chart)
        assert chart[0].open == trades[0].price
        assert chart[-1].close == trades[-1].price
        assert [c.time for c in chart] == sorted({c.time for c in chart})

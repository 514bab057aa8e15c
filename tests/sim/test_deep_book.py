"""A deep book on demand (`book_orders`): what the snapshot benchmark needs."""

from __future__ import annotations

import time

import aiohttp

from recorder.sim.engine import Engine, NewOrder
from recorder.sim.flow import OrderFlow, pair_spec, replay_history, wall_clock
from recorder.sim.server import run_sim
from tests.sim.conftest import get_json


def test_fill_book_tops_up_a_book_with_resting_orders_on_both_sides_without_trades() -> None:
    engine = Engine([pair_spec("BTC_USD"), pair_spec("XRP_USD")], wall_clock(time.time_ns))
    flow = OrderFlow(engine, 4)
    replay_history(flow, hours=0.5, events_per_hour=2000, end_s=time.time())
    trades_before = len(engine.trades)
    events: list[object] = []
    engine.subscribe(events.append)

    placed = flow.fill_book("BTC_USD", 3000)

    book = engine.books["BTC_USD"]
    assert book.order_count() == 3000
    assert placed == len(events) > 2000  # the history left far fewer
    assert all(isinstance(e, NewOrder) and not e.trades and e.amount > 0 for e in events)
    assert len(engine.trades) == trades_before
    bid, ask = book.best_price("buy"), book.best_price("sell")
    assert bid is not None
    assert ask is not None
    assert bid < ask
    tick = engine.specs["BTC_USD"].tick
    for side in ("buy", "sell"):
        orders = book.orders(side)
        assert len(orders) > 1000, side
        assert all(o.price == o.price.quantize(tick) for o in orders)
    assert flow.fill_book("BTC_USD", 100) == 0  # already deeper: nothing placed
    assert engine.books["XRP_USD"].order_count() < 200  # other pairs untouched


async def test_a_simulator_started_with_book_orders_serves_that_deep_a_book() -> None:
    async with (
        run_sim(
            seed=2, pairs=("BTC_USD",), rate_per_s=0, history_hours=0.1, book_orders=2500
        ) as sim,
        aiohttp.ClientSession() as http,
    ):
        status, body = await get_json(http, f"{sim.base_url}/api/v1/orderbook/BTC_USD/?group=0")
        assert status == 200
        assert len(body["buy"]) + len(body["sell"]) == 2500
        assert body["buy"][0]["price"] < body["sell"][0]["price"]
        truth = [
            o.oid for side in ("sell", "buy") for o in sim.engine.books["BTC_USD"].orders(side)
        ]  # type: ignore[arg-type]
        assert [o["id"] for o in body["sell"] + body["buy"]] == truth
        # Seeding is part of the past: nothing of it goes out on the socket.
        assert sim.state()["emitted_count"] == 0
        assert sim.state()["outbox"] == 0

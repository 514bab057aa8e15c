"""The admin endpoints that tests and benchmarks read the engine through."""

from __future__ import annotations

import aiohttp

from recorder.sim.server import Simulator
from tests.sim.conftest import get_json


async def test_admin_book_is_the_exact_engine_book(
    sim: Simulator, http: aiohttp.ClientSession
) -> None:
    sim.pause()
    _, admin = await get_json(http, sim.base_url + "/admin/book/BTC_USD")
    _, public = await get_json(http, sim.base_url + "/api/v1/orderbook/BTC_USD/")
    assert admin["event_count"] == sim.engine.event_count
    for side in ("buy", "sell"):
        assert admin[side] == public[side]
        assert [o["id"] for o in admin[side]] == [
            o.oid for o in sim.engine.books["BTC_USD"].orders(side)
        ]
    status, body = await get_json(http, sim.base_url + "/admin/book/NOPE_USD")
    assert status == 404
    assert body["detail"]


async def test_admin_state(sim: Simulator, http: aiohttp.ClientSession) -> None:
    status, state = await get_json(http, sim.base_url + "/admin/state")
    assert status == 200
    assert state["pairs"] == ["BTC_USD", "ETH_BTC"]
    assert state["trades"] > 0
    assert state["event_count"] >= state["emitted_count"]
    assert set(state["faults"]) == {
        "rate_429",
        "rate_5xx",
        "rate_truncated",
        "latency_s",
        "subscribe_delay_s",
        "stream_delay_s",
        "paused",
        "outage_remaining_s",
    }


async def test_admin_rejects_bad_bodies(sim: Simulator, http: aiohttp.ClientSession) -> None:
    for path, body in (
        ("/admin/outage", '{"seconds": "long"}'),
        ("/admin/outage", "not json"),
        ("/admin/burst", '{"malformed": -1}'),
        ("/admin/faults", "[1, 2]"),
    ):
        async with http.post(sim.base_url + path, data=body) as response:
            assert response.status == 400, path
            assert (await response.json())["detail"]


async def test_admin_pairs_lists_a_new_pair_while_running(
    sim: Simulator, http: aiohttp.ClientSession
) -> None:
    async with http.post(sim.base_url + "/admin/pairs", json={"name": "LTC_USD"}) as response:
        assert response.status == 200
    _, pairs = await get_json(http, sim.base_url + "/api/v1/pairs/")
    assert "LTC_USD" in {p["name"] for p in pairs}
    _, currencies = await get_json(http, sim.base_url + "/api/v1/currencies/")
    assert "LTC" in {c["short_name"] for c in currencies}
    sim.resume()
    for _ in range(400):  # the order flow trades the new pair too
        sim.flow.step()
    assert sim.engine.books["LTC_USD"].order_count() > 0
    async with http.post(sim.base_url + "/admin/pairs", json={"name": "ltc usd"}) as response:
        assert response.status == 400

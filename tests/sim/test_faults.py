"""Fault switches and the public rate limit, over real sockets."""

from __future__ import annotations

import asyncio
import json
import time
from decimal import Decimal
from typing import Any

import aiohttp
import pytest
import socketio

from recorder.sim.server import Simulator, run_sim
from tests.harness.waiting import eventually
from tests.sim.conftest import FAST, delivered, get_json, socket_client, unthrottled

CURRENCIES = "/api/v1/currencies/"


async def status_of(http: aiohttp.ClientSession, url: str) -> tuple[int, str]:
    async with http.get(url) as response:
        return response.status, await response.text()


async def answers(http: aiohttp.ClientSession, url: str, status: int) -> bool:
    return (await status_of(http, url))[0] == status


async def admin(http: aiohttp.ClientSession, sim: Simulator, path: str, body: Any = None) -> Any:
    async with http.post(sim.base_url + "/admin/" + path, json=body) as response:
        assert response.status == 200, await response.text()
        return await response.json()


async def test_public_rate_limit_is_100_calls_per_second_per_ip(
    sim: Simulator, http: aiohttp.ClientSession
) -> None:
    started = time.monotonic()
    results = await asyncio.gather(
        *(status_of(http, sim.base_url + CURRENCIES) for _ in range(150))
    )
    elapsed_s = time.monotonic() - started
    statuses = [status for status, _ in results]
    assert statuses.count(429) > 0
    if elapsed_s < 1.0:
        assert statuses.count(200) == 100
    throttled = next(text for status, text in results if status == 429)
    assert json.loads(throttled)["detail"]
    # admin calls are never limited; a second later the public budget is back
    assert (await status_of(http, sim.base_url + "/admin/state"))[0] == 200
    assert (await unthrottled(lambda: status_of(http, sim.base_url + CURRENCIES)))[0] == 200
    assert time.monotonic() - started < 3


async def test_drop_sockets_disconnects_every_client(
    sim: Simulator, http: aiohttp.ClientSession
) -> None:
    clients = [socket_client() for _ in range(3)]
    gone = asyncio.Event()
    dropped: list[int] = []

    def on_disconnect(*_: Any) -> None:
        dropped.append(1)
        if len(dropped) == len(clients):
            gone.set()

    for client in clients:
        client.on("disconnect", on_disconnect)
        await client.connect(sim.base_url, transports=["websocket"])
    answer = await admin(http, sim, "drop-sockets")
    assert answer == {"dropped": 3}
    await asyncio.wait_for(gone.wait(), 5)
    _, state = await get_json(http, sim.base_url + "/admin/state")
    assert state["sockets"] == 0


async def test_outage_answers_502_refuses_sockets_then_recovers(
    sim: Simulator, http: aiohttp.ClientSession
) -> None:
    connected = socket_client()
    lost = asyncio.Event()
    connected.on("disconnect", lambda *_: lost.set())
    await connected.connect(sim.base_url, transports=["websocket"])
    await admin(http, sim, "outage", {"seconds": 1.0})
    await asyncio.wait_for(lost.wait(), 5)
    assert (await status_of(http, sim.base_url + CURRENCIES))[0] == 502
    assert (await status_of(http, sim.base_url + "/api/v1/exchanges/"))[0] == 502
    refused = socket_client()
    with pytest.raises(socketio.exceptions.ConnectionError):
        await refused.connect(sim.base_url, transports=["websocket"], wait_timeout=2)
    await eventually(lambda: answers(http, sim.base_url + CURRENCIES, 200), what="REST back")
    again = socket_client()
    await again.connect(sim.base_url, transports=["websocket"])
    await again.disconnect()


@pytest.mark.parametrize(
    ("switch", "expected"),
    [("rate_429", {429}), ("rate_5xx", {500, 502}), ("rate_truncated", {200})],
)
async def test_rest_fault_rates(
    sim: Simulator, http: aiohttp.ClientSession, switch: str, expected: set[int]
) -> None:
    await admin(http, sim, "faults", {switch: 1.0})
    results = [await status_of(http, sim.base_url + "/api/v1/pairs/") for _ in range(20)]
    assert {status for status, _ in results} <= expected
    if switch == "rate_truncated":
        for _, text in results:
            with pytest.raises(json.JSONDecodeError):
                json.loads(text)
    await admin(http, sim, "faults", {switch: 0.0})
    status, text = await status_of(http, sim.base_url + "/api/v1/pairs/")
    assert status == 200
    assert json.loads(text)


async def test_mixed_fault_rates_produce_each_fault(
    sim: Simulator, http: aiohttp.ClientSession
) -> None:
    await admin(http, sim, "faults", {"rate_429": 0.25, "rate_5xx": 0.25, "rate_truncated": 0.25})
    results = [await status_of(http, sim.base_url + CURRENCIES) for _ in range(80)]
    statuses = {status for status, _ in results}
    assert {429, 200} <= statuses
    assert statuses & {500, 502}
    bodies = [text for status, text in results if status == 200]
    parsed = 0
    for text in bodies:
        try:
            json.loads(text)
            parsed += 1
        except json.JSONDecodeError:
            pass
    assert 0 < parsed < len(bodies)


async def test_latency(sim: Simulator, http: aiohttp.ClientSession) -> None:
    await admin(http, sim, "faults", {"latency_s": 0.3})
    started = time.monotonic()
    assert (await status_of(http, sim.base_url + CURRENCIES))[0] == 200
    assert time.monotonic() - started >= 0.3


async def test_subscribe_delay(sim: Simulator, http: aiohttp.ClientSession) -> None:
    """A subscription takes effect (and is acknowledged) only after the delay, so the
    client's stream misses what the book does meanwhile."""
    await admin(http, sim, "faults", {"subscribe_delay_s": 0.5})
    client = socket_client()
    await client.connect(sim.base_url, transports=["websocket"])
    try:
        started = time.monotonic()
        ack = asyncio.create_task(client.call("subscribe", "book_BTC_USD", timeout=10))
        assert await ack == {"success": True, "channel": "book_BTC_USD"}
        assert time.monotonic() - started >= 0.5
        assert len(sim.subscribers("book_BTC_USD")) == 1
    finally:
        await client.disconnect()


async def test_stream_delay(sim: Simulator, http: aiohttp.ClientSession) -> None:
    """Each book event reaches the socket only after the delay, in the engine's order: the
    stream runs behind REST."""
    await admin(http, sim, "faults", {"stream_delay_s": 0.5})
    made: dict[tuple[str, int], float] = {}
    sim.engine.subscribe(
        lambda event: made.setdefault((type(event).__name__, event.oid), time.monotonic())
    )
    received: list[tuple[tuple[str, int], float]] = []
    client = socket_client()

    @client.on("book_BTC_USD")  # type: ignore[misc]
    async def on_event(payload: dict[str, Any]) -> None:
        kind = "Cancel" if "cancel_order_id" in payload else "NewOrder"
        received.append(((kind, payload["oid"]), time.monotonic()))

    await client.connect(sim.base_url, transports=["websocket"])
    try:
        await client.call("subscribe", "book_BTC_USD", timeout=10)
        # events made once the fault was on (the engine listener saw them being made)
        await eventually(lambda: len([k for k, _ in received if k in made]) >= 5,
                         what="events made under the fault received")  # fmt: skip
    finally:
        await client.disconnect()
    for key, at in received:
        if key in made:
            assert at - made[key] >= 0.5, key
    order = [made[key] for key, _ in received if key in made]
    assert order == sorted(order)


async def test_bad_fault_switches_are_400(sim: Simulator, http: aiohttp.ClientSession) -> None:
    for body in (
        {"rate_429": 2},
        {"nope": 1},
        {"paused": "yes"},
        {"subscribe_delay_s": -1},
        {"stream_delay_s": "1"},
        {"rate_5xx": 0.6, "rate_429": 0.6},
    ):
        async with http.post(sim.base_url + "/admin/faults", json=body) as response:
            assert response.status == 400
            assert (await response.json())["detail"]


def looks_valid(payload: Any) -> bool:
    return (
        isinstance(payload, dict)
        and isinstance(payload.get("oid"), int)
        and payload.get("type") in ("buy", "sell")
        and isinstance(payload.get("price"), Decimal)
        and isinstance(payload.get("amount"), Decimal)
    )


async def test_burst_of_malformed_and_unknown_events(
    sim: Simulator, http: aiohttp.ClientSession
) -> None:
    client = socket_client()
    book: list[Any] = []
    unknown: list[str] = []
    client.on("book_BTC_USD", lambda *args: book.append(args[0] if args else None))
    client.on("*", lambda event, *_: unknown.append(event))
    await client.connect(sim.base_url, transports=["websocket"])
    await client.call("subscribe", "book_BTC_USD")
    await admin(http, sim, "pause")
    await sim.drained()
    await eventually(lambda: len(book) == delivered(sim), what="every event received")
    book.clear()
    await admin(http, sim, "burst", {"malformed": 7, "unknown": 4})
    await eventually(lambda: len(book) >= 7 and len(unknown) >= 4, what="the burst received")
    assert len(book) == 7
    assert not any(looks_valid(p) for p in book)
    assert len(unknown) == 4
    assert all(name.startswith("unknown_event_") for name in unknown)
    await client.disconnect()


async def test_pause_and_resume_the_order_flow(sim: Simulator, http: aiohttp.ClientSession) -> None:
    state = await admin(http, sim, "pause")
    assert state["faults"]["paused"] is True
    paused_at = sim.engine.event_count
    # Nothing may happen for a while: a window of time is the scenario, not a wait.
    await asyncio.sleep(0.3)
    assert sim.engine.event_count == paused_at
    await admin(http, sim, "resume")
    await eventually(lambda: sim.engine.event_count > paused_at, what="events after resume")


async def test_faults_set_at_start_up(http: aiohttp.ClientSession) -> None:
    async with run_sim(FAST, faults={"rate_5xx": 1.0}, rate_per_s=0) as sim:
        assert (await status_of(http, sim.base_url + CURRENCIES))[0] in (500, 502)
    async with run_sim(FAST, outage_s=0.5, rate_per_s=0) as sim:
        assert (await status_of(http, sim.base_url + CURRENCIES))[0] == 502
        await eventually(lambda: answers(http, sim.base_url + CURRENCIES, 200), what="REST back")


async def test_sockets_dropped_periodically(http: aiohttp.ClientSession) -> None:
    async with run_sim(FAST, drop_every_s=0.3) as sim:
        client = socket_client()
        lost = asyncio.Event()
        client.on("disconnect", lambda *_: lost.set())
        await client.connect(sim.base_url, transports=["websocket"])
        await asyncio.wait_for(lost.wait(), 3)


def test_a_bad_fault_update_changes_nothing() -> None:
    from recorder.sim.faults import Faults

    faults = Faults(rate_429=0.5)
    with pytest.raises(ValueError, match="exceed"):
        faults.update({"rate_5xx": 0.4, "rate_truncated": 0.2})
    with pytest.raises(ValueError, match="unknown"):
        faults.update({"latency_s": 1.0, "nope": 1})
    assert (faults.rate_5xx, faults.rate_truncated, faults.latency_s) == (0.0, 0.0, 0.0)
    faults.update({"rate_5xx": 0.4, "latency_s": 0.5})
    assert (faults.rate_429, faults.rate_5xx, faults.latency_s) == (0.5, 0.4, 0.5)


async def test_periodic_bursts(http: aiohttp.ClientSession) -> None:
    async with run_sim(FAST, burst_every_s=0.2, rate_per_s=0) as sim:
        client = socket_client()
        unknown = asyncio.Event()
        client.on("*", lambda *_: unknown.set())
        await client.connect(sim.base_url, transports=["websocket"])
        await asyncio.wait_for(unknown.wait(), 3)
        await client.disconnect()

"""The book stream against real Node socket.io servers, 2.x (Engine.IO v3) and 4.x (v4).

Every behaviour is checked for each server generation with `socketio_protocol` "auto" and
with the matching explicit value. The servers (`tests/node/server.js`) run with short
heartbeats (a ping every 200 ms), so each test also keeps a session alive across several
heartbeats; the keep-alive test checks that the server counted the client's heartbeats in
the direction its protocol expects (a client that got the direction wrong is dropped:
"invalid heartbeat direction" on 4.x, a ping timeout on 2.x).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import random
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from typing import Any

import aiohttp
import pytest

from recorder.config import ExchangeConfig
from recorder.exchange.classify import BookUpdate
from recorder.exchange.stream import BookStream, Connected, Disconnected
from recorder.records import RawMessage
from tests.exchange.streams import (
    NEW_ORDER,
    QUICK,
    assert_same_event,
    next_of,
    running,
)
from tests.harness.metrics import sample
from tests.harness.ports import refused_port
from tests.harness.waiting import eventually
from tests.node.harness import NodeServer, node_socketio_server

HEARTBEAT = {"pingInterval": 200, "pingTimeout": 1000}
"""Short heartbeats; the timeout leaves room for a busy test machine."""

OTHER = {"2": "4", "4": "2"}
CASES = [
    pytest.param("2", "auto", id="sio2-auto"),
    pytest.param("2", "2", id="sio2-explicit"),
    pytest.param("4", "auto", id="sio4-auto"),
    pytest.param("4", "4", id="sio4-explicit"),
]

CANCEL = (
    '{"success": true, "date": 1485686413.56882, "oid": 15235, "cancel_order_id": 4535,'
    ' "price": "935.230", "type": "sell", "amount": 0.0123, "pair": "ETH_USD",'
    ' "cancelled": true}'
)


# --- helpers -------------------------------------------------------------------------------


def make_stream(url: str, protocol: str, pairs: list[str]) -> BookStream:
    config = ExchangeConfig(socket_url=url, socketio_protocol=protocol, request_timeout_s=5)
    return BookStream.from_config(config, pairs, backoff=QUICK, connections=1)


async def our_socket(server: NodeServer, channels: int) -> str:
    """The id of the one socket that subscribed `channels` channels."""
    subscribed = await eventually(
        lambda: _subscribed_socket(server, channels), what=f"{channels} channels subscribed"
    )
    return str(subscribed)


async def _subscribed_socket(server: NodeServer, channels: int) -> str | None:
    live = await server.subscribed()
    full = [socket_id for socket_id, names in live.items() if len(names) == channels]
    return full[0] if len(full) == 1 else None


def unclosed_sessions() -> set[int]:
    """Ids of the aiohttp client sessions alive and not closed."""
    gc.collect()
    return {
        id(o) for o in gc.get_objects() if isinstance(o, aiohttp.ClientSession) and not o.closed
    }


@contextlib.contextmanager
def loop_complaints() -> Iterator[list[str]]:
    """What the event loop was told about (aiohttp reports unclosed sessions to it)."""
    loop = asyncio.get_running_loop()
    seen: list[str] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: seen.append(str(context.get("message"))))
    try:
        yield seen
    finally:
        loop.set_exception_handler(previous)


async def no_other_tasks() -> None:
    await eventually(
        lambda: not (asyncio.all_tasks() - {asyncio.current_task()}),
        what="every task of the stream ended",
    )


def number(rng: random.Random) -> str:
    """A decimal of at most 15 significant digits (a JS double keeps it), in varied forms."""
    digits = rng.randint(1, 15)
    mantissa = rng.randint(10 ** (digits - 1), 10**digits - 1)
    value = Decimal(mantissa).scaleb(-rng.randint(0, digits + 8))
    form = rng.choice(["plain", "exponent", "string"])
    if form == "exponent":
        return f"{value:e}"
    if form == "string":
        return json.dumps(f"{value:f}")
    return f"{value:f}"


def generated_events(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    events = []
    for i in range(count):
        oid = 100_000 + i
        trades = ", ".join(
            f'{{"tid": {oid * 10 + t}, "type": "buy", "price": {number(rng)},'
            f' "amount": {number(rng)}, "o_id": {rng.randint(1, 99_999)}}}'
            for t in range(rng.randint(0, 2))
        )
        date = f"{1_700_000_000 + i}.{rng.randint(0, 99_999):05d}"
        events.append(
            f'{{"success": true, "date": {date}, "oid": {oid}, "type": "sell",'
            f' "price": {number(rng)}, "amount": {number(rng)}, "trades": [{trades}]}}'
        )
    return events


# --- the tests -----------------------------------------------------------------------------


@pytest.mark.parametrize(("generation", "protocol"), CASES)
async def test_subscribes_and_records_events_exactly(generation: str, protocol: str) -> None:
    async with (
        node_socketio_server(generation, **HEARTBEAT) as server,
        running(make_stream(server.url, protocol, ["BTC_USD", "ETH_USD"])) as stream,
    ):
        connected = await next_of(stream, Connected)
        assert connected.protocol == stream.protocol == generation
        assert sample("recorder_stream_info", protocol=generation) == 1
        assert sample("recorder_stream_info", protocol=OTHER[generation]) == 0
        socket_id = await our_socket(server, channels=2)
        assert sorted((await server.subscribed())[socket_id]) == ["book_BTC_USD", "book_ETH_USD"]

        assert await server.emit("book_BTC_USD", "book_BTC_USD", [NEW_ORDER]) == 1
        assert await server.emit("book_ETH_USD", "book_ETH_USD", [CANCEL]) == 1
        many = generated_events(200, seed=int(generation))
        await server.emit("book_BTC_USD", "book_BTC_USD", many)

        expected = [("BTC_USD", NEW_ORDER), ("ETH_USD", CANCEL)] + [("BTC_USD", t) for t in many]
        for pair, text in expected:  # in the order sent, nothing else in between
            update = await next_of(stream, BookUpdate)
            assert_same_event(update, text, pair)
            assert update.event.session_id == connected.session.session_id
        assert stream.items.empty()
        assert stream.connects == 1


@pytest.mark.parametrize(("generation", "protocol"), CASES)
async def test_bad_packets_are_kept_raw_and_the_stream_goes_on(
    generation: str, protocol: str
) -> None:
    packets = {
        '2["book_BTC_USD",{"oid": 1, "price": 9': "undecodable packet: not valid JSON",
        '2["book_BTC_USD",{"oid": 1, "price": NaN}]': "non-finite number NaN",
        '2["book_BTC_USD",{"oid": "x"}]': "oid: not an integer",
        '2["disconnect"]': "unknown event",
    }
    async with (
        node_socketio_server(generation, **HEARTBEAT) as server,
        running(make_stream(server.url, protocol, ["BTC_USD"])) as stream,
    ):
        await next_of(stream, Connected)
        await our_socket(server, channels=1)
        await server.send_raw([*packets, f'2["book_BTC_USD",{NEW_ORDER}]'])
        for packet, reason in packets.items():
            raw = await next_of(stream, RawMessage)
            assert reason in raw.error
            assert raw.payload == packet[1:]  # the packet's JSON text, verbatim
        assert_same_event(await next_of(stream, BookUpdate), NEW_ORDER, "BTC_USD")
        assert stream.connects == 1


@pytest.mark.parametrize(("generation", "protocol"), CASES)
async def test_the_session_stays_up_over_many_heartbeats(generation: str, protocol: str) -> None:
    async with (
        node_socketio_server(generation, **HEARTBEAT) as server,
        running(make_stream(server.url, protocol, ["BTC_USD"])) as stream,
    ):
        connected = await next_of(stream, Connected)
        socket_id = await our_socket(server, channels=1)

        async def heartbeats() -> int:
            sockets = {s["id"]: s for s in (await server.state())["sockets"]}
            assert socket_id in sockets, "the server dropped the session"
            return int(sockets[socket_id]["heartbeats"])

        # Ten heartbeats, each counted by the server only when it came in the direction its
        # Engine.IO version expects: two seconds and more, several ping intervals and timeouts.
        await eventually(lambda: _at_least(heartbeats, 10), timeout_s=30, what="10 heartbeats")
        state = await server.state()
        assert [s["id"] for s in state["sockets"]] == [socket_id]
        assert state["sockets"][0]["engine_protocol"] == {"2": 3, "4": 4}[generation]
        assert stream.items.empty(), "no Disconnected, nothing else"
        await server.emit("book_BTC_USD", "book_BTC_USD", [NEW_ORDER])
        update = await next_of(stream, BookUpdate)
        assert update.event.session_id == connected.session.session_id
        assert stream.connects == 1
        assert stream.connected


async def _at_least(count: Any, minimum: int) -> bool:
    return bool(await count() >= minimum)


@pytest.mark.parametrize(("generation", "protocol"), CASES)
async def test_server_disconnect_reconnects_and_resubscribes(
    generation: str, protocol: str
) -> None:
    sessions_before = unclosed_sessions()
    with loop_complaints() as complaints:
        async with (
            node_socketio_server(generation, **HEARTBEAT) as server,
            running(make_stream(server.url, protocol, ["BTC_USD"])) as stream,
        ):
            first = await next_of(stream, Connected)
            first_socket = await our_socket(server, channels=1)
            assert await server.disconnect_all() == 1
            gone = await next_of(stream, Disconnected)
            assert gone.session.session_id == first.session.session_id
            assert gone.session.reason
            assert gone.session.disconnected_at is not None
            second = await next_of(stream, Connected)
            assert second.session.session_id != first.session.session_id
            assert second.protocol == generation
            second_socket = await our_socket(server, channels=1)
            assert second_socket != first_socket
            await server.emit("book_BTC_USD", "book_BTC_USD", [NEW_ORDER])
            update = await next_of(stream, BookUpdate)
            assert update.event.session_id == second.session.session_id
            assert_same_event(update, NEW_ORDER, "BTC_USD")
        stopped = await next_of(stream, Disconnected)
        assert (stopped.session.session_id, stopped.session.reason) == (
            second.session.session_id,
            "stopped",
        )
        await no_other_tasks()
        assert unclosed_sessions() <= sessions_before
    assert not [c for c in complaints if "nclosed" in c]


@contextlib.asynccontextmanager
async def failing_server(case: str) -> AsyncIterator[ExchangeConfig]:
    """An exchange configuration whose every connection attempt fails."""
    if case == "nothing listening":
        with refused_port() as port:
            yield ExchangeConfig(socket_url=f"http://127.0.0.1:{port}", request_timeout_s=5)
        return
    if case == "not a socket.io path":
        async with node_socketio_server("4") as server:
            yield ExchangeConfig(socket_url=server.url, socket_path="/admin/", request_timeout_s=5)
        return
    generation, protocol = {
        "2.x server, protocol 4": ("2", "4"),
        "4.x server, protocol 2": ("4", "2"),
    }[case]
    async with node_socketio_server(generation, **HEARTBEAT) as server:
        yield ExchangeConfig(socket_url=server.url, socketio_protocol=protocol, request_timeout_s=5)


@pytest.mark.parametrize(
    "case",
    [
        "nothing listening",
        "not a socket.io path",
        "2.x server, protocol 4",
        "4.x server, protocol 2",
    ],
)
async def test_failed_attempts_leave_no_session_and_no_task(case: str) -> None:
    with loop_complaints() as complaints:
        async with failing_server(case) as config:
            sessions_before = unclosed_sessions()  # the test's own, to drive the server
            stream = BookStream.from_config(config, ["BTC_USD"], backoff=QUICK, connections=1)
            async with running(stream):
                await eventually(lambda: stream.attempts >= 4, timeout_s=30, what="4 attempts")
                # Failed attempts do not pile up: at most the one under way holds a session.
                assert len(unclosed_sessions() - sessions_before) <= 1
            assert stream.connects == 0
            assert stream.items.empty()
            assert stream.protocol is None
            await no_other_tasks()
            assert unclosed_sessions() <= sessions_before
    assert not [c for c in complaints if "nclosed" in c], complaints


@pytest.mark.parametrize(
    ("generation", "options", "scheme"),
    [
        pytest.param("2", {"transports": ["websocket"]}, "http", id="sio2-websocket-only"),
        pytest.param("4", {"transports": ["websocket"]}, "http", id="sio4-websocket-only"),
        pytest.param("4", {"transports": ["websocket"], "cors": True}, "http", id="sio4-ws-cors"),
        pytest.param("2", {}, "ws", id="sio2-ws-url"),
        pytest.param("4", {}, "ws", id="sio4-ws-url"),
        pytest.param("4", {"allowEIO3": True}, "http", id="sio4-allowing-eio3"),
    ],
)
async def test_auto_finds_the_generation_of_every_kind_of_server(
    generation: str, options: dict[str, Any], scheme: str
) -> None:
    async with node_socketio_server(generation, **HEARTBEAT, **options) as server:
        url = server.url.replace("http://", f"{scheme}://")
        async with running(make_stream(url, "auto", ["BTC_USD"])) as stream:
            connected = await next_of(stream, Connected)
            assert connected.protocol == generation
            await our_socket(server, channels=1)
            await server.emit("book_BTC_USD", "book_BTC_USD", [NEW_ORDER])
            assert_same_event(await next_of(stream, BookUpdate), NEW_ORDER, "BTC_USD")


@pytest.mark.parametrize(("before", "after"), [("2", "4"), ("4", "2")])
async def test_a_server_of_the_other_generation_is_detected_at_the_next_connection(
    before: str, after: str
) -> None:
    # The first server binds a port of its own; the second comes up at the same address.
    async with contextlib.AsyncExitStack() as first_server:
        server = await first_server.enter_async_context(node_socketio_server(before, **HEARTBEAT))
        stream = make_stream(server.url, "auto", ["BTC_USD"])
        async with running(stream):
            assert (await next_of(stream, Connected)).protocol == before
            await our_socket(server, channels=1)
            await first_server.aclose()  # the server goes; the stream stays
            await next_of(stream, Disconnected)
            async with node_socketio_server(after, port=server.port, **HEARTBEAT) as server:
                connected = await next_of(stream, Connected, timeout_s=30)
                assert connected.protocol == stream.protocol == after
                assert sample("recorder_stream_info", protocol=after) == 1
                assert sample("recorder_stream_info", protocol=before) == 0
                await our_socket(server, channels=1)
                await server.emit("book_BTC_USD", "book_BTC_USD", [NEW_ORDER])
                assert_same_event(await next_of(stream, BookUpdate), NEW_ORDER, "BTC_USD")

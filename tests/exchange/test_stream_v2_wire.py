"""The socket.io 2 (Engine.IO v3) client against a scripted websocket server on loopback.

The Node servers (`test_stream_node.py`) behave well; this server misbehaves on purpose, in
the ways the client must survive: pongs that never come, events before the namespace join,
a refused namespace, binary packets, an Engine.IO close.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from aiohttp import WSMsgType, web

from recorder.exchange.classify import BookUpdate
from recorder.exchange.sio.connection import engineio_url
from recorder.exchange.sio.detect import generation_of_polling_answer
from recorder.exchange.stream import BookStream, Connected, Disconnected
from recorder.records import RawMessage
from tests.exchange.streams import (
    NEW_ORDER,
    QUICK,
    assert_same_event,
    next_of,
    running,
)
from tests.harness.ports import serving
from tests.harness.waiting import eventually

OPEN = '0{"sid":"abc","upgrades":[],"pingInterval":100,"pingTimeout":300}'
EVENT = f'42["book_BTC_USD",{NEW_ORDER}]'


@dataclass
class Script:
    """What the server does on each connection, and what it saw."""

    before_join: list[str] = field(default_factory=list)
    join: str = "40"
    after_join: list[str] = field(default_factory=list)
    answer_pings: bool = True
    received: list[str] = field(default_factory=list)
    queries: list[dict[str, str]] = field(default_factory=list)
    sockets: list[web.WebSocketResponse] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        self.queries.append(dict(request.query))
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self.sockets.append(ws)
        for text in [OPEN, *self.before_join, self.join, *self.after_join]:
            if text.startswith("bin:"):
                await ws.send_bytes(text[4:].encode())
            else:
                await ws.send_str(text)
        async for message in ws:
            if message.type is not WSMsgType.TEXT:
                continue
            self.received.append(message.data)
            if message.data == "2" and self.answer_pings:
                await ws.send_str("3")
        return ws

    async def send(self, text: str) -> None:
        for ws in self.sockets:
            if not ws.closed:
                await ws.send_str(text)


@contextlib.asynccontextmanager
async def scripted(script: Script) -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_get("/socket.io/", script.handle)
    async with serving(app) as url:
        try:
            yield url
        finally:
            for ws in script.sockets:
                await ws.close()


def v2_stream(url: str) -> BookStream:
    return BookStream(url, socketio_protocol="2", pairs=["BTC_USD"], backoff=QUICK)


async def test_speaks_engineio_v3_pings_and_subscribes() -> None:
    script = Script()
    async with scripted(script) as url, running(v2_stream(url)) as stream:
        connected = await next_of(stream, Connected)
        assert connected.protocol == "2"
        await eventually(lambda: script.received.count("2") >= 3, what="three pings")
        assert script.queries[0] == {"EIO": "3", "transport": "websocket"}
        assert script.received[0] == '42["subscribe","book_BTC_USD"]'
        assert set(script.received[1:]) == {"2"}  # nothing but pings after subscribing
        await script.send(EVENT)
        assert_same_event(await next_of(stream, BookUpdate), NEW_ORDER, "BTC_USD")


async def test_a_pong_that_never_comes_ends_the_session() -> None:
    script = Script(answer_pings=False)
    async with scripted(script) as url, running(v2_stream(url)) as stream:
        first = await next_of(stream, Connected)
        gone = await next_of(stream, Disconnected)
        assert (gone.session.session_id, gone.session.reason) == (
            first.session.session_id,
            "ping timeout",
        )
        # It was the missing pong: the session lasted one ping interval plus the timeout.
        assert gone.session.disconnected_at is not None
        lasted_s = (gone.session.disconnected_at - gone.session.connected_at).total_seconds()
        assert 0.35 <= lasted_s < 5
        await next_of(stream, Connected)


async def test_events_before_the_join_follow_connected_in_order() -> None:
    early = EVENT.replace("15234", "1")
    script = Script(before_join=["3", early], after_join=[EVENT])
    async with scripted(script) as url, running(v2_stream(url)) as stream:
        await next_of(stream, Connected)
        assert (await next_of(stream, BookUpdate)).event.oid == 1
        assert (await next_of(stream, BookUpdate)).event.oid == 15234


@pytest.mark.parametrize("join", ['44"not allowed"', "41", "1"])
async def test_a_refused_join_is_a_failed_attempt(join: str) -> None:
    script = Script(join=join)
    async with scripted(script) as url, running(v2_stream(url)) as stream:
        await eventually(lambda: stream.attempts >= 3, what="three attempts")
        assert stream.connects == 0
        assert stream.items.empty()


@pytest.mark.parametrize(
    ("packet", "reason"),
    [
        ('451-["book_BTC_USD",{"_placeholder":true,"num":0}]', "binary socket.io packets"),
        ('44"overloaded"', "socket.io error packet"),
        ('4{"no": "packet"', "undecodable packet"),
        ("7whatever", "unknown Engine.IO packet"),
    ],
)
async def test_packets_the_client_cannot_read_are_kept_raw(packet: str, reason: str) -> None:
    script = Script(after_join=[packet, "bin:\x04attachment", EVENT])
    async with scripted(script) as url, running(v2_stream(url)) as stream:
        await next_of(stream, Connected)
        raw = await next_of(stream, RawMessage)
        assert reason in raw.error
        assert raw.payload in (packet, packet[1:])  # the Engine.IO or socket.io packet text
        assert_same_event(await next_of(stream, BookUpdate), NEW_ORDER, "BTC_USD")
        assert stream.items.empty()


@pytest.mark.parametrize(
    ("packet", "reason"), [("1", "server disconnect"), ("41", "server disconnect")]
)
async def test_the_server_ending_the_session_is_a_disconnect(packet: str, reason: str) -> None:
    script = Script()
    async with scripted(script) as url, running(v2_stream(url)) as stream:
        first = await next_of(stream, Connected)
        await eventually(lambda: script.received, what="the subscription")
        await script.send(packet)
        gone = await next_of(stream, Disconnected)
        assert (gone.session.session_id, gone.session.reason) == (first.session.session_id, reason)
        await next_of(stream, Connected)


# --- pure parts ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "generation"),
    [
        ('0{"sid":"x","upgrades":["websocket"],"pingInterval":25000}', "4"),
        ('96:0{"sid":"x","upgrades":["websocket"],"pingInterval":25000}2:40', "2"),
        ('97:0{"sid":"x"}', "2"),
        ("<html>not found</html>", None),
        ('{"code":0,"message":"Transport unknown"}', None),
        ("", None),
    ],
)
def test_the_polling_answer_tells_the_generation(body: str, generation: str | None) -> None:
    assert generation_of_polling_answer(body) == generation


@pytest.mark.parametrize(
    ("url", "path", "transport", "expected"),
    [
        ("wss://bitexbit.com", "/socket.io/", "websocket", "wss://bitexbit.com/socket.io/"),
        ("wss://bitexbit.com", "/socket.io/", "polling", "https://bitexbit.com/socket.io/"),
        ("https://x:8443", "socket.io", "websocket", "wss://x:8443/socket.io/"),
        ("http://127.0.0.1:81", "/a/b", "polling", "http://127.0.0.1:81/a/b/"),
        ("ws://[::1]:81", "/", "websocket", "ws://[::1]:81/"),
    ],
)
def test_engineio_urls_follow_the_transport(
    url: str, path: str, transport: str, expected: str
) -> None:
    assert engineio_url(url, path, eio=3, transport=transport) == (
        f"{expected}?EIO=3&transport={transport}"
    )


async def test_stopping_during_a_hanging_handshake_leaves_nothing() -> None:
    # A server that accepts the websocket and then says nothing: the stop must not wait.
    hanging = asyncio.Event()

    async def silent(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        hanging.set()
        async for _ in ws:
            pass
        return ws

    app = web.Application()
    app.router.add_get("/socket.io/", silent)
    async with serving(app) as url:
        stream = v2_stream(url)
        async with running(stream):
            await asyncio.wait_for(hanging.wait(), 10)
        assert stream.items.empty()
        await eventually(
            lambda: not (asyncio.all_tasks() - {asyncio.current_task()}), what="no task left"
        )

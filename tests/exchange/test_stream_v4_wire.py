"""The socket.io 4 client's websocket read loop against a scripted Engine.IO v4 server.

The Node servers (`test_stream_node.py`, `test_slow_reader.py`) keep their heartbeat; this
server stops it on purpose: the read loop (`sio.v4._EngineIO`) must give up on a server that
sends nothing for its read window, keep a connection whose server sends events but no
pings, and read a burst longer than its batch in order, answering a ping inside it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from aiohttp import WSMsgType, web

from recorder.exchange.classify import BookUpdate
from recorder.exchange.sio.v4 import READ_BATCH
from recorder.exchange.stream import BookStream, Connected, Disconnected
from tests.exchange.streams import NEW_ORDER, QUICK, assert_same_event, next_of, running
from tests.harness.ports import serving
from tests.harness.waiting import eventually

PING_INTERVAL_MS, PING_TIMEOUT_MS = 100, 200
OPEN = (
    '0{"sid":"eio","upgrades":[],'
    f'"pingInterval":{PING_INTERVAL_MS},"pingTimeout":{PING_TIMEOUT_MS},"maxPayload":1000000}}'
)
READ_WINDOW_S = (2 * PING_INTERVAL_MS + PING_TIMEOUT_MS) / 1000
"""How long the client waits for any message before it gives up (`sio.v4._EngineIO`)."""


def event(oid: int) -> str:
    payload = NEW_ORDER.replace("15234", str(oid))
    return f'42["book_BTC_USD",{payload}]'


@dataclass
class Script:
    """An Engine.IO v4 server that joins the client, then sends only what a test tells it."""

    received: list[str] = field(default_factory=list)
    sockets: list[web.WebSocketResponse] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        assert request.query["EIO"] == "4"
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self.sockets.append(ws)
        await ws.send_str(OPEN)
        async for message in ws:
            if message.type is not WSMsgType.TEXT:
                continue
            self.received.append(message.data)
            if message.data.startswith("40"):  # the namespace CONNECT, with its auth
                await ws.send_str('40{"sid":"sio"}')
        return ws

    async def send(self, *texts: str) -> None:
        ws = self.sockets[-1]
        for text in texts:
            await ws.send_str(text)


@contextlib.asynccontextmanager
async def scripted(script: Script) -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_get("/socket.io/", script.handle)
    async with serving(app) as url:
        try:
            yield url.replace("http://", "ws://")  # a websocket straight away, no polling
        finally:
            for ws in script.sockets:
                await ws.close()


def v4_stream(url: str) -> BookStream:
    return BookStream(url, socketio_protocol="4", pairs=["BTC_USD"], backoff=QUICK)


async def subscribed(script: Script, stream: BookStream) -> Connected:
    connected = await next_of(stream, Connected)
    subscription = '42["subscribe","book_BTC_USD"]'
    await eventually(lambda: subscription in script.received, what="the subscription")
    return connected


async def test_a_server_that_sends_nothing_is_given_up_after_the_read_window() -> None:
    script = Script()
    async with scripted(script) as url, running(v4_stream(url)) as stream:
        first = await subscribed(script, stream)
        gone = await next_of(stream, Disconnected)
        assert (gone.session.session_id, gone.session.reason) == (
            first.session.session_id,
            "transport error",
        )
        assert gone.session.disconnected_at is not None
        lasted_s = (gone.session.disconnected_at - first.session.connected_at).total_seconds()
        assert READ_WINDOW_S <= lasted_s < 5
        await next_of(stream, Connected)  # and it connects again


async def test_events_without_pings_keep_the_connection() -> None:
    script = Script()
    async with scripted(script) as url, running(v4_stream(url)) as stream:
        await subscribed(script, stream)
        loop = asyncio.get_running_loop()
        until = loop.time() + 4 * READ_WINDOW_S
        oid = 0
        while loop.time() < until:  # an event every quarter of the window, no ping
            oid += 1
            await script.send(event(oid))
            update = await next_of(stream, BookUpdate)
            assert update.event.oid == oid
            await asyncio.sleep(READ_WINDOW_S / 4)
        assert oid >= 8
        assert stream.items.empty(), "no Disconnected: any message is a sign of life"
        assert len(script.sockets) == 1


async def test_a_burst_longer_than_a_batch_is_read_in_order_and_its_ping_answered() -> None:
    script = Script()
    count = 3 * READ_BATCH + 7
    async with scripted(script) as url, running(v4_stream(url)) as stream:
        await subscribed(script, stream)
        texts = [event(oid) for oid in range(1, count + 1)]
        middle = count // 2
        await script.send(*texts[:middle], "2", *texts[middle:])
        for oid in range(1, count + 1):
            update = await next_of(stream, BookUpdate)
            assert update.event.oid == oid
            if oid == 1:
                assert_same_event(update, NEW_ORDER.replace("15234", "1"), "BTC_USD")
        await eventually(lambda: "3" in script.received, what="the pong")
        assert stream.items.empty()

"""A minimal real exchange on loopback for the client's tests: aiohttp REST + socket.io.

Not the project's simulator: just enough of the exchange's REST and socket.io API to talk
to over real sockets. Tests set the exact body text of each route (so they control how
numbers are written), queue faults per path (a status, a delay, a truncated body), grow
the trade tape between requests, and push socket.io events (also raw, malformed packets)
to subscribers.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import socketio
from aiohttp import web

from tests.harness.ports import serve


@dataclass
class Fault:
    """One answer that replaces the route's normal one, once."""

    status: int = 200
    body: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    truncate: bool = False
    """Announce a longer body than is sent, then close the connection."""
    held: asyncio.Event | None = None
    """The answer waits until this is set: a slow answer that ends when the test says."""


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    form: dict[str, str]
    at_s: float


class FakeExchange:
    def __init__(self) -> None:
        self.app = web.Application()
        self.sio = socketio.AsyncServer(async_mode="aiohttp", logger=False, engineio_logger=False)
        self.sio.attach(self.app, socketio_path="socket.io")
        self.app.router.add_route("*", "/api/{tail:.*}", self._handle)
        self.bodies: dict[str, str] = {}
        self.faults: dict[str, list[Fault]] = {}
        self.seen: list[Seen] = []
        self.trades: list[dict[str, Any]] = []
        self.before_trades: Callable[[Seen], None] | None = None
        self.subscriptions: list[tuple[str, str]] = []
        self.connected: list[str] = []
        self.subscribed = asyncio.Event()
        self.deaf: set[str] = set()
        """Connections whose subscriptions are taken but never served (a stuck room)."""
        self._runner: web.AppRunner | None = None
        self.url = ""

        @self.sio.event
        async def connect(sid: str, environ: Any, auth: Any = None) -> None:
            self.connected.append(sid)

        @self.sio.event
        async def disconnect(sid: str, reason: Any = None) -> None:
            if sid in self.connected:
                self.connected.remove(sid)

        @self.sio.event
        async def subscribe(sid: str, channel: Any) -> None:
            self.subscriptions.append((sid, str(channel)))
            if sid not in self.deaf:
                await self.sio.enter_room(sid, str(channel))
            self.subscribed.set()

    async def start(self, port: int = 0) -> str:
        self._runner, self.url = await serve(self.app, port)
        return self.url

    async def stop(self) -> None:
        await self.kick_all()
        if self._runner is not None:
            await self._runner.cleanup()

    # --- REST -------------------------------------------------------------------------------

    def fail(self, path: str, *faults: Fault) -> None:
        self.faults.setdefault(path, []).extend(faults)

    def requests_to(self, path: str) -> list[Seen]:
        return [s for s in self.seen if s.path == path]

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        form = {k: str(v) for k, v in (await request.post()).items()}
        seen = Seen(
            request.method,
            request.path,
            dict(request.query),
            dict(request.headers),
            form,
            time.monotonic(),
        )
        self.seen.append(seen)
        queue = self.faults.get(request.path)
        if queue:
            return await self._fault(request, queue.pop(0))
        if request.path == "/api/v1/exchanges/":
            return self._trades(seen)
        if request.path in self.bodies:
            return web.Response(text=self.bodies[request.path], content_type="application/json")
        return web.json_response({"detail": "Not found."}, status=404)

    async def _fault(self, request: web.Request, fault: Fault) -> web.StreamResponse:
        if fault.delay_s:
            await asyncio.sleep(fault.delay_s)
        if fault.held is not None:
            await fault.held.wait()
        if fault.truncate:
            response = web.StreamResponse(status=200)
            response.content_length = len(fault.body) + 100
            response.content_type = "application/json"
            await response.prepare(request)
            await response.write(fault.body.encode())
            assert request.transport is not None
            request.transport.close()
            return response
        return web.Response(
            status=fault.status, text=fault.body, headers=fault.headers, content_type="text/html"
        )

    def _trades(self, seen: Seen) -> web.Response:
        if self.before_trades is not None:
            self.before_trades(seen)
        q = seen.query
        rows = [t for t in self.trades if "pair" not in q or t["pair"] == q["pair"]]
        rows.sort(key=lambda t: t["id"], reverse=q.get("ordering", "-id") == "-id")
        offset = int(q.get("offset", 0))
        limit = int(q.get("limit", 100))
        return web.json_response(rows[offset : offset + limit])

    def add_trade(self, pair: str, tid: int | None = None) -> int:
        tid = tid if tid is not None else max((t["id"] for t in self.trades), default=0) + 1
        self.trades.append(
            {
                "id": tid,
                "pair": pair,
                "type": "buy",
                "price": "100.5",
                "amount": "0.1",
                "timestamp": 1700000000 + tid,
            }
        )
        return tid

    # --- socket.io --------------------------------------------------------------------------

    async def emit(self, pair: str, payload: Any) -> None:
        await self.sio.emit(f"book_{pair}", payload, room=f"book_{pair}")

    async def send_raw(self, packet_text: str) -> None:
        """A socket.io packet exactly as given (`2[...]`), to every connected client."""
        for sid in list(self.connected):
            eio_sid = self.sio.manager.eio_sid_from_sid(sid, "/")
            await self.sio.eio.send(eio_sid, packet_text)

    async def silence(self, sid: str, pair: str) -> None:
        """Stop sending `pair` to one connection without telling it; it stays connected."""
        self.deaf.add(sid)
        await self.sio.leave_room(sid, f"book_{pair}")

    async def kick(self, sid: str) -> None:
        """Drop one connection."""
        if sid in self.connected:
            self.connected.remove(sid)
            await self.sio.disconnect(sid)

    async def kick_all(self) -> None:
        for sid in list(self.connected):
            self.connected.remove(sid)
            await self.sio.disconnect(sid)

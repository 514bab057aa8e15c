"""A socket.io 1.x/2.x client (Engine.IO v3 over a websocket): the generation of the docs.

The exchange's docs (January 2017) say the API is built on "the latest version of
socket.io", which then was 1.x, soon 2.x: Engine.IO v3, a wire that python-socketio 5 (the
v4 client in `v4.py`) does not speak. Why a client of our own rather than a library:

- python-socketio 4.x spoke v3 but cannot be installed beside 5.x (same import name); its
  repackagings on PyPI are one-off copies of that unmaintained 2020 code, and the other
  Python socket.io v2 clients (socketIO-client and forks) are unmaintained since 2017-2019
  and synchronous.
- What a subscriber needs of the v3 wire is small and fixed: open a websocket, read the open
  packet, send heartbeats, send one event per channel, read event packets. aiohttp (already
  our HTTP client) provides the websocket; the socket.io packet layer is python-socketio's,
  through `ExactPacket` (exact decimals, the event's JSON text kept), exactly as on the v4
  path. Tests run it against real Node socket.io 2.x servers (`tests/node/`).

The wire, as socket.io 2.x servers speak it:

- `GET {path}?EIO=3&transport=websocket` upgrades to a websocket; the server's first
  message is the open packet `0{"sid":..,"pingInterval":25000,"pingTimeout":5000,..}`.
- The server joins the client to the default namespace unasked: `40` follows. (socket.io
  3+/Engine.IO v4 waits for the client's `40` instead.)
- Heartbeats are the client's: it sends `2` (ping) every pingInterval and the server
  answers `3` (pong). As in socket.io's own client (engine.io-client 3), any packet counts
  as a sign of life, not only the pong: the connection is dead when nothing at all came
  within pingTimeout of a ping. A recorder reading behind its socket reads the pong late,
  behind what the server sent before it; the packets before it are read meanwhile. The
  server, for its part, closes a connection that sent nothing for pingInterval +
  pingTimeout, so the reader yields to the heartbeat every `READ_BATCH` messages.
  (Engine.IO v4 reversed the direction: the server pings, the client pongs.)
- Messages are `4` + a socket.io packet: `42["book_BTC_USD",{...}]` is an event, `41` the
  server ending the namespace, `44` an error; `1` closes the Engine.IO connection.

Only the websocket transport is spoken, as the docs' `wss://` address suggests; long-polling
would be a second transport for no gain. Binary packets (socket.io attachments) carry no
book data and are kept as raw messages.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, Final

import aiohttp

from recorder.exchange.sio.connection import (
    ConnectFailed,
    ConnectionLost,
    Generation,
    OnEvent,
    OnOpen,
    engineio_url,
    future_reason,
    resolve,
)
from recorder.exchange.sio.packets import (
    EVENT,
    PLAIN_EVENT,
    ExactPacket,
    Received,
    event_text,
)
from recorder.logs import get_logger

log = get_logger(__name__)

# Engine.IO v3 packet types (the first character of every message).
OPEN, CLOSE, PING, PONG, MESSAGE, UPGRADE, NOOP = "0123456"
# socket.io packet types (the first character after MESSAGE).
SIO_CONNECT, SIO_DISCONNECT, SIO_EVENT, SIO_ACK, SIO_ERROR = "01234"
DEFAULT_NAMESPACE = (None, "/")

READ_BATCH = 100
"""Messages read in a row before the reader lets the other tasks (the heartbeat) run.

aiohttp hands over what is buffered without suspending, up to 256 KiB at a time: a busy
recorder would otherwise hold the event loop for seconds in a burst."""


class SocketIO2Connection:
    """One Engine.IO v3 websocket connection to a socket.io 1.x/2.x server."""

    protocol: Final[Generation] = "2"

    def __init__(
        self,
        socket_url: str,
        *,
        path: str,
        timeout_s: float,
        on_open: OnOpen,
        on_event: OnEvent,
    ) -> None:
        self.url = engineio_url(socket_url, path, eio=3, transport="websocket")
        self._timeout_s = timeout_s
        self._on_open = on_open
        self._on_event = on_event
        self.closed: asyncio.Future[str] = future_reason()
        self.ping_interval_s = 0.0
        self.ping_timeout_s = 0.0
        self.engine_id = ""
        self._http: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._heard = asyncio.Event()
        """Set by every message read; cleared by each ping sent."""

    # --- connecting --------------------------------------------------------------------------

    async def connect(self) -> None:
        early: list[str] = []
        try:
            async with asyncio.timeout(self._timeout_s):
                self._http = aiohttp.ClientSession()
                self._ws = await self._http.ws_connect(
                    self.url,
                    autoping=True,
                    timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=self._timeout_s),
                )
                self._read_open_packet(await self._next_text())
                await self._join(early)
        except TimeoutError:
            await self.close()
            raise ConnectFailed(f"no socket.io 2 session within {self._timeout_s}s") from None
        except aiohttp.WSServerHandshakeError as exc:
            await self.close()
            raise ConnectFailed(_refusal(exc)) from None
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            await self.close()
            raise ConnectFailed(f"{type(exc).__name__}: {exc}") from None
        except BaseException:  # ConnectFailed, or cancelled: release what was opened
            await self.close()
            raise
        self._on_open()
        for text in early:  # what arrived between the open packet and the join, in order
            self._handle(text)
        self._tasks = [
            asyncio.create_task(self._read(), name="socket.io-2 reader"),
            asyncio.create_task(self._heartbeat(), name="socket.io-2 heartbeat"),
        ]

    async def _next_text(self) -> str:
        assert self._ws is not None
        while True:
            message = await self._ws.receive()
            if message.type is aiohttp.WSMsgType.TEXT:
                text: str = message.data
                return text
            if message.type is not aiohttp.WSMsgType.BINARY:
                # socket.io 4.x servers answer an Engine.IO v3 client like this: they accept
                # the upgrade, then write an HTTP 400 into it (unless they allow v3 clients).
                detail = f": {message.data}" if message.data else ""
                raise ConnectFailed(
                    f"the websocket ended before the socket.io 2 handshake"
                    f" ({message.type.name}{detail}); not a socket.io 1.x/2.x server?"
                )

    def _read_open_packet(self, text: str) -> None:
        if not text.startswith(OPEN):
            raise ConnectFailed(f"not an Engine.IO open packet: {_short(text)}")
        try:
            handshake = json.loads(text[1:])
            self.engine_id = str(handshake["sid"])
            self.ping_interval_s = int(handshake["pingInterval"]) / 1000
            self.ping_timeout_s = int(handshake["pingTimeout"]) / 1000
        except (ValueError, KeyError, TypeError) as exc:
            raise ConnectFailed(f"bad Engine.IO open packet {_short(text)}: {exc!r}") from None
        if self.ping_interval_s <= 0 or self.ping_timeout_s <= 0:
            raise ConnectFailed(f"bad heartbeat times in the open packet: {_short(text)}")

    async def _join(self, early: list[str]) -> None:
        """Wait for the server's `40`; hold back anything else that comes first."""
        while True:
            text = await self._next_text()
            if text == MESSAGE + SIO_CONNECT:
                return
            if text.startswith(MESSAGE + SIO_ERROR) or text.startswith(MESSAGE + SIO_DISCONNECT):
                raise ConnectFailed(f"the server refused the namespace: {_short(text)}")
            if text.startswith(CLOSE):
                raise ConnectFailed("the server closed the Engine.IO session")
            if text[:1] not in (PING, PONG, NOOP):
                early.append(text)

    # --- the live connection -----------------------------------------------------------------

    async def emit(self, event: str, data: Any) -> None:
        ws = self._ws
        if ws is None or ws.closed or self.closed.done():
            raise ConnectionLost("not connected")
        try:
            await ws.send_str(MESSAGE + event_text(event, data))
        except (aiohttp.ClientError, ConnectionError) as exc:
            raise ConnectionLost(str(exc)) from None

    async def _read(self) -> None:
        assert self._ws is not None
        reason = "transport close"
        try:
            read = 0
            async for message in self._ws:
                self._heard.set()
                read += 1
                if read % READ_BATCH == 0:
                    await asyncio.sleep(0)
                if message.type is aiohttp.WSMsgType.TEXT:
                    text: str = message.data
                    if text[:1] == PING:  # not a v3 server's habit; answering costs nothing
                        await self._ws.send_str(PONG + text[1:])
                        continue
                    ended = self._handle(text)
                    if ended is not None:
                        reason = ended
                        break
                elif message.type is aiohttp.WSMsgType.ERROR:
                    reason = f"transport error: {self._ws.exception()}"
                    break
                # BINARY: attachments of a binary packet, which is kept raw without them.
        except (aiohttp.ClientError, ConnectionError) as exc:
            reason = f"transport error: {exc}"
        resolve(self.closed, reason)

    def _handle(self, text: str) -> str | None:
        """One Engine.IO message; the reason the connection ends, if it does."""
        kind, body = text[:1], text[1:]
        if kind == MESSAGE:
            return self._socketio_packet(body)
        if kind == CLOSE:
            return "server disconnect"
        if kind not in (OPEN, PING, PONG, UPGRADE, NOOP):
            self._on_event(Received(None, [], text, f"unknown Engine.IO packet {_short(text)}"))
        return None

    def _socketio_packet(self, text: str) -> str | None:
        if text.startswith(PLAIN_EVENT):  # every book event: decoded when the stream reads it
            self._on_event(Received.of_text(text[1:]))
            return None
        try:
            packet = ExactPacket(encoded_packet=text)
        except Exception as exc:  # a malformed non-event packet: keep it, go on
            self._on_event(Received(None, [], text, f"undecodable packet: {exc}"))
            return None
        if packet.namespace not in DEFAULT_NAMESPACE:
            return None  # never joined: the v4 client drops these too
        if packet.packet_type == EVENT:
            received = packet.data[1]  # ExactPacket puts a Received after the event name
            assert isinstance(received, Received)
            self._on_event(received)
        elif text[:1] == SIO_DISCONNECT:
            return "server disconnect"
        elif text[:1] == SIO_ERROR:
            self._on_event(Received(None, [], text, "socket.io error packet"))
        elif text[:1] not in (SIO_CONNECT, SIO_ACK):
            self._on_event(Received(None, [], text, "binary socket.io packets are not read"))
        return None

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.ping_interval_s)
            self._heard.clear()
            try:
                assert self._ws is not None
                await self._ws.send_str(PING)
            except (aiohttp.ClientError, ConnectionError) as exc:
                resolve(self.closed, f"transport error: {exc}")
                return
            try:
                await asyncio.wait_for(self._heard.wait(), self.ping_timeout_s)
            except TimeoutError:
                resolve(self.closed, "ping timeout")
                return

    # --- closing -----------------------------------------------------------------------------

    async def close(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
        ws, self._ws = self._ws, None
        if ws is not None and not ws.closed:
            try:
                async with asyncio.timeout(self._timeout_s):
                    await ws.close()
            except (TimeoutError, aiohttp.ClientError, ConnectionError) as exc:
                log.debug("socket.io 2 websocket close failed", error=str(exc))
        http, self._http = self._http, None
        if http is not None:
            await http.close()
        resolve(self.closed, "client disconnect")


def _refusal(exc: aiohttp.WSServerHandshakeError) -> str:
    if exc.status == 400:
        # What a socket.io 3.x/4.x server answers an Engine.IO v3 client (unless allowEIO3).
        return "the server refused Engine.IO v3 (HTTP 400): not a socket.io 1.x/2.x server?"
    return f"websocket refused: HTTP {exc.status} {exc.message}"


def _short(text: str) -> str:
    return repr(text) if len(text) <= 80 else repr(text[:77] + "...")

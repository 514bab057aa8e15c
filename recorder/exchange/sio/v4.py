"""A socket.io 3.x/4.x client (Engine.IO v4), through python-socketio's `AsyncClient`.

The library does the protocol (handshake, the server-driven heartbeat, packets); this
module fits it to `Connection` and keeps three things ours:

- exact decoding, through `ExactPacket` as the library's serializer;
- the aiohttp session: the library makes one per client and leaves it open when a
  handshake fails in some ways (an answer it cannot decode, such as an Engine.IO v3 server's),
  so we hand it a session we own and close it in `close()`, whatever happened;
- cancellation and timeouts: `connect()` is bounded by `timeout_s` as a whole (the
  library's websocket connect has no timeout of its own), and `close()` ends the
  library's background tasks even when its own disconnect cannot run;
- patience with a reader that lags behind its socket, and the websocket read loop: book
  events handled in it rather than one task each, messages read in batches without a
  timer each (`_EngineIO`).

Long-polling first, then the upgrade to a websocket, is the library's default and works
through proxies that refuse websockets; `websocket_only` skips polling for servers that
refuse it (and for a `ws(s)://` address, which asks for a websocket).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any, Final

import aiohttp
import engineio  # type: ignore[import-untyped]
import socketio  # type: ignore[import-untyped]
from engineio import base_client as engineio_base
from engineio import packet as engineio_packet

from recorder.exchange.sio.connection import (
    ConnectFailed,
    ConnectionLost,
    Generation,
    OnEvent,
    OnOpen,
    future_reason,
    resolve,
)
from recorder.exchange.sio.packets import (
    PLAIN_EVENT,
    ExactPacket,
    Received,
    _ExactJson,
)
from recorder.logs import get_logger

log = get_logger(__name__)


def _raise_if_cancelling() -> None:
    """Honour a cancellation that the library swallowed.

    `AsyncClient.connect` waits with `asyncio.wait_for`, which on Python 3.11 can drop a
    cancel that arrives just as the connection completes; the task still counts it, so a
    stream being stopped would otherwise go on for ever.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


class _EngineIO(engineio.AsyncClient):  # type: ignore[misc]
    """python-engineio's client, with three changes.

    Book events in the read loop. The library runs every message as a task of its own
    (python-socketio then decodes and dispatches it), which costs more than our handling of
    a book event (docs/benchmarks.md, "The event path, lean"). Once the namespace is joined,
    `on_plain_event` takes each `2[...]` packet (an event without namespace, ack id or
    attachments: every book event) right in the read loop, in wire order. Every other
    packet takes the library's way: a socket.io DISCONNECT, for one, ends in
    `eio.disconnect()`, which waits for the read loop itself.

    A read loop of our own for the websocket (`_read_loop_websocket`): the library's waits
    for each message with `asyncio.wait_for`, a task and a timer per message, which cost
    about as much as our handling of a book event. Ours reads what aiohttp has buffered
    without suspending, under one deadline renewed at most once a second (`_LIVENESS_STEP_S`)
    rather than per message, and lets the other tasks (the write loop with its pongs, the
    book consumer) run every `READ_BATCH` messages. Any message is a sign of life, as in
    socket.io's own client; what ends the loop, and how, is the library's. (Long-polling,
    where a proxy refuses websockets, keeps the library's read loop.)

    Patience with a lagging reader: it gives up on a connection no sooner than the server.
    Once subscribed, the client's only packet to send is its pong to the server's ping,
    queued when the ping is read. The library ends a connection that queued nothing for
    max(pingInterval, pingTimeout) + 5 s: with socket.io's defaults (25 s, 20 s), a ping
    read more than 5 s late. While the recorder reads behind its socket (a burst, a full
    core), every ping waits behind what the server sent before it, so every connection
    would drop at once, although the server itself waits pingTimeout for the pong.
    `tests/exchange/test_slow_reader.py` shows it against a Node socket.io 4 server.

    The library reads the server's pingTimeout back from `ping_timeout` for its timeouts
    only; here that reads pingInterval + pingTimeout. The write side then waits
    pingInterval + pingTimeout + 5 s: a ping may be read up to pingTimeout + 5 s late, more
    than the server allows. The read side (no packet at all) waits 2 x pingInterval +
    pingTimeout (70 s with the defaults, 45 s before), since a ping may also arrive that late.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._server_ping_timeout: float | None = None
        self.on_plain_event: Callable[[str], None] | None = None
        """Takes a `2[...]` packet's JSON text (`[...]`). Set once the namespace is joined
        (before that, the library's order is kept)."""
        super().__init__(*args, **kwargs)

    async def _receive_packet(self, pkt: Any) -> None:
        handle = self.on_plain_event
        text = pkt.data
        if (
            handle is None
            or pkt.packet_type != engineio_packet.MESSAGE
            or not isinstance(text, str)
            or not text.startswith(PLAIN_EVENT)
        ):
            await super()._receive_packet(pkt)
            return
        try:
            handle(text[1:])
        except Exception:  # as the library does for a handler: the connection goes on
            log.exception("socket.io 4 event handler failed")

    async def _read_loop_websocket(self) -> None:
        loop = asyncio.get_running_loop()
        window = float(self.ping_interval + self.ping_timeout)
        try:
            async with asyncio.timeout_at(loop.time() + window) as deadline:
                await self._read_websocket(loop, deadline, window)
        except TimeoutError:
            log.warning("socket.io 4 server silent", silent_for_s=window)
            await self.queue.put(None)
        # What the library does when its read loop ends: unchanged.
        if self.write_loop_task:
            await self.write_loop_task
        if self.state == "connected":
            await self._trigger_event("disconnect", self.reason.TRANSPORT_ERROR, run_async=False)
            with contextlib.suppress(ValueError):
                engineio_base.connected_clients.remove(self)
            await self._reset()

    async def _read_websocket(
        self, loop: asyncio.AbstractEventLoop, deadline: asyncio.Timeout, window: float
    ) -> None:
        ws = self.ws
        step = min(_LIVENESS_STEP_S, window / 8)
        renewed = loop.time()
        read = 0
        while self.state == "connected" and self.write_loop_task:
            try:
                message = await ws.receive()
            except Exception as exc:  # the library's answer to any failure: the end
                log.info("socket.io 4 websocket read failed", error=repr(exc))
                await self.queue.put(None)
                return
            now = loop.time()
            if now - renewed > step:
                renewed = now
                deadline.reschedule(now + window)
            read += 1
            if read % READ_BATCH == 0:
                await asyncio.sleep(0)
            text = message.data
            if isinstance(text, str):
                handle = self.on_plain_event
                if handle is not None and text.startswith(_PLAIN_EVENT_MESSAGE):
                    try:
                        handle(text[2:])
                    except Exception:  # as the library does for a handler: the connection goes on
                        log.exception("socket.io 4 event handler failed")
                    continue
            elif not isinstance(text, bytes):  # closed, closing, an error
                log.info("socket.io 4 websocket ended", message=message.type.name)
                await self.queue.put(None)
                return
            try:
                pkt = engineio_packet.Packet(encoded_packet=text)
            except Exception as exc:
                log.info("undecodable Engine.IO packet, connection ended", error=repr(exc))
                await self.queue.put(None)
                return
            await self._receive_packet(pkt)

    @property
    def ping_timeout(self) -> float | None:
        if self._server_ping_timeout is None or self.ping_interval is None:
            return self._server_ping_timeout
        return float(self.ping_interval) + self._server_ping_timeout

    @ping_timeout.setter
    def ping_timeout(self, seconds: float | None) -> None:
        self._server_ping_timeout = seconds


READ_BATCH = 100
"""Messages read in a row before the reader lets the other tasks run (as in `v2.py`)."""

_LIVENESS_STEP_S = 1.0
"""How often, at most, a message moves the read deadline: a server silent for the read
window (see `_EngineIO`) is given up on at most this much later (an eighth of the window
when that is shorter, as in tests with a heartbeat of milliseconds)."""

_PLAIN_EVENT_MESSAGE = str(engineio_packet.MESSAGE) + PLAIN_EVENT
"""An Engine.IO message holding a `2[...]` socket.io packet: `42[...]`."""


class _Client(socketio.AsyncClient):  # type: ignore[misc]
    eio: _EngineIO

    def _engineio_client_class(self) -> type[engineio.AsyncClient]:
        return _EngineIO


class SocketIO4Connection:
    """One python-socketio client connection to a socket.io 3.x/4.x server."""

    protocol: Final[Generation] = "4"

    def __init__(
        self,
        socket_url: str,
        *,
        path: str,
        timeout_s: float,
        on_open: OnOpen,
        on_event: OnEvent,
        websocket_only: bool = False,
    ) -> None:
        self.socket_url = socket_url
        self._path = path
        self._timeout_s = timeout_s
        self._on_open = on_open
        self._on_event = on_event
        self._transports = ["websocket"] if websocket_only else None
        self.closed: asyncio.Future[str] = future_reason()
        self._http: aiohttp.ClientSession | None = None
        self._client: _Client | None = None

    def new_client(self) -> _Client:
        """The python-socketio client of this connection, its handlers registered (not yet
        connected; `bench/event_path.py` feeds one packet texts without a socket)."""
        self._http = self._http or aiohttp.ClientSession()
        # handle_sigint=False: the library would otherwise take over SIGINT (and disconnect
        # by itself); stopping is the daemon's business, which drains before it disconnects.
        client = _Client(
            reconnection=False,
            serializer=ExactPacket,
            logger=False,
            engineio_logger=False,
            handle_sigint=False,
            http_session=self._http,
            request_timeout=self._timeout_s,
        )

        async def on_connect(*_: Any) -> None:
            # Called inside connect(), before any event of the session is handled. Events
            # read before this ran are tasks, queued ahead of the read loop's next step.
            self._on_open()
            client.eio.on_plain_event = on_plain_event

        def on_plain_event(text: str) -> None:
            self._on_event(Received.of_text(text))  # decoded when the stream reads it

        async def on_disconnect(reason: Any = None) -> None:
            resolve(self.closed, str(reason) if reason is not None else "disconnected")

        async def on_event(event: Any, *args: Any) -> None:
            # Events of other shapes: the library runs each message as its own task, in
            # arrival order; no await here before the callback, so they keep wire order.
            if len(args) == 1 and isinstance(args[0], Received):
                self._on_event(args[0])
            else:  # not through our packet class; should not happen, but keep what came
                self._on_event(Received(event, list(args), _ExactJson.dumps([event, *args])))

        client.on("connect", on_connect)
        client.on("disconnect", on_disconnect)
        client.on("*", on_event)
        return client

    async def connect(self) -> None:
        client = self._client = self.new_client()
        try:
            try:
                async with asyncio.timeout(self._timeout_s):
                    await client.connect(
                        self.socket_url,
                        socketio_path=self._path,
                        transports=self._transports,
                        wait_timeout=self._timeout_s,
                    )
            finally:
                _raise_if_cancelling()
        except TimeoutError:
            await self.close()
            raise ConnectFailed(f"no socket.io 4 session within {self._timeout_s}s") from None
        except (socketio.exceptions.ConnectionError, aiohttp.ClientError, OSError, ValueError) as e:
            await self.close()
            raise ConnectFailed(_why(e)) from None
        except BaseException:
            await self.close()
            raise
        if client.eio.state != "connected":
            # Dropped before connect() returned: the library calls no disconnect handler then.
            resolve(self.closed, "transport close")

    async def emit(self, event: str, data: Any) -> None:
        client = self._client
        if client is None or self.closed.done():
            raise ConnectionLost("not connected")
        try:
            await client.emit(event, data)
        except socketio.exceptions.SocketIOError as exc:
            raise ConnectionLost(str(exc)) from None

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            try:
                async with asyncio.timeout(self._timeout_s):
                    await client.shutdown()
            except Exception as exc:  # closing a broken connection may fail; it is gone anyway
                log.debug("socket.io 4 client shutdown failed", error=repr(exc))
            eio = client.eio
            if eio.state != "disconnected":  # connect() cancelled half-way: shutdown() skips it
                with contextlib.suppress(Exception):
                    await eio.disconnect(abort=True)
            tasks = [t for t in (eio.read_loop_task, eio.write_loop_task) if t and not t.done()]
            for task in tasks:
                task.cancel()
            if tasks:
                await asyncio.wait(tasks)
        http, self._http = self._http, None
        if http is not None:
            await http.close()
        resolve(self.closed, "client disconnect")


def _why(exc: BaseException) -> str:
    # The library keeps the server's answer (a 400's JSON body) in the Engine.IO error.
    cause = exc.__cause__
    detail = cause.args[1] if cause is not None and len(cause.args) > 1 else None
    return f"{exc}: {detail}" if detail else str(exc) or type(exc).__name__

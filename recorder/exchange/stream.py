"""The socket.io order-book stream: connected, subscribed and reconnecting, for ever.

`BookStream.run()` connects to the exchange's socket.io endpoint, subscribes every pair's
`book_<pair>` channel, and puts into its queue, in the order received:

- `Connected(session, protocol)` when a connection is up (before any of its events),
- a `BookUpdate` (new order + fills, or cancel) for each book event,
- a `RawMessage` for whatever did not parse (verbatim text + reason), never an exception,
- `Disconnected(session)` when it drops, with the reason.

socket.io cannot replay what was missed, so the consumer resyncs (snapshot, trade
catch-up) on every `Connected`. Reconnecting is ours, not a library's: each attempt is a
fresh connection after the reconnect backoff (`recorder.retry.STREAM_RECONNECT`, which
starts over after a connection that stayed up long enough to count as healthy), so every
reconnect is seen, counted and followed by subscribing again.

Two socket.io generations (`exchange.socketio_protocol`): "2" for socket.io 1.x/2.x servers
(Engine.IO v3, `sio.v2`), "4" for 3.x/4.x (Engine.IO v4, `sio.v4`), or "auto": before every
connection the server is asked which one it speaks (`sio.detect`), so a server upgraded
while we were away is spoken to in its new generation at the next attempt. The generation
in use is logged, carried by `Connected`, kept in `BookStream.protocol` and exported as
`recorder_stream_info{protocol}`.

Exactness: both connections decode socket.io packets with `sio.packets.ExactPacket`
(every number a Decimal, each event's JSON text kept), so a payload that fails to decode or
to classify is kept verbatim. Their callbacks never suspend before queuing, which keeps
events in wire order.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

from recorder import metrics
from recorder.config import ExchangeConfig
from recorder.exchange.classify import SOURCE, BookUpdate, channel, classify
from recorder.exchange.sio.connection import (
    GENERATIONS,
    ConnectFailed,
    Connection,
    ConnectionLost,
    Generation,
)
from recorder.exchange.sio.detect import detect_generation
from recorder.exchange.sio.packets import RESERVED_EVENTS as RESERVED_EVENTS
from recorder.exchange.sio.packets import UNDECODABLE as UNDECODABLE
from recorder.exchange.sio.packets import ExactPacket as ExactPacket
from recorder.exchange.sio.packets import Received
from recorder.exchange.sio.v2 import SocketIO2Connection
from recorder.exchange.sio.v4 import SocketIO4Connection
from recorder.logs import get_logger
from recorder.records import RawMessage, StreamSession, new_id, utc_now
from recorder.retry import STREAM_RECONNECT, Attempts, Backoff

log = get_logger(__name__)

PROTOCOLS = ("auto", *GENERATIONS)
UNSUBSCRIBE_EVENT = "unsubscribe"
"""socket.io's usual name; the docs name only `subscribe` (an unknown event is ignored)."""


@dataclass(frozen=True, slots=True)
class Connected:
    """The stream is up; events of this session follow. Resync now."""

    session: StreamSession
    protocol: str
    """The socket.io generation of this connection: "2" (1.x/2.x) or "4" (3.x/4.x)."""


@dataclass(frozen=True, slots=True)
class Disconnected:
    """The stream went down; `session.disconnected_at` and `session.reason` say when and why."""

    session: StreamSession


StreamItem = Connected | Disconnected | BookUpdate | RawMessage


class BookStream:
    """The book stream of a changing set of pairs; run `run()` as a task, read `items`."""

    def __init__(
        self,
        socket_url: str,
        *,
        socket_path: str = "/socket.io/",
        socketio_protocol: str = "auto",
        subscribe_event: str = "subscribe",
        pairs: Iterable[str] = (),
        backoff: Backoff = STREAM_RECONNECT,
        connect_timeout_s: float = 10.0,
        items: asyncio.Queue[StreamItem] | None = None,
    ) -> None:
        if socketio_protocol not in PROTOCOLS:
            raise ValueError(f"socketio_protocol must be one of {PROTOCOLS}")
        self.socket_url = socket_url
        self.socket_path = socket_path
        self.socketio_protocol = socketio_protocol
        self._reconnects: Attempts = backoff.attempts()
        """The reconnect backoff's state, over this stream's life."""
        self.subscribe_event = subscribe_event
        self.connect_timeout_s = connect_timeout_s
        self.items: asyncio.Queue[StreamItem] = items if items is not None else asyncio.Queue()
        self.protocol: str | None = None
        """The generation of the current or last connection ("2" or "4"); None before one."""
        self.connects = 0
        self.attempts = 0
        """Connection attempts so far, failed ones included."""
        self._pairs: frozenset[str] = frozenset(pairs)
        self._heard: frozenset[str] = self._pairs
        """The pairs whose events the connection may deliver: those it subscribed, removed
        ones included (the docs name no unsubscribe, so the exchange may not honour ours)."""
        self._connection: Connection | None = None
        self._session: StreamSession | None = None
        self._session_id = new_id()

    @classmethod
    def from_config(cls, config: ExchangeConfig, pairs: Iterable[str], **kwargs: Any) -> BookStream:
        return cls(
            config.socket_url,
            socket_path=config.socket_path,
            socketio_protocol=config.socketio_protocol,
            subscribe_event=config.subscribe_event,
            pairs=pairs,
            connect_timeout_s=config.request_timeout_s,
            **kwargs,
        )

    @property
    def pairs(self) -> frozenset[str]:
        return self._pairs

    @property
    def connected(self) -> bool:
        return self._session is not None

    async def add_pairs(self, pairs: Iterable[str]) -> None:
        """Follow more pairs; subscribed at once when connected, and after every reconnect."""
        new = sorted(set(pairs) - self._pairs)
        self._pairs = self._pairs.union(new)
        self._heard = self._heard.union(new)
        if self._connection is not None and self._session is not None:
            await self._subscribe(self._connection, new)

    async def remove_pairs(self, pairs: Iterable[str]) -> None:
        """Follow fewer pairs: unsubscribed at once when connected, not subscribed again.

        Events of a removed pair that still arrive on this connection are its own, and are
        delivered as such (never read as another pair's); the next connection has none.
        """
        gone = sorted(self._pairs.intersection(pairs))
        self._pairs = self._pairs.difference(gone)
        if self._connection is not None and self._session is not None:
            await self._emit_each(self._connection, UNSUBSCRIBE_EVENT, gone)

    async def run(self) -> None:
        """Connect, stream, reconnect; returns only by cancellation."""
        while True:
            # Measured again from the moment it connects (`_begin`): what counts as healthy
            # is the time the connection was up.
            self._reconnects.started()
            try:
                await self._one_connection()
            except Exception:
                # Whatever went wrong with this connection, the next one may work.
                log.exception("socket stream failed", url=self.socket_url)
            delay_s = self._reconnects.failed()
            log.info("socket stream reconnects", url=self.socket_url, in_s=round(delay_s, 2))
            await asyncio.sleep(delay_s)

    async def _one_connection(self) -> None:
        """One connection's life, from connecting to its end."""
        self._session_id = new_id()
        self.attempts += 1
        try:
            connection = await self._new_connection()
        except ConnectFailed as exc:
            log.warning("socket connect failed", url=self.socket_url, error=str(exc))
            return
        try:
            try:
                await connection.connect()
            except ConnectFailed as exc:
                log.warning(
                    "socket connect failed",
                    url=self.socket_url,
                    protocol=connection.protocol,
                    error=str(exc),
                )
                return
            await self._subscribe(connection, sorted(self._pairs))
            reason = await connection.closed
            if self._session is not None:
                self._end(reason)
        finally:
            if self._session is not None:  # cancelled while connected
                self._end("stopped")
            self._connection = None
            await connection.close()

    async def _new_connection(self) -> Connection:
        """A connection of the configured generation, or of the one the server says."""
        websocket_only = self.socket_url.startswith(("ws://", "wss://"))
        protocol: Generation
        if self.socketio_protocol == "auto":
            detected = await detect_generation(
                self.socket_url, self.socket_path, timeout_s=self.connect_timeout_s
            )
            if detected.protocol != self.protocol:
                log.info(
                    "socket.io generation detected",
                    url=self.socket_url,
                    protocol=detected.protocol,
                    how=detected.how,
                )
            protocol = detected.protocol
            websocket_only = websocket_only or detected.websocket_only
        else:
            protocol = "2" if self.socketio_protocol == "2" else "4"

        connection: Connection

        def opened() -> None:
            self._begin(connection)

        if protocol == "2":
            connection = SocketIO2Connection(
                self.socket_url,
                path=self.socket_path,
                timeout_s=self.connect_timeout_s,
                on_open=opened,
                on_event=self._on_event,
            )
        else:
            connection = SocketIO4Connection(
                self.socket_url,
                path=self.socket_path,
                timeout_s=self.connect_timeout_s,
                on_open=opened,
                on_event=self._on_event,
                websocket_only=websocket_only,
            )
        return connection

    def _begin(self, connection: Connection) -> None:
        session = StreamSession(self._session_id, utc_now(), None, None)
        self._connection = connection
        self._session = session
        self._heard = self._pairs
        self._reconnects.started()
        if self.connects:
            metrics.socket_reconnects.inc()
        self.connects += 1
        self.protocol = connection.protocol
        metrics.socket_connected.set(1)
        metrics.stream_info.clear()
        metrics.stream_info.labels(protocol=connection.protocol).set(1)
        log.info(
            "socket stream connected",
            session_id=str(session.session_id),
            protocol=connection.protocol,
        )
        self.items.put_nowait(Connected(session, connection.protocol))

    def _end(self, reason: str) -> None:
        assert self._session is not None
        session = replace(self._session, disconnected_at=utc_now(), reason=reason or None)
        self._session = None
        metrics.socket_connected.set(0)
        log.info("socket stream disconnected", session_id=str(session.session_id), reason=reason)
        self.items.put_nowait(Disconnected(session))

    async def _subscribe(self, connection: Connection, pairs: Iterable[str]) -> None:
        await self._emit_each(connection, self.subscribe_event, pairs)

    async def _emit_each(self, connection: Connection, event: str, pairs: Iterable[str]) -> None:
        """Emit `event` with each pair's channel."""
        for pair in pairs:
            try:
                await connection.emit(event, channel(pair))
            except ConnectionLost as exc:
                # The connection dropped meanwhile; the next one subscribes the pairs then
                # followed, and only those.
                log.warning(f"socket {event} failed", pair=pair, error=str(exc))
                return

    def _on_event(self, got: Received) -> None:
        # No await before put_nowait: events stay in the order they arrived.
        received_at = utc_now()
        session_id = self._session.session_id if self._session else self._session_id
        item: BookUpdate | RawMessage
        if got.error is not None:
            item = RawMessage(new_id(), received_at, SOURCE, None, got.text, got.error)
        else:
            item = classify(
                got.event,
                got.args,
                payload_text=got.text,
                received_at=received_at,
                session_id=session_id,
                # An event that does not name its pair is the one subscribed pair's (the
                # docs leave the event name open: `classify` says how the pair is told).
                subscribed=self._heard,
            )
        self._count(item)
        self.items.put_nowait(item)

    @staticmethod
    def _count(item: BookUpdate | RawMessage) -> None:
        if isinstance(item, RawMessage):
            metrics.malformed_messages.labels(source=SOURCE).inc()
            return
        event = item.event
        metrics.socket_events.labels(pair=event.pair, kind=event.kind).inc()
        metrics.last_event_timestamp.labels(pair=event.pair).set(event.received_at.timestamp())

"""The socket.io order-book stream: redundant connections, subscribed and reconnecting, for ever.

socket.io has no replay: whatever the exchange sends while no connection is subscribed is
lost for good (a later snapshot shows the book, not the orders that came and went). So
`BookStream.run()` keeps `connections` independent socket.io connections
(`exchange.stream_connections`), each subscribed to every followed pair's `book_<pair>`
channel and each its own stream session; while one reconnects, the others still listen.
It puts into its queue, in the order received:

- `Connected(session, protocol, resync)` when a connection is up (before any of its events);
  `resync` is true when no other connection was up, so that events may have been missed,
- a `BookUpdate` (new order + fills, or cancel) for each book event, once: the copies the
  other connections bring are dropped (`arbiter`), whichever connection was first,
- a `RawMessage` for whatever did not parse (verbatim text + reason), never an exception;
  once, like events: the same text under the same event name from another connection is
  a copy,
- `Disconnected(session, covered)` when a connection drops; `covered` when another is up.

Reconnecting is ours, not a library's, per connection: the first retry after a drop comes
within a second, then a capped, jittered backoff (`recorder.retry.STREAM_RECONNECT`, capped
at `exchange.stream_backoff_max_s`, where a server refusing every attempt sees one attempt per
connection per cap); it starts over once a connection has subscribed. Connection attempts of
one connection start at least `MIN_ATTEMPT_SPACING_S` apart, so a server that accepts and
drops at once is not hammered. `exchange_answers()` (called when REST answers again after
failing) cuts every waiting connection's backoff short: the outage is over.

Silent channels (`silence`): a connection can stay up while its channel of a pair goes quiet
on the server's side. With `silence_s` set, a connection that delivers nothing of a pair for
that long while the trade tape (`tape_advanced()`) shows the pair trading is resubscribed,
then, if still silent, reconnected; logged and counted.

Two socket.io generations (`exchange.socketio_protocol`): "2" for socket.io 1.x/2.x servers
(Engine.IO v3, `sio.v2`), "4" for 3.x/4.x (Engine.IO v4, `sio.v4`), or "auto" (`sio.dial`).
The generation in use is logged, carried by `Connected`, kept in `BookStream.protocol` and
exported as `recorder_stream_info{protocol}`.

Exactness: connections decode socket.io packets with `sio.packets.ExactPacket` (every number
a Decimal, each event's JSON text kept), so a payload that fails to decode or to classify is
kept verbatim. Their callbacks never suspend before queuing, which keeps events in wire
order and the first copy first.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime
from functools import partial
from typing import Any

from prometheus_client import Counter

from recorder import metrics
from recorder.config import ExchangeConfig
from recorder.exchange.arbiter import NOT_A_COPY, Arbiter
from recorder.exchange.classify import SOURCE, BookUpdate, channel, classify
from recorder.exchange.silence import SilenceWatch
from recorder.exchange.sio.connection import (
    GENERATIONS,
    ConnectFailed,
    Connection,
    ConnectionLost,
    resolve,
)
from recorder.exchange.sio.dial import Dialer
from recorder.exchange.sio.packets import RESERVED_EVENTS as RESERVED_EVENTS
from recorder.exchange.sio.packets import UNDECODABLE as UNDECODABLE
from recorder.exchange.sio.packets import ExactPacket as ExactPacket
from recorder.exchange.sio.packets import Received
from recorder.logs import get_logger
from recorder.records import RawMessage, StreamSession, new_id, utc_now
from recorder.retry import STREAM_RECONNECT, Attempts, Backoff
from recorder.ticker import Ticker

log = get_logger(__name__)

PROTOCOLS = ("auto", *GENERATIONS)
UNSUBSCRIBE_EVENT = "unsubscribe"
"""socket.io's usual name; the docs name only `subscribe` (an unknown event is ignored)."""
MIN_ATTEMPT_SPACING_S = 1.0

_SOCKET_EVENTS = metrics.Children(metrics.socket_events)
_LAST_EVENT_AT = metrics.Children(metrics.last_event_timestamp)


@dataclass(frozen=True, slots=True)
class Connected:
    """A connection is up; events of this session follow."""

    session: StreamSession
    protocol: str
    """The socket.io generation of this connection: "2" (1.x/2.x) or "4" (3.x/4.x)."""
    resync: bool = True
    """No other connection was up: events may have been missed since; resync now."""


@dataclass(frozen=True, slots=True)
class Disconnected:
    """A connection went down; `session.disconnected_at` and `session.reason` say when and why."""

    session: StreamSession
    covered: bool = False
    """Another connection is still up: nothing is missed."""


StreamItem = Connected | Disconnected | BookUpdate | RawMessage


@dataclass
class _Link:
    """One of the stream's connections, over its reconnects."""

    index: int
    reconnects: Attempts
    label: str = ""
    connection: Connection | None = None
    session: StreamSession | None = None
    session_id: uuid.UUID = field(default_factory=new_id)
    heard: frozenset[str] = frozenset()
    """The pairs whose events this connection may deliver: those it subscribed, removed ones
    included (the docs name no unsubscribe, so the exchange may not honour ours)."""
    attempt_started: float = float("-inf")
    waiting: asyncio.Event = field(default_factory=asyncio.Event)
    """Set to cut the backoff short."""
    connects: int = 0
    received: int = 0
    """Payloads received on the current connection."""
    events: Counter = field(init=False)
    """`recorder_stream_events_total` of this connection (one lookup, not one per event)."""
    first_events: Counter = field(init=False)

    def __post_init__(self) -> None:
        self.label = str(self.index)
        self.events = metrics.stream_events.labels(self.label)
        self.first_events = metrics.stream_first_events.labels(self.label)


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
        connections: int = 1,
        backoff: Backoff = STREAM_RECONNECT,
        connect_timeout_s: float = 10.0,
        silence_s: float | None = None,
        run_id: uuid.UUID | None = None,
        items: asyncio.Queue[StreamItem] | None = None,
    ) -> None:
        if socketio_protocol not in PROTOCOLS:
            raise ValueError(f"socketio_protocol must be one of {PROTOCOLS}")
        if connections < 1:
            raise ValueError("connections must be at least 1")
        self.socket_url = socket_url
        self.subscribe_event = subscribe_event
        self.items: asyncio.Queue[StreamItem] = items if items is not None else asyncio.Queue()
        self.run_id = run_id
        self.protocol: str | None = None
        """The generation of the newest connection ("2" or "4"); None before one."""
        self.connects = 0
        self.attempts = 0
        """Connection attempts so far, all connections, failed ones included."""
        self.silence = SilenceWatch(silence_s) if silence_s else None
        self._dialer = Dialer(socket_url, socket_path, socketio_protocol, connect_timeout_s)
        self._links = [_Link(i, backoff.attempts()) for i in range(connections)]
        for link in self._links:  # every series from the start, at 0 (dashboards, alerts)
            for counter in (metrics.stream_reconnects, metrics.stream_connect_failures,
                            metrics.stream_events, metrics.stream_first_events):  # fmt: skip
                counter.labels(link.label)
            metrics.stream_connected.labels(link.label).set(0)
        self._arbiter = Arbiter()
        self._pairs: frozenset[str] = frozenset(pairs)

    @classmethod
    def from_config(cls, config: ExchangeConfig, pairs: Iterable[str], **kwargs: Any) -> BookStream:
        kwargs.setdefault("connections", config.stream_connections)
        kwargs.setdefault("silence_s", config.stream_silence_s or None)
        kwargs.setdefault("backoff", replace(STREAM_RECONNECT, max_s=config.stream_backoff_max_s))
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
        """At least one connection is up."""
        return any(link.session is not None for link in self._links)

    @property
    def open_connections(self) -> int:
        return sum(1 for link in self._links if link.session is not None)

    @property
    def duplicates(self) -> int:
        """Copies of events dropped because another connection had delivered them first."""
        return self._arbiter.duplicates

    async def add_pairs(self, pairs: Iterable[str]) -> None:
        """Follow more pairs; subscribed at once where connected, and after every reconnect."""
        new = sorted(set(pairs) - self._pairs)
        self._pairs = self._pairs.union(new)
        for link in self._links:
            link.heard = link.heard.union(new)
            if link.connection is not None and link.session is not None:
                await self._subscribe(link, link.connection, new)

    async def remove_pairs(self, pairs: Iterable[str]) -> None:
        """Follow fewer pairs: unsubscribed at once where connected, not subscribed again.

        Events of a removed pair that still arrive on a connection are its own, and are
        delivered as such (never read as another pair's); the next connection has none.
        """
        gone = sorted(self._pairs.intersection(pairs))
        self._pairs = self._pairs.difference(gone)
        for link in self._links:
            if self.silence is not None:
                self.silence.forget(link.index, gone)
            if link.connection is not None and link.session is not None:
                await self._emit_each(link.connection, UNSUBSCRIBE_EVENT, gone)

    def exchange_answers(self) -> None:
        """The exchange answers again after failing (an outage ended): reconnect now."""
        for link in self._links:
            link.waiting.set()

    def tape_advanced(self, pair: str, newest_ts: datetime) -> None:
        """The trade tape of `pair` reached a trade dated `newest_ts` (for the watchdog)."""
        if self.silence is not None:
            self.silence.tape(pair, newest_ts)

    async def run(self) -> None:
        """Keep every connection up; returns only by cancellation."""
        async with asyncio.TaskGroup() as group:
            for link in self._links:
                group.create_task(self._keep_up(link), name=f"stream-connection-{link.index}")
            if self.silence is not None:
                watch = Ticker("stream-silence", interval_s=max(0.05, self.silence.silence_s / 4))
                group.create_task(watch.run(self._check_silence), name="stream-silence")

    # -- one connection -----------------------------------------------------------------

    async def _keep_up(self, link: _Link) -> None:
        while True:
            spacing_s = link.attempt_started + MIN_ATTEMPT_SPACING_S - time.monotonic()
            if spacing_s > 0:
                await asyncio.sleep(spacing_s)
            link.attempt_started = time.monotonic()
            try:
                await self._one_connection(link)
            except Exception:
                # Whatever went wrong with this connection, the next one may work.
                log.exception("socket stream failed", url=self.socket_url, connection=link.index)
            delay_s = link.reconnects.failed()
            log.info(
                "socket stream reconnects",
                url=self.socket_url,
                connection=link.index,
                in_s=round(delay_s, 2),
            )
            link.waiting.clear()
            try:
                async with asyncio.timeout(delay_s):
                    await link.waiting.wait()
                log.info("the exchange answers again: reconnecting now", connection=link.index)
            except TimeoutError:
                pass

    async def _one_connection(self, link: _Link) -> None:
        """One connection's life, from connecting to its end."""
        link.session_id = new_id()
        self.attempts += 1

        def opened() -> None:
            self._begin(link, connection)

        connection: Connection
        try:
            connection = await self._dialer.connection(opened, partial(self.on_event, link))
        except ConnectFailed as exc:
            self._connect_failed(link, exc)
            return
        try:
            try:
                await connection.connect()
            except ConnectFailed as exc:
                self._dialer.failed()
                self._connect_failed(link, exc, protocol=connection.protocol)
                return
            if await self._subscribe(link, connection, sorted(self._pairs)):
                link.reconnects.succeeded()
            reason = await connection.closed
            if link.session is not None:
                self._end(link, reason)
            if not link.received:
                # Dropped before saying anything: perhaps a client of the wrong generation,
                # dropped at its first heartbeat (the server was upgraded). Ask again.
                self._dialer.failed()
        finally:
            if link.session is not None:  # cancelled while connected
                self._end(link, "stopped")
            link.connection = None
            await connection.close()

    def _connect_failed(self, link: _Link, exc: Exception, protocol: str | None = None) -> None:
        metrics.stream_connect_failures.labels(link.label).inc()
        log.warning(
            "socket connect failed",
            url=self.socket_url,
            connection=link.index,
            protocol=protocol,
            error=str(exc),
        )

    def _begin(self, link: _Link, connection: Connection) -> None:
        resync = not self.connected
        session = StreamSession(
            link.session_id, utc_now(), None, None, run_id=self.run_id, connection=link.index
        )
        link.connection = connection
        link.session = session
        link.heard = self._pairs
        link.received = 0
        if link.connects:
            metrics.socket_reconnects.inc()
            metrics.stream_reconnects.labels(link.label).inc()
        link.connects += 1
        self.connects += 1
        self.protocol = connection.protocol
        metrics.socket_connected.set(1)
        metrics.stream_connected.labels(link.label).set(1)
        metrics.stream_connections_up.set(self.open_connections)
        metrics.stream_info.clear()
        metrics.stream_info.labels(protocol=connection.protocol).set(1)
        log.info(
            "socket stream connected",
            session_id=str(session.session_id),
            connection=link.index,
            protocol=connection.protocol,
            resync=resync,
        )
        self.items.put_nowait(Connected(session, connection.protocol, resync))

    def _end(self, link: _Link, reason: str) -> None:
        assert link.session is not None
        session = replace(link.session, disconnected_at=utc_now(), reason=reason or None)
        link.session = None
        if self.silence is not None:
            self.silence.forget(link.index)
        covered = self.connected
        metrics.socket_connected.set(1 if covered else 0)
        metrics.stream_connected.labels(link.label).set(0)
        metrics.stream_connections_up.set(self.open_connections)
        log.info(
            "socket stream disconnected",
            session_id=str(session.session_id),
            connection=link.index,
            reason=reason,
            covered=covered,
        )
        self.items.put_nowait(Disconnected(session, covered))

    async def _subscribe(self, link: _Link, connection: Connection, pairs: Iterable[str]) -> bool:
        """Subscribe `pairs` on `link`; False if the connection dropped meanwhile."""
        pairs = list(pairs)
        if not await self._emit_each(connection, self.subscribe_event, pairs):
            return False
        if self.silence is not None:
            now = utc_now()
            for pair in pairs:
                self.silence.subscribed(link.index, pair, now)
                for action in ("resubscribe", "reconnect"):
                    metrics.stream_silences.labels(link.label, pair, action)
        return True

    async def _emit_each(self, connection: Connection, event: str, pairs: Iterable[str]) -> bool:
        """Emit `event` with each pair's channel; False if the connection dropped meanwhile."""
        for pair in pairs:
            try:
                await connection.emit(event, channel(pair))
            except ConnectionLost as exc:
                # The next connection subscribes the pairs then followed, and only those.
                log.warning(f"socket {event} failed", pair=pair, error=str(exc))
                return False
        return True

    # -- events -------------------------------------------------------------------------

    def on_event(self, link: _Link, got: Received) -> None:
        # No await before put_nowait: events stay in the order they arrived.
        link.received += 1
        # The cheap test first, before the clock is even read: the same text as an event
        # another connection brought is a copy of it, and need not be read again, not even
        # decoded (`Received.of_text` decodes on first use; most copies are caught here,
        # the identity below catches one serialized otherwise). Only a text that was
        # decoded and classified is remembered under the text alone, so an undecodable
        # one is never taken for a copy.
        arbiter = self._arbiter
        copied = arbiter.copy(got.text)
        if copied is not NOT_A_COPY:
            identity, ts = copied
            arbiter.expected(identity)
            self._heard(link, identity[0], ts)
            return
        received_at = utc_now()
        item: BookUpdate | RawMessage
        if got.error is not None:
            item = RawMessage(new_id(), received_at, SOURCE, None, got.text, got.error)
        else:
            item = classify(
                got.event,
                got.args,
                payload_text=got.text,
                received_at=received_at,
                session_id=link.session_id,
                # An event that does not name its pair is the one subscribed pair's (the
                # docs leave the event name open: `classify` says how the pair is told).
                subscribed=link.heard,
            )
        others = self.open_connections - 1 if link.session is not None else 0
        if isinstance(item, RawMessage):
            # The same bad payload on every connection is one payload the exchange sent.
            if arbiter.first((SOURCE, got.text), others=others):
                metrics.malformed_messages.labels(source=SOURCE).inc()
                self.items.put_nowait(item)
            return
        event = item.event
        identity = (event.pair, event.oid, event.kind)
        self._heard(link, event.pair, event.ts)
        if not arbiter.first(identity, others=others, text=got.text, value=event.ts):
            return
        link.first_events.inc()
        _SOCKET_EVENTS(event.pair, event.kind).inc()
        _LAST_EVENT_AT(event.pair).set(received_at.timestamp())
        self.items.put_nowait(item)

    def _heard(self, link: _Link, pair: str, ts: datetime) -> None:
        """`link` delivered an event of `pair` (the first copy or not)."""
        link.events.inc()
        if self.silence is not None:
            self.silence.heard(link.index, pair, ts)

    # -- silent channels ----------------------------------------------------------------

    async def _check_silence(self, _reason: str) -> None:
        assert self.silence is not None
        for silent in self.silence.silent(utc_now()):
            link = self._links[silent.connection]
            connection = link.connection
            if connection is None or link.session is None:
                continue
            metrics.stream_silences.labels(link.label, silent.pair, silent.action).inc()
            log.warning(
                "a connection is silent on a pair that trades",
                connection=link.index,
                pair=silent.pair,
                action=silent.action,
                tape_ahead_s=round(silent.behind_s, 1),
                silent_for_s=self.silence.silence_s,
            )
            if silent.action == "resubscribe":
                await self._emit_each(connection, self.subscribe_event, [silent.pair])
            else:
                resolve(connection.closed, f"silent on {silent.pair}")
                await connection.close()

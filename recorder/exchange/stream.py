"""The socket.io order-book stream: connected, subscribed and reconnecting, for ever.

`BookStream.run()` connects to the exchange's socket.io endpoint, subscribes every pair's
`book_<pair>` channel, and puts into its queue, in the order received:

- `Connected(session)` when a connection is up (before any of its events),
- a `BookUpdate` (new order + fills, or cancel) for each book event,
- a `RawMessage` for whatever did not parse (verbatim text + reason), never an exception,
- `Disconnected(session)` when it drops, with the reason.

socket.io cannot replay what was missed, so the consumer resyncs (snapshot, trade
catch-up) on every `Connected`. Reconnecting is ours, not the library's: each attempt is a
fresh client after a capped, jittered backoff, so every reconnect is seen, counted and
followed by subscribing again.

Exactness: the library decodes packets with `json.loads`, which would read `935.23` as a
binary float; our packet class decodes with `parse.load_json` (every number a Decimal) and
hands each event's JSON text along, so a payload that fails to decode or to classify is
kept verbatim. Handlers never suspend before queuing, which keeps events in wire order
although the library runs each message as its own task.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

import socketio  # type: ignore[import-untyped]
from socketio import packet as sio_packet

from recorder import metrics
from recorder.backoff import Backoff
from recorder.config import ExchangeConfig
from recorder.exchange.classify import SOURCE, BookUpdate, channel, classify
from recorder.exchange.parse import load_json
from recorder.logs import get_logger
from recorder.records import RawMessage, StreamSession, new_id, utc_now

log = get_logger(__name__)

STABLE_SESSION_S = 30.0
"""A connection that lasted this long resets the backoff; shorter ones make it grow."""


@dataclass(frozen=True, slots=True)
class Connected:
    """The stream is up; events of this session follow. Resync now."""

    session: StreamSession


@dataclass(frozen=True, slots=True)
class Disconnected:
    """The stream went down; `session.disconnected_at` and `session.reason` say when and why."""

    session: StreamSession


StreamItem = Connected | Disconnected | BookUpdate | RawMessage


# --- exact, verbatim packet decoding --------------------------------------------------------


class _ExactJson:
    """The json module the packets use: exact decimals in, plain JSON out."""

    def __init__(self) -> None:
        self.text: str | None = None

    def loads(self, text: str, **_: Any) -> Any:
        self.text = text
        return load_json(text)

    @staticmethod
    def dumps(value: Any, **kwargs: Any) -> str:
        # We only send channel names; a Decimal (in a fallback text) is written as a string.
        return json.dumps(value, default=str, **kwargs)


@dataclass(frozen=True, slots=True)
class Received:
    """What the packet layer hands the event handler: the decoded arguments and the text."""

    event: Any
    args: list[Any]
    text: str
    error: str | None = None


UNDECODABLE = "\x00undecodable"
"""The event name under which a packet that could not be decoded reaches the handler."""


RESERVED_EVENTS = frozenset(socketio.AsyncClient.reserved_events)
"""Event names the client library handles itself instead of the catch-all handler."""


class ExactPacket(sio_packet.Packet):  # type: ignore[misc]
    """A socket.io packet decoded with exact decimals, its event's JSON text kept."""

    json = _ExactJson()

    def decode(self, encoded_packet: Any) -> int:
        self.json = _ExactJson()  # per packet: it remembers the text it decoded
        try:
            attachments: int = super().decode(encoded_packet)
        except Exception as exc:
            text = self.json.text or (encoded_packet if isinstance(encoded_packet, str) else "")
            if not (isinstance(encoded_packet, str) and encoded_packet[:1] == "2"):
                raise
            self.packet_type, self.namespace, self.id = sio_packet.EVENT, None, None
            self.data = [UNDECODABLE, Received(None, [], text, f"undecodable packet: {exc}")]
            return 0
        if self.packet_type == sio_packet.EVENT:
            data = self.data if isinstance(self.data, list) else [self.data]
            text = self.json.text or ""
            first = data[0] if data else None
            # An event named like one of the library's own (`disconnect`, `connect`) would
            # run that handler: fuzzing found `2["disconnect"]` ending a healthy session
            # unrecorded. Such a name reaches the catch-all handler, which keeps it raw.
            usable = isinstance(first, str) and first not in RESERVED_EVENTS
            name = first if usable else UNDECODABLE
            self.data = [name, Received(first, data[1:], text)]
        return attachments


# --- the stream -----------------------------------------------------------------------------


def _raise_if_cancelling() -> None:
    """Honour a cancellation that the library swallowed.

    `AsyncClient.connect` waits with `asyncio.wait_for`, which on Python 3.11 can drop a
    cancel that arrives just as the connection completes; the task still counts it, so a
    stream being stopped would otherwise go on for ever.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


class BookStream:
    """The book stream of a changing set of pairs; run `run()` as a task, read `items`."""

    def __init__(
        self,
        socket_url: str,
        *,
        socket_path: str = "/socket.io/",
        subscribe_event: str = "subscribe",
        pairs: Iterable[str] = (),
        backoff: Backoff | None = None,
        connect_timeout_s: float = 10.0,
        items: asyncio.Queue[StreamItem] | None = None,
    ) -> None:
        self.socket_url = socket_url
        self.socket_path = socket_path
        self.subscribe_event = subscribe_event
        self.backoff = backoff or Backoff(initial_s=0.5, max_s=30.0)
        self.connect_timeout_s = connect_timeout_s
        self.items: asyncio.Queue[StreamItem] = items if items is not None else asyncio.Queue()
        self._pairs: set[str] = set(pairs)
        self._client: socketio.AsyncClient | None = None
        self._session: StreamSession | None = None
        self._session_id = new_id()
        self.connects = 0

    @classmethod
    def from_config(cls, config: ExchangeConfig, pairs: Iterable[str], **kwargs: Any) -> BookStream:
        return cls(
            config.socket_url,
            socket_path=config.socket_path,
            subscribe_event=config.subscribe_event,
            pairs=pairs,
            connect_timeout_s=config.request_timeout_s,
            **kwargs,
        )

    @property
    def pairs(self) -> frozenset[str]:
        return frozenset(self._pairs)

    @property
    def connected(self) -> bool:
        return self._session is not None

    async def add_pairs(self, pairs: Iterable[str]) -> None:
        """Follow more pairs; subscribed at once when connected, and after every reconnect."""
        new = sorted(set(pairs) - self._pairs)
        self._pairs.update(new)
        if self._client is not None and self._session is not None:
            await self._subscribe(self._client, new)

    async def run(self) -> None:
        """Connect, stream, reconnect; returns only by cancellation."""
        attempt = 0
        while True:
            try:
                lasted_s = await self._one_connection()
            except Exception:
                # Whatever went wrong with this connection, the next one may work.
                log.exception("socket stream failed", url=self.socket_url)
                lasted_s = None
            if lasted_s is not None and lasted_s >= STABLE_SESSION_S:
                attempt = 0
            delay_s = self.backoff.delay_s(attempt)
            attempt += 1
            log.info("socket stream reconnects", url=self.socket_url, in_s=round(delay_s, 2))
            await asyncio.sleep(delay_s)

    async def _one_connection(self) -> float | None:
        """One client's life; how long it was connected, or None if it never was."""
        self._session_id = new_id()
        client, closed = self._new_client()
        try:
            try:
                await client.connect(
                    self.socket_url,
                    socketio_path=self.socket_path,
                    wait_timeout=self.connect_timeout_s,
                )
            except (socketio.exceptions.ConnectionError, OSError, ValueError) as exc:
                log.warning("socket connect failed", url=self.socket_url, error=str(exc))
                return None
            finally:
                _raise_if_cancelling()
            await self._subscribe(client, sorted(self._pairs))
            reason = await closed
            return self._end(reason) if self._session is not None else None
        finally:
            if self._session is not None:  # cancelled while connected
                self._end("stopped")
            self._client = None
            await self._shutdown(client)

    @staticmethod
    async def _shutdown(client: socketio.AsyncClient) -> None:
        try:
            await client.shutdown()
        except Exception as exc:  # closing a broken connection may fail; it is gone anyway
            log.debug("socket client shutdown failed", error=str(exc))

    def _new_client(self) -> tuple[socketio.AsyncClient, asyncio.Future[str]]:
        """A client for one connection, and a future that holds why it closed."""
        # handle_sigint=False: the library would otherwise take over SIGINT (and disconnect
        # by itself); stopping is the daemon's business, which drains before it disconnects.
        client = socketio.AsyncClient(
            reconnection=False,
            serializer=ExactPacket,
            logger=False,
            engineio_logger=False,
            handle_sigint=False,
        )
        closed: asyncio.Future[str] = asyncio.get_running_loop().create_future()

        async def on_connect(*_: Any) -> None:
            # Queued here, inside connect(), so that it precedes every event of the session.
            self._begin(client, StreamSession(self._session_id, utc_now(), None, None))

        async def on_disconnect(reason: Any = None) -> None:
            if not closed.done():
                closed.set_result(str(reason) if reason is not None else "disconnected")

        client.on("connect", on_connect)
        client.on("disconnect", on_disconnect)
        client.on("*", self._on_event)
        return client, closed

    def _begin(self, client: socketio.AsyncClient, session: StreamSession) -> None:
        self._client = client
        self._session = session
        if self.connects:
            metrics.socket_reconnects.inc()
        self.connects += 1
        metrics.socket_connected.set(1)
        log.info("socket stream connected", session_id=str(session.session_id))
        self.items.put_nowait(Connected(session))

    def _end(self, reason: str) -> float:
        assert self._session is not None
        session = replace(self._session, disconnected_at=utc_now(), reason=reason or None)
        self._session = None
        metrics.socket_connected.set(0)
        log.info("socket stream disconnected", session_id=str(session.session_id), reason=reason)
        self.items.put_nowait(Disconnected(session))
        assert session.disconnected_at is not None
        return (session.disconnected_at - session.connected_at).total_seconds()

    async def _subscribe(self, client: socketio.AsyncClient, pairs: Iterable[str]) -> None:
        for pair in pairs:
            try:
                await client.emit(self.subscribe_event, channel(pair))
            except socketio.exceptions.SocketIOError as exc:
                # The connection dropped meanwhile; the next one subscribes every pair.
                log.warning("socket subscribe failed", pair=pair, error=str(exc))
                return

    async def _on_event(self, event: str, *args: Any) -> None:
        # No await before put_nowait: events stay in the order they arrived.
        received_at = utc_now()
        if len(args) == 1 and isinstance(args[0], Received):
            got = args[0]
        else:  # not through our packet class; should not happen, but keep what came
            got = Received(event, list(args), _ExactJson.dumps([event, *args]))
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

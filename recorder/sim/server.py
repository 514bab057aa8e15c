"""The simulated exchange's server: REST (aiohttp) and socket.io on one port.

Use it from Python tests (the client's, the daemon's, the simulator's own) on a free
loopback port:

    from recorder.sim.server import SimSettings, run_sim

    async with run_sim(SimSettings(seed=1, pairs=("BTC_USD",), rate_per_s=50)) as sim:
        sim.base_url          # "http://127.0.0.1:<port>": REST root and socket.io URL
        sim.engine            # the matching engine (books, orders, trades): the truth
        sim.faults            # fault switches; change them directly or via /admin/faults
        sim.accounts.by_name["alice"].credentials   # key and secret of a seeded account
        sim.pause(); await sim.drained()            # stop the flow, wait until all is sent
        await sim.drop_sockets(); sim.start_outage(2.0); await sim.burst(3, 3)
        await sim.drop_socket(sim.oldest_socket())       # one connection, the others stay
        await sim.silence(sid, "BTC_USD")                # that pair's events stop to sid only
        sim.delist_pair("ETH_USD"); sim.list_pair("ETH_USD")    # delisted, and listed again
        sim.deliveries        # with record_deliveries=True: what each connection was sent

`SimSettings()` defaults: port 0 (a free one), seed 1, pairs BTC_USD and ETH_USD, 20 events/s,
one hour of history; `book_orders=10_000` starts every pair with a book that deep.
`run_sim(port=..., ...)` also takes the settings as keywords.

What it serves (the exchange's API docs' endpoints and JSON shapes):

- public REST, 100 calls/s per IP (then 429): `/api/v1/currencies/`, `/api/v1/pairs/`,
  `/api/v1/orderbook/<pair>/`, `/api/v1/order/<pk>/`, `/api/v1/exchanges/`,
  `/api/charts/<pair>/<type>/chart`;
- private REST, HMAC-signed (`auth.py`), 2 calls/s per key: `/api/v1/wallets/`,
  `/api/v1/orders/own/`, POST `/api/v1/order/`, POST `/api/v1/order-cancel/`,
  `/api/v1/exchanges/own/`, `/api/v1/deposits/`, `/api/v1/withdraws/`;
- socket.io at `/socket.io/`: emit `subscribe` (or `unsubscribe`) with `book_<pair>`; every
  new order and cancel of that pair arrives as event `book_<pair>` (`SimSettings.event_name`
  switches to the other readings of the docs); a cancel names the cancelled order by `oid`
  or by `cancel_order_id` as `SimSettings.cancel_id` says;
- `limit` is capped at `SimSettings.max_page` on `/exchanges/` (default 1000, as
  `rest.MAX_LIMIT` on `/exchanges/own/` and charts) and at 2000 on `/orders/own/` (its
  default); a larger value is served as the cap;
- a trade's `type` is the resting (maker) order's side, on the socket and in `/exchanges/`
  alike; in `/exchanges/own/` it is the account's own side;
- `/order/<pk>/` and `/orders/own/` show the amount an order was placed with;
- the latency fault delays REST answers (not socket events); `subscribe_delay_s` delays
  each subscription taking effect; `stream_delay_s` delays each book event's emission (the
  stream behind REST);
- errors are JSON `{"detail": reason}`: 400 bad input, 401 bad auth, 403 not yours, 404;
- admin (never faulted, never rate limited): `GET /admin/state`, `POST /admin/faults`
  (JSON of `Faults` switches), `POST /admin/drop-sockets`, `POST /admin/outage
  {"seconds": N}`, `POST /admin/pause`, `POST /admin/resume`, `POST /admin/burst
  {"malformed": N, "unknown": N}`, `POST /admin/pairs {"name": "LTC_USD"}` (list a new
  pair while running), `GET /admin/book/<pair>` (the exact ungrouped book and
  the engine's event count), `POST /admin/ahead {"events": N}` (N events made at once and
  answered as socket.io packet texts instead of emitted, for a faster server to send;
  `recorder.sim.ahead`).

With an `EventSource` (`Simulator(settings, source)`) the events are not the order flow's:
`recorder.sim.replay` serves a recorded period this way (`recorder replay`), through the same
endpoints, channels and outbox.

Every book event goes through one outbox and one emitter task, so sockets see events in the
engine's order. The order flow waits while the outbox is long, so a slow network slows the
market rather than growing memory.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any, Protocol

import socketio  # type: ignore[import-untyped]
from aiohttp import web

from recorder.book import READINGS, Reading
from recorder.logs import get_logger
from recorder.sim import wire
from recorder.sim.accounts import Accounts
from recorder.sim.ahead import Schedule, ahead_line, packet_text
from recorder.sim.auth import SIGN_ENCODINGS, SignEncoding
from recorder.sim.candles import Charts
from recorder.sim.deliveries import DeliveryLog, Garbage
from recorder.sim.engine import Book, Cancel, Engine, Event, NewOrder, PairSpec
from recorder.sim.faults import Faults
from recorder.sim.flow import OrderFlow, pair_spec, replay_history, wall_clock
from recorder.sim.ratelimit import SlidingWindow
from recorder.sim.rest import MAX_LIMIT, RestApi

log = get_logger(__name__)

MAX_OUTBOX = 2000
"""The order flow waits while more events than this are waiting to be emitted."""
MAX_SOCKET_BACKLOG = 5000
"""Emission waits while a socket has more packets than this queued for its client."""
MAX_BATCH = 500
"""At most this many flow events are made between two yields to the event loop."""
RESERVED_EVENTS = frozenset({"connect", "connect_error", "disconnect"})
"""Event names socket.io clients give their own meaning: not for book events."""


@dataclass(frozen=True)
class SimSettings:
    host: str = "127.0.0.1"
    port: int = 0
    """0: a free port, see `Simulator.base_url`."""
    seed: int = 1
    pairs: tuple[str, ...] = ("BTC_USD", "ETH_USD")
    rate_per_s: float = 20.0
    """Book events per second made by the order flow, all pairs together; 0: none."""
    history_hours: float = 1.0
    history_events_per_hour: float = 1800.0
    public_calls_per_s: int = 100
    private_calls_per_s: int = 2
    book_orders: int = 0
    """At start, after the history, each pair's book is filled up to at least this many
    resting orders (passive, both sides, no trades, no socket events): a deep book for
    snapshot benchmarks. 0: the book the history left."""
    faults: dict[str, Any] = field(default_factory=dict)
    """Initial fault switches (keys of `Faults.update`)."""
    outage_s: float = 0.0
    """An outage that starts with the server."""
    drop_every_s: float = 0.0
    """Drop every socket connection this often; 0: never."""
    burst_every_s: float = 0.0
    """Send 3 malformed book events per channel and 3 unknown events this often; 0: never."""
    record_deliveries: bool = False
    """Keep which connection was sent which event (`Simulator.deliveries`), for chaos runs."""
    sign_encoding: SignEncoding | None = None
    """Accept only signatures url-encoded as this sample of the docs does; None: either."""
    cancel_id: Reading = "oid"
    """The field of a cancel payload that names the cancelled order (`wire.cancel_payload`)."""
    event_name: str = "channel"
    """The socket.io event book payloads go out as (the docs do not say): `channel`, the
    channel's name with the payload (`book_BTC_USD`, [payload]); `pair`, the pair's
    (`BTC_USD`, [payload]); any other name, that event with the channel first, as Node
    broadcasters on rooms send it (`NAME`, [`book_BTC_USD`, payload])."""
    max_page: int = MAX_LIMIT
    """The most trades one `/exchanges/` page serves; a larger `limit` is served as this."""

    def __post_init__(self) -> None:
        if not self.event_name or self.event_name in RESERVED_EVENTS:
            raise ValueError(f"event_name: not a usable socket.io event {self.event_name!r}")
        if self.max_page < 1:
            raise ValueError(f"max_page: must be at least 1, not {self.max_page}")


class EventSource(Protocol):
    """What makes the book events instead of the order flow: a recorded period
    (`recorder.sim.replay.RecordedSource`). With a source the simulator makes no history,
    runs no flow and computes no candles from the events: the source fills the books, the
    trade tape and the charts itself."""

    def prepare(self, sim: Simulator) -> None:
        """Set up the books, tape and charts the server starts with (before it listens)."""
        ...

    async def run(self, sim: Simulator) -> None:
        """Make the events (`Engine.publish`), for as long as the server runs."""
        ...

    def state(self) -> dict[str, Any]:
        """Added to `/admin/state`."""
        ...


class Simulator:
    def __init__(self, settings: SimSettings, source: EventSource | None = None) -> None:
        if settings.cancel_id not in READINGS:
            raise ValueError(f"cancel_id: {settings.cancel_id!r} is not one of {READINGS}")
        self.settings = settings
        self.source = source
        self.engine = Engine([pair_spec(p) for p in settings.pairs], wall_clock(time.time_ns))
        self.flow = OrderFlow(self.engine, settings.seed)
        self.faults = Faults(seed=settings.seed)
        self.faults.update(dict(settings.faults))
        self.accounts = Accounts(self.engine, settings.seed, time.time())
        if settings.sign_encoding not in (None, *SIGN_ENCODINGS):
            raise ValueError(f"sign_encoding: not one of {', '.join(SIGN_ENCODINGS)}")
        for account in self.accounts.by_name.values():
            account.credentials.sign_encoding = settings.sign_encoding
        self.charts = Charts(list(self.engine.books))
        if source is None:
            self.engine.subscribe(self._chart_trades)
        self.public_limit = SlidingWindow(settings.public_calls_per_s)
        self.private_limit = SlidingWindow(settings.private_calls_per_s)
        self.emitted_count = 0
        self._enqueued_count = 0
        self.handed_out_count = 0
        """Book events made ahead and handed out as packets (`make_ahead`), never emitted."""
        self._ahead: list[Event] | None = None
        """While making ahead: where the engine's events go instead of the outbox."""
        self.base_url = ""
        self._outbox: deque[tuple[str, dict[str, Any], Event, float]] = deque()
        """(channel, payload, event, when it was made: `time.monotonic()`), in engine order."""
        self.deliveries = DeliveryLog() if settings.record_deliveries else None
        # Emission and dropping take turns, so that a dropped connection was sent exactly
        # the events emitted before its disconnect packet (what `deliveries` records).
        self._emitting = asyncio.Lock()
        self._outbox_ready = asyncio.Event()
        self._outbox_room = asyncio.Event()
        self._outbox_room.set()
        self._sids: dict[str, None] = {}
        """The connected clients, oldest first (a dict keeps the order they connected in)."""
        self._deaf: set[tuple[str, str]] = set()
        """(sid, channel) whose subscribe requests are acknowledged but not followed."""
        self._delisted: dict[str, tuple[PairSpec, Book]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._runner: web.AppRunner | None = None
        self.sio = socketio.AsyncServer(
            async_mode="aiohttp", serializer=wire.SocketPacket, cors_allowed_origins="*"
        )
        self.app = RestApi(self).make_app()
        self._register_socket_handlers()

    # --- life -------------------------------------------------------------------------------

    async def start(self) -> None:
        made = 0
        if self.source is not None:
            self.source.prepare(self)
        else:
            made = replay_history(
                self.flow,
                hours=self.settings.history_hours,
                events_per_hour=self.settings.history_events_per_hour,
                end_s=time.time(),
            )
            for pair in self.engine.books:
                self.flow.fill_book(pair, self.settings.book_orders)
        self.engine.subscribe(self._enqueue)
        self._runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        sock = socket.socket(
            socket.AF_INET6 if ":" in self.settings.host else socket.AF_INET, socket.SOCK_STREAM
        )
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.settings.host, self.settings.port))
        site = web.SockSite(self._runner, sock)
        await site.start()
        port = sock.getsockname()[1]
        host = f"[{self.settings.host}]" if ":" in self.settings.host else self.settings.host
        self.base_url = f"http://{host}:{port}"
        if self.settings.outage_s > 0:
            self.start_outage(self.settings.outage_s)
        self._spawn("sim-emitter", self._emit_forever())
        if self.source is not None:
            self._spawn("sim-source", self.source.run(self))
        elif self.settings.rate_per_s > 0:
            self._spawn("sim-flow", self._flow_forever(self.settings.rate_per_s))
        if self.settings.drop_every_s > 0:
            self._spawn("sim-dropper", self._drop_forever(self.settings.drop_every_s))
        if self.settings.burst_every_s > 0:
            self._spawn("sim-burster", self._burst_forever(self.settings.burst_every_s))
        log.info(
            "simulator listening",
            url=self.base_url,
            pairs=",".join(self.settings.pairs),
            history_events=made,
            rate_per_s=self.settings.rate_per_s,
        )

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        await self.drop_sockets()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        self.engine.unsubscribe(self._enqueue)

    def _spawn(self, name: str, work: Awaitable[None]) -> None:
        async def supervised() -> None:
            try:
                await work
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("simulator task failed", task=name)
                raise

        self._tasks = [task for task in self._tasks if not task.done()]
        self._tasks.append(asyncio.create_task(supervised(), name=name))

    # --- controls (also behind /admin) ------------------------------------------------------

    def pause(self) -> None:
        self.faults.paused = True

    def resume(self) -> None:
        self.faults.paused = False

    async def drained(self, timeout_s: float = 10.0) -> None:
        """Wait until every event the engine made so far has been handed to socket.io."""
        deadline = time.monotonic() + timeout_s
        while self._outbox or self.emitted_count < self._enqueued_count:
            if time.monotonic() > deadline:
                raise TimeoutError("the outbox did not drain")
            await asyncio.sleep(0.005)

    async def drop_sockets(self) -> int:
        """Disconnect every client; how many there were."""
        async with self._emitting:
            sids = list(self._sids)
            for sid in sids:
                await self.sio.disconnect(sid)
        return len(sids)

    async def drop_socket(self, sid: str | None) -> bool:
        """Disconnect one client, the others stay connected; False if `sid` is not (or no
        longer) connected, None included (what `oldest_socket` gives when none is)."""
        async with self._emitting:
            if sid not in self._sids:
                return False
            await self.sio.disconnect(sid)
        return True

    def open_sockets(self) -> list[str]:
        """The sids of the connected clients, in the order they connected."""
        return list(self._sids)

    def oldest_socket(self) -> str | None:
        """The client connected longest (a deterministic choice of one to drop, without
        asking which is which); None when none is connected."""
        return next(iter(self._sids), None)

    async def silence(self, sid: str, pair: str, *, ignore_resubscribe: bool = False) -> None:
        """Stop sending `pair`'s channel to client `sid`, without telling it: it still
        believes itself subscribed, and every other client still gets the channel. A new
        `subscribe` from it ends the silence, unless `ignore_resubscribe`: then it is
        acknowledged as usual and not followed, and only a new connection hears the pair.
        The delivery record stays exact: the channel's events after this are not sent to
        `sid` (emission and this take turns)."""
        channel = f"book_{pair}"
        async with self._emitting:
            if sid not in self._sids:
                raise ValueError(f"no connected client {sid!r}")
            await self.sio.leave_room(sid, channel)
            if ignore_resubscribe:
                self._deaf.add((sid, channel))
            if self.deliveries is not None:
                self.deliveries.silenced(sid, channel)

    def subscribers(self, channel: str | None) -> list[str]:
        """The sids in `channel`'s room (None: every connected client)."""
        return [sid for sid, _ in self.sio.manager.get_participants("/", channel)]

    def list_pair(self, name: str) -> None:
        """List a new pair at run time: in /pairs/, on the socket, in the order flow. A
        delisted pair comes back with its book and tape as they were."""
        if name in self._delisted:
            spec, book = self._delisted.pop(name)
            self.engine.specs[name] = spec
            self.engine.books[name] = book
            self.flow.pairs = sorted([*self.flow.pairs, name])
            return
        self.engine.add_pair(pair_spec(name))
        self.charts.add_pair(name)
        self.flow.add_pair(name)

    def delist_pair(self, name: str) -> None:
        """Take a pair off the exchange at run time: gone from /pairs/, its order book,
        trades and chart requests answered as for an unknown pair, no more orders."""
        self._delisted[name] = (self.engine.specs.pop(name), self.engine.books.pop(name))
        self.flow.pairs = [pair for pair in self.flow.pairs if pair != name]

    def start_outage(self, seconds: float) -> None:
        self.faults.outage_until_s = time.monotonic() + seconds
        self._spawn("sim-outage-drop", self._drop_once())

    async def _drop_once(self) -> None:
        await self.drop_sockets()

    async def burst(self, malformed: int, unknown: int) -> None:
        """Send `malformed` bad payloads on every book channel, `unknown` unknown events."""
        bad: list[Any] = [
            "not json {",
            [],
            {"success": True},
            {"success": True, "oid": "abc", "type": "hold", "price": "x", "amount": None},
            {"success": True, "date": 1, "oid": 1, "type": "buy", "price": 1, "trades": "x"},
            42,
            None,
        ]
        async with self._emitting:
            for pair in self.engine.books:
                channel = f"book_{pair}"
                for i in range(malformed):
                    name, data = self.book_emission(channel, bad[i % len(bad)])
                    self._log_sent(Garbage(name), channel)
                    await self.sio.emit(name, data, room=channel)
            for i in range(unknown):
                self._log_sent(Garbage(f"unknown_event_{i % 3}"), None)
                await self.sio.emit(f"unknown_event_{i % 3}", {"hello": i})

    def _log_sent(self, item: Event | Garbage, room: str | None) -> None:
        if self.deliveries is not None:
            self.deliveries.sent(item, self.subscribers(room))

    async def make_ahead(
        self, count: int, schedule: Schedule | None = None
    ) -> AsyncGenerator[str, None]:
        """Make `count` book events with the order flow now and emit none of them: yield
        them as `ahead.ahead_line`s (room, packet text), in the engine's order, a batch at a
        time; REST and the sockets are served between batches (dated by the wall clock
        then). Dated by `schedule` if given, else when made. The live flow must be stopped
        (paused, or no rate), so that every event it makes is either emitted or handed out.
        """
        if count < 0:
            raise ValueError(f"count: at least 0, not {count}")
        if self.settings.rate_per_s > 0 and not self.faults.paused:
            raise ValueError("making events ahead needs the order flow paused")
        if self._ahead is not None:
            raise ValueError("already making events ahead")
        made: list[Event] = []
        self._ahead = made
        live_clock = self.engine.clock
        try:
            index = 0
            while index < count:
                for _ in range(min(MAX_BATCH, count - index)):
                    if schedule is not None:
                        self.engine.clock = _fixed_clock(schedule.date(index))
                    self.flow.step()
                    index += 1
                self.engine.clock = live_clock
                lines = [self._ahead_line(event) for event in made]
                self.handed_out_count += len(made)
                made.clear()
                yield "".join(lines)
        finally:
            self.engine.clock = live_clock
            self._ahead = None

    def _ahead_line(self, event: Event) -> str:
        channel = f"book_{event.pair}"
        payload = wire.book_payload(event, self.settings.cancel_id)
        return ahead_line(channel, packet_text(*self.book_emission(channel, payload)))

    # --- order flow and emission ------------------------------------------------------------

    def _chart_trades(self, event: Event) -> None:
        if isinstance(event, NewOrder):
            for trade in event.trades:
                self.charts.add(trade)

    def _enqueue(self, event: Event) -> None:
        if self._ahead is not None:
            self._ahead.append(event)
            return
        payload = (
            wire.cancel_payload(event, self.settings.cancel_id)
            if isinstance(event, Cancel)
            else wire.new_order_payload(event)
        )
        self._outbox.append((f"book_{event.pair}", payload, event, time.monotonic()))
        self._enqueued_count += 1
        self._outbox_ready.set()

    async def _emit_forever(self) -> None:
        while True:
            await self._outbox_ready.wait()
            while self._outbox:
                held_s = self._outbox[0][3] + self.faults.stream_delay_s - time.monotonic()
                if held_s > 0:  # the stream-delay fault
                    await asyncio.sleep(held_s)
                    continue
                async with self._emitting:
                    channel, payload, event, _ = self._outbox.popleft()
                    self._log_sent(event, channel)
                    name, data = self.book_emission(channel, payload)
                    await self.sio.emit(name, data, room=channel)
                self.emitted_count += 1
                if self.emitted_count % 100 == 0:
                    await self._wait_for_slow_sockets()
                if len(self._outbox) <= MAX_OUTBOX // 2:
                    self._outbox_room.set()
            self._outbox_ready.clear()

    def book_emission(self, channel: str, payload: Any) -> tuple[str, Any]:
        """The event name and data a book payload of `channel` goes out as (a tuple of data
        is sent as that many arguments)."""
        mode = self.settings.event_name
        if mode == "channel":
            return channel, payload
        if mode == "pair":
            return channel.removeprefix("book_"), payload
        return mode, (channel, payload)

    def socket_backlog(self) -> int:
        """Packets queued for the slowest client (engine.io queues them without bound)."""
        sockets = self.sio.eio.sockets.values()
        return max((s.queue.qsize() for s in sockets), default=0)

    async def _wait_for_slow_sockets(self) -> None:
        # engine.io has no "queue drained" event to wait for
        while self.socket_backlog() > MAX_SOCKET_BACKLOG:  # noqa: ASYNC110
            await asyncio.sleep(0.002)

    async def _flow_forever(self, rate_per_s: float) -> None:
        interval_s = 1.0 / rate_per_s
        next_s = time.monotonic()
        while True:
            now_s = time.monotonic()
            if self.faults.paused:
                next_s = now_s
                await asyncio.sleep(0.01)
                continue
            if now_s < next_s:
                await asyncio.sleep(next_s - now_s)
                continue
            due = min(MAX_BATCH, int((now_s - next_s) / interval_s) + 1)
            for _ in range(due):
                if self.faults.paused:
                    break
                self.flow.step()
            next_s = max(next_s + due * interval_s, now_s - 1.0)  # owe at most a second
            await self.outbox_room()
            await asyncio.sleep(0)

    async def outbox_room(self) -> None:
        """Wait while more than `MAX_OUTBOX` events wait to be emitted: whatever makes events
        waits here, so that a slow network slows the market rather than growing memory."""
        if len(self._outbox) > MAX_OUTBOX:
            self._outbox_room.clear()
            await self._outbox_room.wait()

    async def _drop_forever(self, every_s: float) -> None:
        while True:
            await asyncio.sleep(every_s)
            await self.drop_sockets()

    async def _burst_forever(self, every_s: float) -> None:
        while True:
            await asyncio.sleep(every_s)
            await self.burst(3, 3)

    # --- socket.io --------------------------------------------------------------------------

    def _register_socket_handlers(self) -> None:
        sio = self.sio

        async def connect(sid: str, environ: dict[str, Any], auth: Any = None) -> None:
            if self.faults.in_outage(time.monotonic()):
                raise socketio.exceptions.ConnectionRefusedError("outage")
            self._sids[sid] = None
            if self.deliveries is not None:
                self.deliveries.connected(sid)

        async def disconnect(sid: str, *reason: Any) -> None:
            self._sids.pop(sid, None)
            self._deaf = {(s, channel) for s, channel in self._deaf if s != sid}
            if self.deliveries is not None:
                self.deliveries.disconnected(sid)

        async def subscribe(sid: str, channel: Any) -> dict[str, Any]:
            if not self._is_channel(channel):
                return {"success": False, "error": f"unknown channel {channel!r}"}
            if self.faults.subscribe_delay_s > 0:
                await asyncio.sleep(self.faults.subscribe_delay_s)
            if (sid, channel) not in self._deaf:
                await sio.enter_room(sid, channel)
            if self.deliveries is not None:
                self.deliveries.subscribed(sid, channel)
            return {"success": True, "channel": channel}

        async def unsubscribe(sid: str, channel: Any) -> dict[str, Any]:
            if isinstance(channel, str):  # a delisted pair's channel too
                await sio.leave_room(sid, channel)
            return {"success": True, "channel": channel}

        for handler in (connect, disconnect, subscribe, unsubscribe):
            sio.on(handler.__name__, handler)

    def _is_channel(self, channel: Any) -> bool:
        return isinstance(channel, str) and channel.removeprefix("book_") in self.engine.books

    def state(self) -> dict[str, Any]:
        source = {} if self.source is None else self.source.state()
        return source | {
            "faults": self.faults.state(time.monotonic()),
            "event_count": self.engine.event_count,
            "emitted_count": self.emitted_count,
            "handed_out_count": self.handed_out_count,
            "outbox": len(self._outbox),
            "socket_backlog": self.socket_backlog(),
            "sockets": len(self._sids),
            "trades": len(self.engine.trades),
            "pairs": list(self.engine.books),
        }


def _fixed_clock(value: Decimal) -> Callable[[], Decimal]:
    return lambda: value


@asynccontextmanager
async def run_sim(
    settings: SimSettings | None = None, **overrides: Any
) -> AsyncIterator[Simulator]:
    """A running simulator for the `async with` block; stopped (ports closed) after it."""
    sim = Simulator(replace(settings or SimSettings(), **overrides))
    await sim.start()
    try:
        yield sim
    finally:
        await sim.stop()

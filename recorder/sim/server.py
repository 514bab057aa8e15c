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

`SimSettings()` defaults: port 0 (a free one), seed 1, pairs BTC_USD and ETH_USD, 20 events/s,
one hour of history. `run_sim(port=..., ...)` also takes the settings as keywords.

What it serves (DESIGN §2, the docs' JSON shapes):

- public REST, 100 calls/s per IP (then 429): `/api/v1/currencies/`, `/api/v1/pairs/`,
  `/api/v1/orderbook/<pair>/`, `/api/v1/order/<pk>/`, `/api/v1/exchanges/`,
  `/api/charts/<pair>/<type>/chart`;
- private REST, HMAC-signed (`auth.py`), 2 calls/s per key: `/api/v1/wallets/`,
  `/api/v1/orders/own/`, POST `/api/v1/order/`, POST `/api/v1/order-cancel/`,
  `/api/v1/exchanges/own/`, `/api/v1/deposits/`, `/api/v1/withdraws/`;
- socket.io at `/socket.io/`: emit `subscribe` (or `unsubscribe`) with `book_<pair>`; every
  new order and cancel of that pair arrives as event `book_<pair>`;
- `limit` is capped at 1000 (`MAX_LIMIT`) on `/exchanges/` (both), at 2000 on `/orders/own/`
  (its default) and at 1000 on charts; a larger value is served as the cap;
- a trade's `type` is the resting (maker) order's side, on the socket and in `/exchanges/`
  alike; in `/exchanges/own/` it is the account's own side;
- `/order/<pk>/` and `/orders/own/` show the amount an order was placed with;
- the latency fault delays REST answers (not socket events);
- errors are JSON `{"detail": reason}`: 400 bad input, 401 bad auth, 403 not yours, 404;
- admin (never faulted, never rate limited): `GET /admin/state`, `POST /admin/faults`
  (JSON of `Faults` switches), `POST /admin/drop-sockets`, `POST /admin/outage
  {"seconds": N}`, `POST /admin/pause`, `POST /admin/resume`, `POST /admin/burst
  {"malformed": N, "unknown": N}`, `GET /admin/book/<pair>` (the exact ungrouped book and
  the engine's event count).

Every book event goes through one outbox and one emitter task, so sockets see events in the
engine's order. The order flow waits while the outbox is long, so a slow network slows the
market rather than growing memory.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field, replace
from decimal import Decimal, InvalidOperation
from typing import Any

import socketio  # type: ignore[import-untyped]
from aiohttp import web

from recorder.logs import get_logger
from recorder.sim import wire
from recorder.sim.accounts import Account, Accounts
from recorder.sim.auth import AuthError, verify
from recorder.sim.candles import BUCKET_SECONDS, candles
from recorder.sim.engine import (
    SIDES,
    Cancel,
    Engine,
    Event,
    Fill,
    OrderRejected,
    Side,
    UnknownOrder,
)
from recorder.sim.faults import Faults
from recorder.sim.flow import CURRENCY_SIGNS, OrderFlow, pair_spec, replay_history, wall_clock
from recorder.sim.ratelimit import SlidingWindow

log = get_logger(__name__)

MAX_LIMIT = 1000
"""The largest `limit` served on trade lists and charts; more is served as this."""
OWN_ORDERS_LIMIT = 2000
CHART_DEFAULT_LIMIT = 720
TRADES_DEFAULT_LIMIT = 100
MAX_OUTBOX = 2000
"""The order flow waits while more events than this are waiting to be emitted."""
MAX_SOCKET_BACKLOG = 5000
"""Emission waits while a socket has more packets than this queued for its client."""
MAX_BATCH = 500
"""At most this many flow events are made between two yields to the event loop."""

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


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
    faults: dict[str, Any] = field(default_factory=dict)
    """Initial fault switches (keys of `Faults.update`)."""
    outage_s: float = 0.0
    """An outage that starts with the server."""
    drop_every_s: float = 0.0
    """Drop every socket connection this often; 0: never."""


class BadRequest(Exception):
    """HTTP 400; the message is the reason."""


class Simulator:
    def __init__(self, settings: SimSettings) -> None:
        self.settings = settings
        self.engine = Engine([pair_spec(p) for p in settings.pairs], wall_clock(time.time_ns))
        self.flow = OrderFlow(self.engine, settings.seed)
        self.faults = Faults(seed=settings.seed)
        self.faults.update(dict(settings.faults))
        self.accounts = Accounts(self.engine, settings.seed, time.time())
        self.public_limit = SlidingWindow(settings.public_calls_per_s)
        self.private_limit = SlidingWindow(settings.private_calls_per_s)
        self.emitted_count = 0
        self._enqueued_count = 0
        self.base_url = ""
        self._outbox: deque[tuple[str, dict[str, Any]]] = deque()
        self._outbox_ready = asyncio.Event()
        self._outbox_room = asyncio.Event()
        self._outbox_room.set()
        self._sids: set[str] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self._runner: web.AppRunner | None = None
        self.sio = socketio.AsyncServer(
            async_mode="aiohttp", serializer=wire.SocketPacket, cors_allowed_origins="*"
        )
        self.app = self._make_app()
        self._register_socket_handlers()

    # --- life -------------------------------------------------------------------------------

    async def start(self) -> None:
        made = replay_history(
            self.flow,
            hours=self.settings.history_hours,
            events_per_hour=self.settings.history_events_per_hour,
            end_s=time.time(),
        )
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
        if self.settings.rate_per_s > 0:
            self._spawn("sim-flow", self._flow_forever(self.settings.rate_per_s))
        if self.settings.drop_every_s > 0:
            self._spawn("sim-dropper", self._drop_forever(self.settings.drop_every_s))
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
        sids = list(self._sids)
        for sid in sids:
            await self.sio.disconnect(sid)
        return len(sids)

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
        for pair in self.engine.books:
            for i in range(malformed):
                await self.sio.emit(f"book_{pair}", bad[i % len(bad)], room=f"book_{pair}")
        for i in range(unknown):
            await self.sio.emit(f"unknown_event_{i % 3}", {"hello": i})

    # --- order flow and emission ------------------------------------------------------------

    def _enqueue(self, event: Event) -> None:
        payload = (
            wire.cancel_payload(event)
            if isinstance(event, Cancel)
            else wire.new_order_payload(event)
        )
        self._outbox.append((f"book_{event.pair}", payload))
        self._enqueued_count += 1
        self._outbox_ready.set()

    async def _emit_forever(self) -> None:
        while True:
            await self._outbox_ready.wait()
            while self._outbox:
                channel, payload = self._outbox.popleft()
                await self.sio.emit(channel, payload, room=channel)
                self.emitted_count += 1
                if self.emitted_count % 100 == 0:
                    await self._wait_for_slow_sockets()
                if len(self._outbox) <= MAX_OUTBOX // 2:
                    self._outbox_room.set()
            self._outbox_ready.clear()

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
            if len(self._outbox) > MAX_OUTBOX:
                self._outbox_room.clear()
                await self._outbox_room.wait()
            await asyncio.sleep(0)

    async def _drop_forever(self, every_s: float) -> None:
        while True:
            await asyncio.sleep(every_s)
            await self.drop_sockets()

    # --- socket.io --------------------------------------------------------------------------

    def _register_socket_handlers(self) -> None:
        sio = self.sio

        async def connect(sid: str, environ: dict[str, Any], auth: Any = None) -> None:
            if self.faults.in_outage(time.monotonic()):
                raise socketio.exceptions.ConnectionRefusedError("outage")
            self._sids.add(sid)

        async def disconnect(sid: str, *reason: Any) -> None:
            self._sids.discard(sid)

        async def subscribe(sid: str, channel: Any) -> dict[str, Any]:
            if not self._is_channel(channel):
                return {"success": False, "error": f"unknown channel {channel!r}"}
            await sio.enter_room(sid, channel)
            return {"success": True, "channel": channel}

        async def unsubscribe(sid: str, channel: Any) -> dict[str, Any]:
            if self._is_channel(channel):
                await sio.leave_room(sid, channel)
            return {"success": True, "channel": channel}

        for handler in (connect, disconnect, subscribe, unsubscribe):
            sio.on(handler.__name__, handler)

    def _is_channel(self, channel: Any) -> bool:
        return isinstance(channel, str) and channel.removeprefix("book_") in self.engine.books

    # --- HTTP plumbing ----------------------------------------------------------------------

    def _make_app(self) -> web.Application:
        app = web.Application(middlewares=[self._faults_middleware])
        public = [
            ("GET", "/api/v1/currencies/", self.currencies),
            ("GET", "/api/v1/pairs/", self.pairs),
            ("GET", "/api/v1/orderbook/{pair}/", self.orderbook),
            ("GET", "/api/v1/order/{pk}/", self.order),
            ("GET", "/api/v1/exchanges/", self.exchanges),
            ("GET", "/api/charts/{pair}/{type}/chart", self.chart),
        ]
        private = [
            ("GET", "/api/v1/wallets/", self.wallets),
            ("GET", "/api/v1/orders/own/", self.own_orders),
            ("POST", "/api/v1/order/", self.create_order),
            ("POST", "/api/v1/order-cancel/", self.cancel_order),
            ("GET", "/api/v1/exchanges/own/", self.own_exchanges),
            ("GET", "/api/v1/deposits/", self.deposits),
            ("GET", "/api/v1/withdraws/", self.withdraws),
        ]
        admin = [
            ("GET", "/admin/state", self.admin_state),
            ("POST", "/admin/faults", self.admin_faults),
            ("POST", "/admin/drop-sockets", self.admin_drop),
            ("POST", "/admin/outage", self.admin_outage),
            ("POST", "/admin/pause", self.admin_pause),
            ("POST", "/admin/resume", self.admin_resume),
            ("POST", "/admin/burst", self.admin_burst),
            ("GET", "/admin/book/{pair}", self.admin_book),
        ]
        for kind, routes in (("public", public), ("private", private), ("admin", admin)):
            for method, path, handler in routes:
                app.router.add_route(method, path, handler, name=f"{kind}:{handler.__name__}")
        self.sio.attach(app)
        return app

    @web.middleware
    async def _faults_middleware(
        self, request: web.Request, handler: Handler
    ) -> web.StreamResponse:
        route = request.match_info.route.name or ""
        if route.startswith("admin:"):
            return await self._answer(request, handler)
        now_s = time.monotonic()
        if self.faults.in_outage(now_s):
            return error(502, "Bad Gateway")
        if request.path.startswith("/socket.io"):
            return await handler(request)
        if self.faults.latency_s > 0:
            await asyncio.sleep(self.faults.latency_s)
        caller = request.remote or "?"
        if route.startswith("public:") and not self.public_limit.allow(caller, now_s):
            return error(429, "Request was throttled: over 100 calls per second")
        fault = self.faults.draw_rest_fault()
        if fault == "429":
            return error(429, "Request was throttled.")
        if fault == "5xx":
            status = self.faults.pick_5xx()
            return error(status, "Server Error" if status == 500 else "Bad Gateway")
        response = await self._answer(request, handler)
        if fault == "truncated" and isinstance(response, web.Response) and response.text:
            text = response.text
            return web.Response(
                text=text[: len(text) // 2], status=response.status, content_type=JSON
            )
        return response

    async def _answer(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except BadRequest as exc:
            return error(400, str(exc))
        except AuthError as exc:
            return error(401, str(exc))
        except web.HTTPNotFound:
            return error(404, "Not found.")
        except web.HTTPMethodNotAllowed:
            return error(405, "Method not allowed.")

    # --- public endpoints -------------------------------------------------------------------

    async def currencies(self, request: web.Request) -> web.Response:
        names = sorted({c for s in self.engine.specs.values() for c in (s.currency1, s.currency2)})
        return ok([{"sign": CURRENCY_SIGNS.get(n, n), "short_name": n} for n in names])

    async def pairs(self, request: web.Request) -> web.Response:
        currency1 = request.query.get("currency1")
        currency2 = request.query.get("currency2")
        return ok(
            [
                {
                    "currency2": s.currency2,
                    "maximum_order_size": s.maximum_order_size.quantize(Decimal("1E-8")),
                    "minimum_order_size": s.minimum_order_size,
                    "currency1": s.currency1,
                    "name": s.name,
                    "price_precision": s.price_precision,
                }
                for s in self.engine.specs.values()
                if currency1 in (None, s.currency1) and currency2 in (None, s.currency2)
            ]
        )

    async def orderbook(self, request: web.Request) -> web.Response:
        book = self.engine.books.get(request.match_info["pair"])
        if book is None:
            raise web.HTTPNotFound
        group = request.query.get("group", "0")
        if group not in ("0", "1"):
            raise BadRequest("group must be 0 or 1")
        limits = {
            "sell": optional_int(request, "limit_sell"),
            "buy": optional_int(request, "limit_buy"),
        }
        body: dict[str, Any] = {}
        for side in ("sell", "buy"):
            limit = limits[side]
            if group == "1":
                levels = book.levels(side)[:limit]
                body[side] = [{"price": p, "amount": a} for p, a in levels]
            else:
                orders = book.orders(side)[:limit]
                body[side] = [
                    {"price": o.price, "id": o.oid, "amount": o.amount, "timestamp": o.timestamp}
                    for o in orders
                ]
        return ok(body)

    async def order(self, request: web.Request) -> web.Response:
        pk = request.match_info["pk"]
        order = self.engine.orders.get(int(pk)) if pk.isdigit() else None
        if order is None:
            raise web.HTTPNotFound
        return ok(wire.order_payload(order, status_as_string=True))

    async def exchanges(self, request: web.Request) -> web.Response:
        pair = request.query.get("pair")
        if pair is not None and pair not in self.engine.books:
            raise BadRequest(f"unknown pair {pair!r}")
        trades = self.engine.trades if pair is None else self.engine.trades_by_pair[pair]
        page = paginate(request, trades, TRADES_DEFAULT_LIMIT, MAX_LIMIT)
        return ok([wire.trade_payload(t) for t in page])

    async def chart(self, request: web.Request) -> web.Response:
        pair, chart_type = request.match_info["pair"], request.match_info["type"]
        if pair not in self.engine.books or chart_type not in BUCKET_SECONDS:
            raise web.HTTPNotFound
        limit = optional_int(request, "limit")
        chart = candles(
            self.engine.trades_by_pair[pair],
            chart_type,
            since=optional_int(request, "since"),
            until=optional_int(request, "until"),
            limit=min(CHART_DEFAULT_LIMIT if limit is None else limit, MAX_LIMIT),
        )
        return ok([wire.candle_payload(c) for c in chart])

    # --- private endpoints ------------------------------------------------------------------

    async def _account(self, request: web.Request) -> tuple[Account, dict[str, str]]:
        """The calling account and the request's payload, or an HTTP error."""
        key, signature, nonce = (request.headers.get(h) for h in ("X-KEY", "X-SIGN", "X-NONCE"))
        if not key or not signature or not nonce:
            raise AuthError("the X-KEY, X-SIGN and X-NONCE headers are required")
        account = self.accounts.by_key.get(key)
        if account is None:
            raise AuthError("unknown API key")
        if not self.private_limit.allow(key, time.monotonic()):
            raise web.HTTPTooManyRequests
        payload = await request_payload(request)
        verify(account.credentials, signature, nonce, payload)
        return account, payload

    async def _private(
        self, request: web.Request, answer: Callable[[Account, dict[str, str]], Any]
    ) -> web.Response:
        try:
            account, payload = await self._account(request)
        except web.HTTPTooManyRequests:
            return error(429, "Request was throttled: over 2 calls per second for this key")
        return ok(answer(account, payload))

    async def wallets(self, request: web.Request) -> web.Response:
        currency = request.query.get("currency_id")

        def answer(account: Account, _: dict[str, str]) -> Any:
            return [
                {
                    "currency": c,
                    "balance": b.quantize(Decimal("1E-8")),
                    "reserve": account.reserve(self.engine, c).quantize(Decimal("1E-8")),
                }
                for c, b in sorted(account.balances.items())
                if currency in (None, c)
            ]

        return await self._private(request, answer)

    async def own_orders(self, request: web.Request) -> web.Response:
        query = request.query
        status = query.get("status")
        limit = min(optional_int(request, "limit") or OWN_ORDERS_LIMIT, OWN_ORDERS_LIMIT)

        def answer(account: Account, _: dict[str, str]) -> Any:
            mine = [
                o
                for o in reversed(self.engine.orders.values())
                if o.owner == account.name
                and query.get("type") in (None, o.side)
                and query.get("pair") in (None, o.pair)
                and status in (None, str(o.status))
            ]
            return [wire.order_payload(o, status_as_string=False) for o in mine[:limit]]

        return await self._private(request, answer)

    async def create_order(self, request: web.Request) -> web.Response:
        def answer(account: Account, payload: dict[str, str]) -> Any:
            missing = [k for k in ("type", "pair", "amount", "price") if not payload.get(k)]
            if missing:
                raise BadRequest(f"missing parameter(s): {', '.join(missing)}")
            side, pair = payload["type"], payload["pair"]
            price, amount = decimal_param(payload, "price"), decimal_param(payload, "amount")
            try:
                self.engine.check_order(pair, side, price, amount)
            except OrderRejected as exc:
                raise BadRequest(str(exc)) from None
            if not account.can_afford(self.engine, pair, side, price, amount):  # type: ignore[arg-type]
                raise BadRequest("insufficient funds")
            event = self.engine.place(pair, side, price, amount, owner=account.name)  # type: ignore[arg-type]
            return wire.created_order_payload(event)

        return await self._private(request, answer)

    async def cancel_order(self, request: web.Request) -> web.Response:
        def answer(account: Account, payload: dict[str, str]) -> Any:
            oid_text = payload.get("order", "")
            if not oid_text.isdigit():
                raise BadRequest("order must be an order id")
            try:
                self.engine.cancel(int(oid_text), owner=account.name)
            except PermissionError as exc:
                raise _Forbidden(str(exc)) from None
            except (UnknownOrder, OrderRejected) as exc:
                raise BadRequest(str(exc)) from None
            return {"order": int(oid_text)}

        try:
            return await self._private(request, answer)
        except _Forbidden as exc:
            return error(403, str(exc))

    async def own_exchanges(self, request: web.Request) -> web.Response:
        query = request.query

        def answer(account: Account, _: dict[str, str]) -> Any:
            mine = []
            for trade in self.engine.trades:
                side = _side_of(trade, account.name)
                if side is None or query.get("type") not in (None, side):
                    continue
                if query.get("pair") not in (None, trade.pair):
                    continue
                mine.append(replace(trade, type=side))
            page = paginate(request, mine, TRADES_DEFAULT_LIMIT, MAX_LIMIT)
            return [wire.trade_payload(t) for t in page]

        return await self._private(request, answer)

    async def deposits(self, request: web.Request) -> web.Response:
        def answer(account: Account, _: dict[str, str]) -> Any:
            return [
                {"timestamp": d.timestamp, "id": d.id, "currency": d.currency, "amount": d.amount}
                for d in account.deposits
            ]

        return await self._private(request, answer)

    async def withdraws(self, request: web.Request) -> web.Response:
        currency, status = request.query.get("currency_id"), request.query.get("status")

        def answer(account: Account, _: dict[str, str]) -> Any:
            return [
                {
                    "id": w.id,
                    "timestamp": w.timestamp,
                    "currency": w.currency,
                    "amount": w.amount,
                    "status": w.status,
                }
                for w in account.withdraws
                if currency in (None, w.currency) and status in (None, str(w.status))
            ]

        return await self._private(request, answer)

    # --- admin --------------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        return {
            "faults": self.faults.state(time.monotonic()),
            "event_count": self.engine.event_count,
            "emitted_count": self.emitted_count,
            "outbox": len(self._outbox),
            "socket_backlog": self.socket_backlog(),
            "sockets": len(self._sids),
            "trades": len(self.engine.trades),
            "pairs": list(self.engine.books),
        }

    async def admin_state(self, request: web.Request) -> web.Response:
        return ok(self.state())

    async def admin_faults(self, request: web.Request) -> web.Response:
        changes = await admin_json(request)
        try:
            self.faults.update(changes)
        except ValueError as exc:
            raise BadRequest(str(exc)) from None
        return ok(self.state())

    async def admin_drop(self, request: web.Request) -> web.Response:
        return ok({"dropped": await self.drop_sockets()})

    async def admin_outage(self, request: web.Request) -> web.Response:
        seconds = (await admin_json(request)).get("seconds")
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds < 0:
            raise BadRequest("seconds must be a number >= 0")
        self.start_outage(float(seconds))
        return ok(self.state())

    async def admin_pause(self, request: web.Request) -> web.Response:
        self.pause()
        return ok(self.state())

    async def admin_resume(self, request: web.Request) -> web.Response:
        self.resume()
        return ok(self.state())

    async def admin_burst(self, request: web.Request) -> web.Response:
        body = await admin_json(request)
        counts = [body.get("malformed", 0), body.get("unknown", 0)]
        if any(isinstance(n, bool) or not isinstance(n, int) or n < 0 for n in counts):
            raise BadRequest("malformed and unknown must be integers >= 0")
        await self.burst(counts[0], counts[1])
        return ok({"malformed": counts[0], "unknown": counts[1]})

    async def admin_book(self, request: web.Request) -> web.Response:
        book = self.engine.books.get(request.match_info["pair"])
        if book is None:
            raise web.HTTPNotFound
        return ok(
            {
                "event_count": self.engine.event_count,
                **{
                    side: [
                        {
                            "price": o.price,
                            "id": o.oid,
                            "amount": o.amount,
                            "timestamp": o.timestamp,
                        }
                        for o in book.orders(side)
                    ]
                    for side in SIDES
                },
            }
        )


class _Forbidden(Exception):
    """HTTP 403: the order is someone else's."""


def _side_of(trade: Fill, name: str) -> Side | None:
    if trade.maker_owner == name:
        return trade.type
    if trade.taker_owner == name:
        return "sell" if trade.type == "buy" else "buy"
    return None


JSON = "application/json"


def ok(body: Any) -> web.Response:
    return web.Response(text=wire.dumps(body), content_type=JSON)


def error(status: int, detail: str) -> web.Response:
    return web.Response(text=wire.dumps({"detail": detail}), status=status, content_type=JSON)


def optional_int(request: web.Request, name: str) -> int | None:
    text = request.query.get(name)
    if text is None or text == "":
        return None
    try:
        value = int(text)
    except ValueError:
        raise BadRequest(f"{name} must be an integer, got {text[:40]!r}") from None
    if value < 0:
        raise BadRequest(f"{name} must be >= 0")
    return value


def paginate(request: web.Request, rows: list[Fill], default: int, cap: int) -> list[Fill]:
    """`limit`, `offset` and `ordering` (id | -id) of a trade list."""
    limit = optional_int(request, "limit")
    limit = min(default if limit is None else limit, cap)
    offset = optional_int(request, "offset") or 0
    ordering = request.query.get("ordering", "-id")
    if ordering == "id":
        return rows[offset : offset + limit]
    if ordering == "-id":
        end = len(rows) - offset
        return rows[max(0, end - limit) : max(0, end)][::-1]
    raise BadRequest("ordering must be id or -id")


def decimal_param(payload: dict[str, str], name: str) -> Decimal:
    try:
        value = Decimal(payload[name])
    except InvalidOperation:
        raise BadRequest(f"{name} must be a number") from None
    if not value.is_finite():
        raise BadRequest(f"{name} must be a number")
    return value


async def request_payload(request: web.Request) -> dict[str, str]:
    """The signed payload: a POST's form or JSON body as text values; {} for a GET."""
    if request.method == "GET":
        return {}
    if request.content_type == JSON:
        try:
            body = json.loads(await request.text(), parse_float=str)
        except json.JSONDecodeError:
            raise BadRequest("the body is not valid JSON") from None
        if not isinstance(body, dict):
            raise BadRequest("the body must be a JSON object")
        return {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in body.items()}
    form = await request.post()
    return {k: v for k, v in form.items() if isinstance(v, str)}


async def admin_json(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    try:
        body = json.loads(await request.text())
    except json.JSONDecodeError:
        raise BadRequest("the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    return body


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

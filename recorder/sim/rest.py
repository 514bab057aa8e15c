"""The simulator's REST API: the exchange's v1 endpoints and the admin endpoints.

`RestApi(sim).make_app()` builds the aiohttp application; every handler reads and changes
the `Simulator` it was given (its engine, accounts, fault switches). The middleware applies
the faults and the public rate limit before a handler runs; handlers raise `BadRequest`,
`AuthError` or aiohttp's 404 and the middleware turns them into the docs' error answers.
What is served, and how, is listed in `recorder.sim.server`'s docstring.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from contextlib import aclosing
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

from aiohttp import web

from recorder.config import is_candle_type
from recorder.records import is_listed_pair_name
from recorder.sim import wire
from recorder.sim.accounts import Account
from recorder.sim.ahead import Schedule
from recorder.sim.auth import AuthError, verify
from recorder.sim.engine import SIDES, Fill, OrderRejected, UnknownOrder
from recorder.sim.flow import CURRENCY_SIGNS

if TYPE_CHECKING:
    from recorder.sim.server import Simulator

MAX_LIMIT = 1000
"""The largest `limit` served on trade lists and charts; more is served as this."""
OWN_ORDERS_LIMIT = 2000
CHART_DEFAULT_LIMIT = 720
TRADES_DEFAULT_LIMIT = 100
JSON = "application/json"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class BadRequest(Exception):
    """HTTP 400; the message is the reason."""


class RestApi:
    def __init__(self, sim: Simulator) -> None:
        self.sim = sim

    # --- HTTP plumbing ----------------------------------------------------------------------

    def make_app(self) -> web.Application:
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
            ("POST", "/admin/pairs", self.admin_list_pair),
            ("POST", "/admin/ahead", self.admin_ahead),
        ]
        for kind, routes in (("public", public), ("private", private), ("admin", admin)):
            for method, path, handler in routes:
                app.router.add_route(method, path, handler, name=f"{kind}:{handler.__name__}")
        self.sim.sio.attach(app)
        return app

    @web.middleware
    async def _faults_middleware(
        self, request: web.Request, handler: Handler
    ) -> web.StreamResponse:
        route = request.match_info.route.name or ""
        if route.startswith("admin:"):
            return await self._answer(request, handler)
        now_s = time.monotonic()
        if self.sim.faults.in_outage(now_s):
            return error(502, "Bad Gateway")
        if request.path.startswith("/socket.io"):
            return await handler(request)
        if self.sim.faults.latency_s > 0:
            await asyncio.sleep(self.sim.faults.latency_s)
        caller = request.remote or "?"
        if route.startswith("public:") and not self.sim.public_limit.allow(caller, now_s):
            return error(429, "Request was throttled: over 100 calls per second")
        fault = self.sim.faults.draw_rest_fault()
        if fault == "429":
            return error(429, "Request was throttled.")
        if fault == "5xx":
            status = self.sim.faults.pick_5xx()
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
        names = sorted(
            {c for s in self.sim.engine.specs.values() for c in (s.currency1, s.currency2)}
        )
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
                for s in self.sim.engine.specs.values()
                if currency1 in (None, s.currency1) and currency2 in (None, s.currency2)
            ]
        )

    async def orderbook(self, request: web.Request) -> web.Response:
        book = self.sim.engine.books.get(request.match_info["pair"])
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
        order = self.sim.engine.orders.get(int(pk)) if pk.isdigit() else None
        if order is None:
            raise web.HTTPNotFound
        return ok(wire.order_payload(order, status_as_string=True))

    async def exchanges(self, request: web.Request) -> web.Response:
        pair = request.query.get("pair")
        if pair is not None and pair not in self.sim.engine.books:
            raise BadRequest(f"unknown pair {pair!r}")
        trades = self.sim.engine.trades if pair is None else self.sim.engine.trades_by_pair[pair]
        page = paginate(request, trades, TRADES_DEFAULT_LIMIT, self.sim.settings.max_page)
        return ok([wire.trade_payload(t) for t in page])

    async def chart(self, request: web.Request) -> web.Response:
        pair, chart_type = request.match_info["pair"], request.match_info["type"]
        if pair not in self.sim.engine.books or not is_candle_type(chart_type):
            raise web.HTTPNotFound
        limit = optional_int(request, "limit")
        chart = self.sim.charts.series[pair][chart_type].select(
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
        account = self.sim.accounts.by_key.get(key)
        if account is None:
            raise AuthError("unknown API key")
        if not self.sim.private_limit.allow(key, time.monotonic()):
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
                    "reserve": account.reserve(self.sim.engine, c).quantize(Decimal("1E-8")),
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
            orders = (self.sim.engine.orders[oid] for oid in reversed(account.order_ids))
            mine = [
                o
                for o in orders
                if query.get("type") in (None, o.side)
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
                self.sim.engine.check_order(pair, side, price, amount)
            except OrderRejected as exc:
                raise BadRequest(str(exc)) from None
            if not account.can_afford(self.sim.engine, pair, side, price, amount):  # type: ignore[arg-type]
                raise BadRequest("insufficient funds")
            event = self.sim.engine.place(pair, side, price, amount, owner=account.name)  # type: ignore[arg-type]
            return wire.created_order_payload(event)

        return await self._private(request, answer)

    async def cancel_order(self, request: web.Request) -> web.Response:
        def answer(account: Account, payload: dict[str, str]) -> Any:
            oid_text = payload.get("order", "")
            if not oid_text.isdigit():
                raise BadRequest("order must be an order id")
            try:
                self.sim.engine.cancel(int(oid_text), owner=account.name)
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
            mine = [
                t
                for t in account.trades
                if query.get("type") in (None, t.type) and query.get("pair") in (None, t.pair)
            ]
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

    async def admin_state(self, request: web.Request) -> web.Response:
        return ok(self.sim.state())

    async def admin_faults(self, request: web.Request) -> web.Response:
        changes = await admin_json(request)
        try:
            self.sim.faults.update(changes)
        except ValueError as exc:
            raise BadRequest(str(exc)) from None
        return ok(self.sim.state())

    async def admin_drop(self, request: web.Request) -> web.Response:
        return ok({"dropped": await self.sim.drop_sockets()})

    async def admin_outage(self, request: web.Request) -> web.Response:
        seconds = (await admin_json(request)).get("seconds")
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds < 0:
            raise BadRequest("seconds must be a number >= 0")
        self.sim.start_outage(float(seconds))
        return ok(self.sim.state())

    async def admin_list_pair(self, request: web.Request) -> web.Response:
        name = (await admin_json(request)).get("name")
        if not is_listed_pair_name(name):
            raise BadRequest("name must be a pair name like LTC_USD")
        self.sim.list_pair(name)
        return ok(self.sim.state())

    async def admin_pause(self, request: web.Request) -> web.Response:
        self.sim.pause()
        return ok(self.sim.state())

    async def admin_resume(self, request: web.Request) -> web.Response:
        self.sim.resume()
        return ok(self.sim.state())

    async def admin_burst(self, request: web.Request) -> web.Response:
        body = await admin_json(request)
        counts = [body.get("malformed", 0), body.get("unknown", 0)]
        if any(isinstance(n, bool) or not isinstance(n, int) or n < 0 for n in counts):
            raise BadRequest("malformed and unknown must be integers >= 0")
        await self.sim.burst(counts[0], counts[1])
        return ok({"malformed": counts[0], "unknown": counts[1]})

    async def admin_ahead(self, request: web.Request) -> web.StreamResponse:
        """`{"events": N}`, optionally with `"start_s"` and `"rate_per_s"` (a `Schedule`):
        N book events made now and not emitted, answered as text, one `ahead_line` each."""
        body = await admin_json(request)
        count = body.get("events")
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise BadRequest("events must be an integer >= 1")
        timing = [body.get("start_s"), body.get("rate_per_s")]
        schedule = None
        if timing != [None, None]:
            if any(isinstance(v, bool) or not isinstance(v, int | float) for v in timing):
                raise BadRequest("start_s and rate_per_s must be numbers, both or neither")
            try:
                schedule = Schedule(float(timing[0]), float(timing[1]))  # type: ignore[arg-type]
            except ValueError as exc:
                raise BadRequest(str(exc)) from None
        response = web.StreamResponse(headers={"Content-Type": "text/plain; charset=utf-8"})
        async with aclosing(self.sim.make_ahead(count, schedule)) as batches:
            try:
                first = await anext(batches)  # the checks run here, before any answer
            except ValueError as exc:
                raise BadRequest(str(exc)) from None
            await response.prepare(request)
            await response.write(first.encode())
            async for lines in batches:
                await response.write(lines.encode())
        await response.write_eof()
        return response

    async def admin_book(self, request: web.Request) -> web.Response:
        book = self.sim.engine.books.get(request.match_info["pair"])
        if book is None:
            raise web.HTTPNotFound
        return ok(
            {
                "event_count": self.sim.engine.event_count,
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

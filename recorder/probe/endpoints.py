"""Every public REST endpoint, asked once through the recorder's own client, and the trade
page size catch-up will be served.

Each call is made once, without the client's retries, so that the report shows what the
exchange answered (the daemon retries 429s, 5xx and timeouts). A call fails the probe only
when recording needs that endpoint; the grouped book and `/order/<pk>/` are reported but
not needed.
"""

from __future__ import annotations

import functools
import itertools
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from recorder.config import CANDLE_TYPES, Config
from recorder.exchange import paging
from recorder.exchange.parse import OrderBook
from recorder.exchange.rest import (
    BadRequest,
    ExchangeClient,
    ExchangeError,
    HttpError,
    MalformedResponse,
    RateLimited,
    ServerError,
)
from recorder.probe.observe import ObservingTransport
from recorder.probe.report import Finding, Outcome
from recorder.records import Trade

T = TypeVar("T")

CANDLES_ASKED = 5
TRADES_ASKED = 100
BODY_EXCERPT_CHARS = 200
_HTTP_STATUS = re.compile(r"^HTTP \d+: ")


@dataclass(frozen=True, slots=True)
class Called(Generic[T]):
    finding: Finding
    value: T | None


def failure_status(exc: ExchangeError) -> int | None:
    if isinstance(exc, HttpError | RateLimited | ServerError):
        return exc.status
    if isinstance(exc, MalformedResponse):
        return 200
    return None


def reason_of(exc: ExchangeError) -> str:
    """The error's message without the endpoint name it starts with."""
    return str(exc).removeprefix(f"{exc.endpoint}: ")


async def call_endpoint(
    key: str,
    request: str,
    fetch: Callable[[], Awaitable[T]],
    describe: Callable[[T], tuple[str, Mapping[str, Any]]],
    *,
    transport: ObservingTransport,
    needed: bool = True,
) -> Called[T]:
    """Make one call; a finding with its status, latency and what was parsed, or why not.

    `request` is `METHOD /path?query` as shown to people; its path finds the call's HTTP
    status among the exchanges the transport saw (other calls may run meanwhile).
    """
    path = request.split(" ", 1)[1].split("?", 1)[0]
    seen = len(transport.exchanges)
    started = time.perf_counter()
    details: dict[str, Any] = {"request": request, "needed_for_recording": needed}
    try:
        value = await fetch()
    except ValueError as exc:  # the client refused to ask: a listed pair name it cannot send
        details |= {"status": None, "parsed": False, "error": str(exc)}
        summary = f"not asked: {exc}"
        return Called(Finding(key, "fail" if needed else "warn", summary, details), None)
    except ExchangeError as exc:
        latency_ms = (time.perf_counter() - started) * 1000
        status = _status_seen(transport, seen, path) or failure_status(exc)
        error = _HTTP_STATUS.sub("", reason_of(exc))
        details |= {"status": status, "latency_ms": latency_ms, "parsed": False, "error": error}
        if isinstance(exc, MalformedResponse):
            details["error"] = error = f"not parsed: {exc.reason}"
            details["body_start"] = exc.text[:BODY_EXCERPT_CHARS]
        answered = f"HTTP {status}" if status is not None else "no answer"
        summary = f"{answered} in {latency_ms:.0f} ms: {error}"
        return Called(Finding(key, "fail" if needed else "warn", summary, details), None)
    latency_ms = (time.perf_counter() - started) * 1000
    status = _status_seen(transport, seen, path)
    what, more = describe(value)
    details |= {"status": status, "latency_ms": latency_ms, "parsed": True, "error": None, **more}
    summary = f"HTTP {status} in {latency_ms:.0f} ms: {what}"
    return Called(Finding(key, "ok", summary, details), value)


def plural(count: int, noun: str, nouns: str | None = None) -> str:
    return f"{count} {noun if count == 1 else nouns or noun + 's'}"


def _status_seen(transport: ObservingTransport, seen: int, path: str) -> int | None:
    for exchange in reversed(transport.exchanges[seen:]):
        if exchange.path.endswith(path):  # base_url may have a path of its own
            return exchange.status
    return None


# --- the public endpoints -------------------------------------------------------------------


@dataclass
class PublicEndpoints:
    """The findings, and what later checks build on."""

    findings: list[Finding] = field(default_factory=list)
    listed_pairs: list[str] | None = None
    """The pairs `/pairs/` listed; None when it failed."""
    pair: str | None = None
    """The pair whose book, order, trades and candles were asked for."""
    book: OrderBook | None = None
    newest_trades: list[Trade] = field(default_factory=list)


def probe_pair(config: Config, listed: list[str] | None) -> str | None:
    """The first configured pair, or with `pairs = ["*"]` the first one listed."""
    if not config.recorder.all_pairs:
        return config.recorder.pairs[0]
    return listed[0] if listed else None


async def check_public_endpoints(
    client: ExchangeClient, transport: ObservingTransport, config: Config
) -> PublicEndpoints:
    found = PublicEndpoints()

    async def call(
        key: str,
        request: str,
        fetch: Callable[[], Awaitable[T]],
        describe: Callable[[T], tuple[str, Mapping[str, Any]]],
        needed: bool = True,
    ) -> T | None:
        called = await call_endpoint(
            key, request, fetch, describe, transport=transport, needed=needed
        )
        found.findings.append(called.finding)
        return called.value

    await call(
        "rest.currencies",
        "GET /api/v1/currencies/",
        client.currencies,
        lambda cs: (plural(len(cs), "currency", "currencies"), {"items": len(cs)}),
    )
    pairs = await call("rest.pairs", "GET /api/v1/pairs/", client.pairs, _describe_pairs(config))
    found.listed_pairs = [p.name for p in pairs] if pairs is not None else None
    pair = found.pair = probe_pair(config, found.listed_pairs)
    if pair is None:
        for key in ("rest.orderbook", "rest.orderbook_grouped", "rest.order", "rest.exchanges"):
            found.findings.append(_no_pair(key))
        found.findings += [_no_pair(f"rest.chart.{t}") for t in CANDLE_TYPES]
        return found

    found.book = await call(
        "rest.orderbook",
        f"GET /api/v1/orderbook/{pair}/?group=0",
        lambda: client.orderbook(pair, grouped=False, reason="probe"),
        _describe_book,
    )
    await call(
        "rest.orderbook_grouped",
        f"GET /api/v1/orderbook/{pair}/?group=1",
        lambda: client.orderbook(pair, grouped=True, reason="probe"),
        _describe_book,
        needed=False,
    )
    order_id = _an_order_id(found.book)
    if order_id is None:
        found.findings.append(
            Finding("rest.order", "skip", "no order id to ask for: the ungrouped book is empty")
        )
    else:
        await call(
            "rest.order",
            f"GET /api/v1/order/{order_id}/",
            lambda: client.order(order_id),
            lambda o: (
                f"order {o.id}: {o.type} {o.amount} @ {o.price}, status {o.status}"
                + ("" if o.id == order_id else f" (asked for {order_id})"),
                {"order_id": order_id, "answered_id": o.id, "order_status": o.status},
            ),
            needed=False,
        )
    trades = await call(
        "rest.exchanges",
        f"GET /api/v1/exchanges/?pair={pair}&limit={TRADES_ASKED}&ordering=-id",
        lambda: client.trades(pair, limit=TRADES_ASKED, ordering="-id"),
        _describe_trades,
    )
    found.newest_trades = trades or []
    for resolution in CANDLE_TYPES:
        await call(
            f"rest.chart.{resolution}",
            f"GET /api/charts/{pair}/{resolution}/chart?limit={CANDLES_ASKED}",
            functools.partial(client.candles, pair, resolution, limit=CANDLES_ASKED),
            lambda cs: (
                plural(len(cs), "candle")
                + (f", newest {cs[-1].bucket:%Y-%m-%d %H:%M}" if cs else ""),
                {"items": len(cs)},
            ),
            needed=resolution in config.recorder.candle_types,
        )
    return found


def _no_pair(key: str) -> Finding:
    return Finding(key, "skip", "no pair to ask about: /pairs/ gave none and none is configured")


def _describe_pairs(config: Config) -> Callable[[list[Any]], tuple[str, dict[str, Any]]]:
    def describe(pairs: list[Any]) -> tuple[str, dict[str, Any]]:
        names = [p.name for p in pairs]
        text = plural(len(names), "pair")
        details: dict[str, Any] = {"items": len(names), "pairs": names}
        if not config.recorder.all_pairs:
            missing = [p for p in config.recorder.pairs if p not in names]
            details["configured_not_listed"] = missing
            if missing:
                text += f"; configured but not listed: {', '.join(missing)}"
        return text, details

    return describe


def _describe_book(book: OrderBook) -> tuple[str, dict[str, Any]]:
    sells = sum(1 for o in book.orders if o.side == "sell")
    buys = len(book.orders) - sells
    return f"{sells} sell and {buys} buy levels", {"sell_levels": sells, "buy_levels": buys}


def _an_order_id(book: OrderBook | None) -> int | None:
    if book is None:
        return None
    return next((o.order_id for o in book.orders if o.order_id is not None), None)


def _describe_trades(trades: list[Trade]) -> tuple[str, dict[str, Any]]:
    if not trades:
        return "no trades", {"items": 0}
    newest = max(trades, key=lambda t: t.tid)
    return (
        f"{plural(len(trades), 'trade')}, newest id {newest.tid} at {newest.ts:%Y-%m-%d %H:%M:%S}",
        {"items": len(trades), "newest_id": newest.tid, "newest_ts": newest.ts},
    )


# --- the largest trade page -----------------------------------------------------------------


async def largest_trade_page(client: ExchangeClient) -> Finding:
    """Ask the whole tape for the page catch-up asks for, and tell a cap from the tape's end.

    Catch-up asks every page for `paging.ASK` trades, and for the documented
    `paging.DOCUMENTED_LIMIT` once that is refused (400); the probe asks the same, so the
    cap it reports is the one `paging.PageSize` learns while paging: the length of a page
    that came back shorter than asked from a tape that held more.

    `paging.PageSize` needs a second page to tell a cap from the end; here the newest trade
    is asked for first instead: a page that stops short of it was capped, one that reaches
    it held the whole tape. Trades made meanwhile only come after it, so a live tape does
    not pass for a capped one. Oldest first (`ordering=id`), offsets stay put while new
    trades arrive, so the trade at offset `n` after a page of `n` must be newer than the
    page's last; catch-up relies on that, and a trade the page already held there means the
    exchange ignores `offset`.
    """
    key = "trades.page"
    try:
        newest = await client.trades(None, limit=1, ordering="-id")
    except ExchangeError as exc:
        return Finding(key, "fail", f"the newest trade: {reason_of(exc)}")
    details: dict[str, Any] = {
        "catch_up_asks": paging.ASK,
        "catch_up_falls_back_to": paging.DOCUMENTED_LIMIT,
        "refused": [],
    }
    page: list[Trade] | None = None
    for asked in (paging.ASK, paging.DOCUMENTED_LIMIT):
        details["asked"] = asked
        try:
            page = await client.trades(None, limit=asked, offset=0, ordering="id")
            break
        except BadRequest as exc:
            details["refused"].append(f"limit={asked}: {exc.reason}")
        except ExchangeError as exc:
            return Finding(key, "fail", f"limit={asked}: {reason_of(exc)}", details)
    if page is None:
        text = "; ".join(details["refused"]) + ": catch-up cannot page the tape"
        return Finding(key, "fail", text, details)
    fallback = asked < paging.ASK
    outcome: Outcome = "warn" if fallback else "ok"
    catch_up = f"catch-up asks for {paging.ASK}"
    if fallback:
        catch_up = f"catch-up's limit={paging.ASK} is refused, so it asks for {asked}"
    got = len(page)
    details["got"] = got
    if any(later.tid <= earlier.tid for earlier, later in itertools.pairwise(page)):
        return Finding(key, "fail", "ordering=id is not in ascending id order", details)
    if not page or not newest:
        text = f"the tape is empty: no page size to learn; {catch_up}"
        return Finding(key, "warn", text, details)
    try:
        beyond = await client.trades(None, limit=1, offset=got, ordering="id")
    except ExchangeError as exc:
        details |= {"verdict": "unknown", "cap": None}
        text = f"{got} of {asked} came back; the next offset failed: {reason_of(exc)}"
        return Finding(key, "warn", text, details)
    last = page[-1].tid
    if beyond and beyond[0].tid <= last:
        details |= {"verdict": "offset ignored", "cap": None}
        text = (
            f"offset={got} gave trade {beyond[0].tid}, which the first page held: "
            "the exchange seems to ignore offset, which catch-up pages by"
        )
        return Finding(key, "fail", text, details)
    if got == asked:
        details |= {"verdict": "at least", "cap": None}
        text = f"serves at least {asked} trades a page: {catch_up}, and gets full pages"
        return Finding(key, outcome, text, details)
    if last < newest[0].tid:
        details |= {"verdict": "capped", "cap": got}
        text = f"capped at {got} trades a page: {catch_up} and pages by {got}"
        return Finding(key, outcome, text, details)
    details |= {"verdict": "tape shorter", "cap": None}
    text = (
        f"the whole tape is {got} trades, fewer than the {asked} asked: no cap seen up to "
        f"{got}; {catch_up}"
    )
    return Finding(key, outcome, text, details)

"""Trade paging against a real loopback server whose tape grows (and shrinks) while we page,
and against an in-memory tape; candle paging against an in-memory chart that keeps to the
documented rule."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recorder.config import CANDLE_WIDTH_S
from recorder.exchange.paging import (
    ASK,
    CANDLE_LIMIT,
    POLL_LIMIT,
    PageSize,
    PagingError,
    candles_before,
    candles_from,
    forward_windows,
    trades_after,
    trades_since,
)
from recorder.exchange.rest import BadRequest, ExchangeClient, ServerError
from recorder.records import Candle, Trade
from tests.exchange.chart import Chart
from tests.exchange.loopback import FakeExchange, Seen


@pytest.fixture
async def client(exchange: FakeExchange) -> AsyncIterator[ExchangeClient]:
    async with ExchangeClient(exchange.url) as c:
        yield c


async def collect(it: AsyncIterator[Trade]) -> list[int]:
    return [t.tid async for t in it]


def tape(exchange: FakeExchange, pair: str) -> list[int]:
    return sorted(t["id"] for t in exchange.trades if t["pair"] == pair)


def fill(exchange: FakeExchange, count: int) -> None:
    # interleaved pairs: ids are global, so one pair's ids have gaps
    for i in range(count):
        exchange.add_trade("BTC_USD" if i % 3 else "ETH_USD")


async def test_everything_from_the_start_in_id_order(
    exchange: FakeExchange, client: ExchangeClient
) -> None:
    fill(exchange, 400)
    got = await collect(trades_after(client, "BTC_USD", None, pages=PageSize(ask=50)))
    assert got == tape(exchange, "BTC_USD")


async def test_a_poll_with_few_new_trades_is_one_request(
    exchange: FakeExchange, client: ExchangeClient
) -> None:
    fill(exchange, 400)
    last = tape(exchange, "BTC_USD")[-5]
    got = await collect(trades_after(client, "BTC_USD", last))
    assert got == tape(exchange, "BTC_USD")[-4:]
    assert len(exchange.seen) == 1
    assert exchange.seen[0].query["limit"] == "100"  # a poll's page is the documented default


async def test_new_trades_arriving_during_paging_are_each_returned_once(
    exchange: FakeExchange, client: ExchangeClient
) -> None:
    fill(exchange, 600)
    last = tape(exchange, "BTC_USD")[20]
    at_start = [t for t in tape(exchange, "BTC_USD") if t > last]

    def busy_market(seen: Seen) -> None:
        fill(exchange, 7)  # every request sees 7 more trades, some of them ours

    exchange.before_trades = busy_market
    got = await collect(trades_after(client, "BTC_USD", last, pages=PageSize(ask=40)))
    assert len(got) == len(set(got))
    assert got == sorted(got)
    assert set(at_start) <= set(got)
    # everything up to the last trade returned, nothing skipped
    assert got == [t for t in tape(exchange, "BTC_USD") if last < t <= got[-1]]
    # and the next call, from there, returns the rest
    exchange.before_trades = None
    rest = await collect(trades_after(client, "BTC_USD", got[-1], pages=PageSize(ask=40)))
    assert got + rest == [t for t in tape(exchange, "BTC_USD") if t > last]


async def test_offsets_that_move_back_are_found_again(
    exchange: FakeExchange, client: ExchangeClient
) -> None:
    fill(exchange, 300)
    old = tape(exchange, "BTC_USD")[:10]

    def exchange_forgets_old_trades(seen: Seen) -> None:
        if seen.query.get("ordering") == "id" and seen.query.get("limit") != "1" and old:
            # an old trade disappears: every later ascending offset moves back by one
            gone = old.pop()
            exchange.trades = [t for t in exchange.trades if t["id"] != gone]

    exchange.before_trades = exchange_forgets_old_trades
    got = await collect(trades_after(client, "BTC_USD", None, pages=PageSize(ask=20)))
    assert got == sorted(set(got))
    remaining = tape(exchange, "BTC_USD")
    assert set(remaining) <= set(got)


async def test_since_a_time(exchange: FakeExchange, client: ExchangeClient) -> None:
    fill(exchange, 200)  # trade n was made at 1700000000 + n
    since = datetime.fromtimestamp(1700000150, UTC)
    got = await collect(trades_since(client, "BTC_USD", since, pages=PageSize(ask=16)))
    assert got == [t for t in tape(exchange, "BTC_USD") if t >= 150]


async def test_an_empty_tape(exchange: FakeExchange, client: ExchangeClient) -> None:
    assert await collect(trades_after(client, "BTC_USD", None)) == []
    assert await collect(trades_after(client, "BTC_USD", 10)) == []


async def test_ids_out_of_order_are_refused(exchange: FakeExchange, client: ExchangeClient) -> None:
    fill(exchange, 30)
    exchange.before_trades = lambda seen: exchange.trades.append(
        {"id": 2, "pair": "BTC_USD", "type": "buy", "price": 1, "amount": 1, "timestamp": 1}
    )
    with pytest.raises(PagingError, match="ordering=id gave trade"):
        await collect(trades_after(client, "BTC_USD", None))


class MovingTape:
    """An in-memory tape that changes before every request, as a busy exchange's does.

    `cap`: the most trades it serves per page, whatever `limit` asks (a larger limit is
    served as the cap, as Django REST framework's pagination does); `refuse_above`: a
    limit above this is answered 400 instead.
    """

    def __init__(
        self,
        ids: list[int],
        appends: list[int] | None = None,
        deletions: dict[int, int] | None = None,
        *,
        cap: int = 10**9,
        refuse_above: int | None = None,
    ) -> None:
        self.ids = sorted(set(ids))
        self.top = self.ids[-1] if self.ids else 0  # ids are never given twice
        self.appends = appends or [0]  # new trades before each request, cycling
        self.deletions = deletions or {}  # request number -> old trades that vanish before it
        self.cap = cap
        self.refuse_above = refuse_above
        self.deleted: set[int] = set()
        self.requests = 0
        self.limits: list[int] = []  # the limit of every request, in order

    def grow(self, count: int) -> None:
        self.ids += range(self.top + 1, self.top + 1 + count)
        self.top += count

    async def trades(
        self,
        pair: str | None = None,
        *,
        limit: int | None = None,
        offset: int | None = None,
        ordering: str | None = None,
    ) -> list[Trade]:
        limit = 100 if limit is None else limit
        self.limits.append(limit)
        if self.refuse_above is not None and limit > self.refuse_above:
            raise BadRequest("exchanges", 400, f"limit must be at most {self.refuse_above}")
        appended = self.appends[self.requests % len(self.appends)]
        deleted = self.deletions.get(self.requests, 0)
        self.requests += 1
        assert self.requests < 10_000, "paging does not end"
        self.grow(appended)
        for _ in range(min(deleted, len(self.ids))):
            self.deleted.add(self.ids.pop(0))  # the oldest go: offsets move back
        rows = self.ids if ordering == "id" else self.ids[::-1]
        start = offset or 0
        return [_trade(tid) for tid in rows[start : start + min(limit, self.cap)]]


def _trade(tid: int) -> Trade:
    return Trade(
        pair="BTC_USD",
        tid=tid,
        ts=datetime.fromtimestamp(1700000000 + tid, UTC),
        type="buy",
        price=Decimal(1),
        amount=Decimal(1),
        received_at=datetime(2026, 1, 1, tzinfo=UTC),
    )


CAPS = [1, 7, 100, 1000, 5000]


def calm(appends: list[int], cap: int) -> list[int]:
    """New trades per request slower than the pager reads them, or no pager could catch up:
    at a cap of one trade a page, which costs two requests, one new trade every third."""
    if cap > 1:
        return appends
    return [min(a, 1) if i % 3 == 0 else 0 for i, a in enumerate(appends)] + [0, 0]


@given(
    ids=st.lists(st.integers(1, 2000), max_size=300)
    | st.integers(0, 400).map(lambda n: list(range(1, 3 * n, 3))),  # long tapes: many pages
    appends=st.lists(st.integers(0, 3), min_size=1, max_size=6),
    deletions=st.dictionaries(st.integers(0, 20), st.integers(1, 3), max_size=4),
    last_tid=st.none() | st.integers(0, 2100),
    cap=st.sampled_from(CAPS),
    ask=st.sampled_from([ASK, ASK, 8, 40]),
)
@settings(max_examples=400, deadline=None)
def test_paging_property_every_surviving_trade_exactly_once_in_order(
    ids: list[int],
    appends: list[int],
    deletions: dict[int, int],
    last_tid: int | None,
    cap: int,
    ask: int,
) -> None:
    source = MovingTape(ids, calm(appends, cap), deletions, cap=cap)
    wanted_at_start = {t for t in source.ids if last_tid is None or t > last_tid}
    pages = PageSize(ask=ask)

    async def run() -> list[int]:
        return await collect(trades_after(source, "BTC_USD", last_tid, pages=pages))

    got = asyncio.run(run())
    assert got == sorted(set(got))  # in id order, each once
    assert all(last_tid is None or t > last_tid for t in got)
    assert wanted_at_start - source.deleted <= set(got)  # nothing that stayed is missed
    # nothing skipped below the last trade returned, either
    if got:
        assert {
            t for t in source.ids if (last_tid is None or t > last_tid) and t <= got[-1]
        } <= set(got)
    # what it learned is a page the exchange served
    assert pages.served is None or 1 <= pages.served <= min(cap, max(ask, 100))


@given(
    count=st.integers(0, 6000),
    cap=st.sampled_from(CAPS),
    last_share=st.none() | st.floats(0, 1),
)
@settings(max_examples=60, deadline=None)
def test_pages_are_as_long_as_the_exchange_serves(
    count: int, cap: int, last_share: float | None
) -> None:
    """On a still tape a catch-up costs the O(log n) search, one request per page of what
    the exchange serves (less the one trade each page starts early; at a cap of one, two
    requests a trade), and a few to learn the cap."""
    if cap == 1:
        count %= 2000  # two requests a trade
    source = MovingTape(list(range(1, count + 1)), cap=cap)
    last_tid = None if last_share is None else int(count * last_share)
    pages = PageSize()
    got = asyncio.run(collect(trades_after(source, "BTC_USD", last_tid, pages=pages)))
    assert got == list(range((last_tid or 0) + 1, count + 1))
    served = min(cap, ASK)
    new_per_page = served - 1 if served > 1 else 0.5
    search = 2 * (count + 2).bit_length() + 2
    learning = 4  # reading the newest trades to tell the cap from the end, a few times at most
    assert source.requests <= search + len(got) / new_per_page + learning + 2
    if len(got) > served:  # more than a page: the cap is what it learned
        assert pages.served == served
    # the search reads single trades, a poll the documented page, a catch-up large pages
    assert set(source.limits) <= {1, POLL_LIMIT, ASK}
    if last_tid is None and count:
        assert ASK in source.limits


async def test_the_learned_size_ends_later_catch_ups_without_an_extra_request() -> None:
    source = MovingTape(list(range(1, 1001)), cap=100)
    pages = PageSize()
    assert await collect(trades_after(source, "BTC_USD", None, pages=pages)) == list(range(1, 1001))
    assert pages.served == 100
    source.grow(450)
    source.requests, source.limits = 0, []
    got = await collect(trades_after(source, "BTC_USD", 1000, pages=pages))
    assert got == list(range(1001, 1451))
    # the poll's page (100 newest: not back to 1000), the search, then pages of 100 trades
    # starting one early: 99 + 99 + 99 + 99 + 54 new, the last one short of 100: the end
    pages_read = [limit for limit in source.limits if limit == ASK]
    assert len(pages_read) == 5


async def test_an_exchange_refusing_a_large_page_is_asked_for_the_documented_one() -> None:
    source = MovingTape(list(range(1, 2501)), cap=100, refuse_above=100)
    pages = PageSize()
    assert await collect(trades_after(source, "BTC_USD", None, pages=pages)) == list(range(1, 2501))
    assert (pages.ask, pages.served) == (100, 100)
    assert source.limits.count(ASK) == 1  # refused once, then never asked again


async def test_a_refusal_of_the_documented_page_is_not_hidden() -> None:
    source = MovingTape(list(range(1, 300)), refuse_above=50)
    with pytest.raises(BadRequest):
        await collect(trades_after(source, "BTC_USD", None))


# --- candles --------------------------------------------------------------------------------

DAY = 1_700_006_400  # a day's start: every chart type's buckets are aligned to it


def starts(pages: list[list[Candle]]) -> list[int]:
    return [int(c.bucket.timestamp()) for page in pages for c in page]


def at(unix_s: int) -> datetime:
    return datetime.fromtimestamp(unix_s, UTC)


def test_forward_windows_are_limit_buckets_wide_and_cover_since_to_now() -> None:
    assert forward_windows(1000, 1000 + 2 * 720 * 60, 60) == [
        (1000, 1000 + 720 * 60 - 1),
        (1000 + 720 * 60, 1000 + 2 * 720 * 60 - 1),
        (1000 + 2 * 720 * 60, 1000 + 3 * 720 * 60 - 1),
    ]
    assert forward_windows(100, 400, 60, limit=2) == [(100, 219), (220, 339), (340, 459)]
    assert forward_windows(500, 499, 60) == []  # a last bucket after now: nothing to read


@given(
    resolution=st.sampled_from(sorted(CANDLE_WIDTH_S)),
    buckets=st.sets(st.integers(0, 1000), max_size=200),
    limit=st.integers(2, 40) | st.just(CANDLE_LIMIT),
    cap=st.sampled_from([1, 3, 10, 100, 10**9]),
    last=st.none() | st.integers(0, 1010),
    ahead_s=st.integers(0, 3 * 86400),
)
@settings(max_examples=300, deadline=None)
def test_candle_paging_property_every_candle_exactly_once_none_missed(
    resolution: str,
    buckets: set[int],
    limit: int,
    cap: int,
    last: int | None,
    ahead_s: int,
) -> None:
    """Whatever the history, the page asked for, the page served and the last stored bucket:
    the past is read whole, each candle once, and so is the present from the last bucket."""
    width_s = CANDLE_WIDTH_S[resolution]
    history = sorted(DAY + b * width_s for b in buckets)
    now_s = (history[-1] if history else DAY) + min(ahead_s, width_s * 5)
    served = min(limit, cap)

    chart = Chart(history, cap=cap)
    past = asyncio.run(collect_pages(candles_before(chart, "BTC_USD", resolution, limit=limit)))
    # newest page first, each oldest first: read back to front, the pages are the history
    assert [s for page in reversed(past) for s in starts([page])] == history
    assert max(chart.served.values(), default=1) == 1  # each candle served once
    assert len(chart.requests) <= math.ceil(len(history) / served) + 1  # and the empty end

    chart = Chart(history, cap=cap)
    since = None if last is None else at(DAY + last * width_s)
    present = asyncio.run(
        collect_pages(candles_from(chart, "BTC_USD", resolution, since, at(now_s), limit=limit))
    )
    lowest_s = now_s - limit * width_s if since is None else DAY + (last or 0) * width_s
    assert starts(present) == [s for s in history if lowest_s <= s <= now_s]  # in order, once
    windows = forward_windows(lowest_s, now_s, width_s, limit)
    assert len(present) == len(windows)
    in_windows = [len([s for s in history if low <= s <= high]) for low, high in windows]
    assert len(chart.requests) <= sum(math.ceil(n / served) + 1 for n in in_windows)


@given(
    buckets=st.sets(st.integers(0, 3000), min_size=1, max_size=300),
    cap=st.sampled_from([1, 7, 100, 10**9]),
    failures=st.sets(st.integers(0, 40), max_size=4),
)
@settings(max_examples=200, deadline=None)
def test_a_backfill_resumed_before_its_oldest_candle_reads_each_candle_once(
    buckets: set[int], cap: int, failures: set[int]
) -> None:
    history = sorted(DAY + b * 60 for b in buckets)
    chart = Chart(history, cap=cap, fail_at=failures)
    taken: list[int] = []

    async def backfill() -> None:
        while True:
            before = at(min(taken)) if taken else None
            try:
                async for page in candles_before(chart, "BTC_USD", "1", before, limit=50):
                    taken.extend(starts([page]))
                return
            except ServerError:
                continue

    asyncio.run(backfill())
    assert sorted(taken) == history
    assert len(taken) == len(history)  # none twice


async def collect_pages(pages: AsyncIterator[list[Candle]]) -> list[list[Candle]]:
    return [page async for page in pages]

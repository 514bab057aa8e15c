"""Trade paging against a real loopback server whose tape grows (and shrinks) while we page."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recorder.exchange.paging import PagingError, trades_after, trades_since
from recorder.exchange.rest import ExchangeClient
from recorder.records import Trade
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
    got = await collect(trades_after(client, "BTC_USD", None, page_size=50))
    assert got == tape(exchange, "BTC_USD")


async def test_a_poll_with_few_new_trades_is_one_request(
    exchange: FakeExchange, client: ExchangeClient
) -> None:
    fill(exchange, 400)
    last = tape(exchange, "BTC_USD")[-5]
    got = await collect(trades_after(client, "BTC_USD", last, page_size=50))
    assert got == tape(exchange, "BTC_USD")[-4:]
    assert len(exchange.seen) == 1


async def test_new_trades_arriving_during_paging_are_each_returned_once(
    exchange: FakeExchange, client: ExchangeClient
) -> None:
    fill(exchange, 600)
    last = tape(exchange, "BTC_USD")[20]
    at_start = [t for t in tape(exchange, "BTC_USD") if t > last]

    def busy_market(seen: Seen) -> None:
        fill(exchange, 7)  # every request sees 7 more trades, some of them ours

    exchange.before_trades = busy_market
    got = await collect(trades_after(client, "BTC_USD", last, page_size=40))
    assert len(got) == len(set(got))
    assert got == sorted(got)
    assert set(at_start) <= set(got)
    # everything up to the last trade returned, nothing skipped
    assert got == [t for t in tape(exchange, "BTC_USD") if last < t <= got[-1]]
    # and the next call, from there, returns the rest
    exchange.before_trades = None
    rest = await collect(trades_after(client, "BTC_USD", got[-1], page_size=40))
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
    got = await collect(trades_after(client, "BTC_USD", None, page_size=20))
    assert got == sorted(set(got))
    remaining = tape(exchange, "BTC_USD")
    assert set(remaining) <= set(got)


async def test_since_a_time(exchange: FakeExchange, client: ExchangeClient) -> None:
    fill(exchange, 200)  # trade n was made at 1700000000 + n
    since = datetime.fromtimestamp(1700000150, UTC)
    got = await collect(trades_since(client, "BTC_USD", since, page_size=16))
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
        await collect(trades_after(client, "BTC_USD", None, page_size=100))


class MovingTape:
    """An in-memory tape that changes before every request, as a busy exchange's does."""

    def __init__(self, ids: list[int], appends: list[int], deletions: dict[int, int]) -> None:
        self.ids = sorted(set(ids))
        self.appends = appends  # new trades before each request, cycling
        self.deletions = deletions  # request number -> old trades that vanish before it
        self.deleted: set[int] = set()
        self.requests = 0

    async def trades(
        self,
        pair: str | None = None,
        *,
        limit: int | None = None,
        offset: int | None = None,
        ordering: str | None = None,
    ) -> list[Trade]:
        appended = self.appends[self.requests % len(self.appends)]
        deleted = self.deletions.get(self.requests, 0)
        self.requests += 1
        assert self.requests < 5000, "paging does not end"
        top = self.ids[-1] if self.ids else 0
        self.ids += range(top + 1, top + 1 + appended)
        for _ in range(min(deleted, len(self.ids))):
            self.deleted.add(self.ids.pop(0))  # the oldest go: offsets move back
        rows = self.ids if ordering == "id" else self.ids[::-1]
        start = offset or 0
        return [_trade(tid) for tid in rows[start : start + (limit or 100)]]


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


@given(
    ids=st.lists(st.integers(1, 2000), max_size=300)
    | st.integers(0, 400).map(lambda n: list(range(1, 3 * n, 3))),  # long tapes: many pages
    # fewer new trades per request than a page holds, or no pager could ever catch up
    appends=st.lists(st.integers(0, 3), min_size=1, max_size=6),
    deletions=st.dictionaries(st.integers(0, 20), st.integers(1, 3), max_size=4),
    last_tid=st.none() | st.integers(0, 2100),
    page_size=st.integers(8, 40),
)
@settings(max_examples=300, deadline=None)
def test_paging_property_every_surviving_trade_exactly_once_in_order(
    ids: list[int],
    appends: list[int],
    deletions: dict[int, int],
    last_tid: int | None,
    page_size: int,
) -> None:
    source = MovingTape(ids, appends, deletions)
    wanted_at_start = {t for t in source.ids if last_tid is None or t > last_tid}

    async def run() -> list[int]:
        return await collect(trades_after(source, "BTC_USD", last_tid, page_size=page_size))

    got = asyncio.run(run())
    assert got == sorted(set(got))  # in id order, each once
    assert all(last_tid is None or t > last_tid for t in got)
    assert wanted_at_start - source.deleted <= set(got)  # nothing that stayed is missed
    # nothing skipped below the last trade returned, either
    if got:
        assert {
            t for t in source.ids if (last_tid is None or t > last_tid) and t <= got[-1]
        } <= set(got)

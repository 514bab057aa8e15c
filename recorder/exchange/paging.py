"""Paging the exchange's history: the trade tape, and chart candles.

Trade catch-up: every trade of a pair newer than the last stored one, once, in id order.

The tape is paged by offset. Read newest first (`ordering=-id`), each new trade shifts
every offset by one, so we read it oldest first (`ordering=id`): trade ids grow, new trades
are appended at the end, and the offset of a trade we have not read yet does not move.

1. Poll (few new trades): one newest-first page (of the documented default, 100) that
   reaches back to a trade at or below `last_tid` holds every newer trade; they are
   yielded oldest first.
2. Catch-up: find the first ascending offset whose trade is newer than the anchor
   (exponential probe, then bisection, one trade per request: O(log n) requests), then
   read pages forward until the end of the tape.
3. Proof against shifts we did not foresee (a trade deleted by the exchange): every page
   read at an offset above 0 starts at least one trade early, and that first trade must
   be one we do not want (at or below the last one yielded). Since ids ascend along the
   tape, everything wanted then lies after it, in this page or the next: no gap. If it
   is wanted, the offsets moved back, and the page is read again from twice as far back.
   Trades are yielded only when their id exceeds the last one yielded: none comes twice.
   A page that holds nothing but that first trade (an exchange serving one trade a page)
   cannot prove anything beside it; then the next page is read at its own offset and
   proved afterwards: offsets only ever move back, so if the trade just before it is
   still one we do not want, nothing wanted lay before the page when it was read.

Page size: the docs give `limit` a default of 100 and no maximum, so every catch-up page
asks for `PageSize.ask` (1,000) and the walk advances by what actually came back: an
exchange that serves fewer loses nothing. A page shorter than asked is either the end of
the tape or the exchange's cap; `PageSize` tells them apart (and learns the cap). An
exchange that refuses the large `limit` (400) is asked for the documented 100 from then on.
The next page is asked for while this one's trades are taken in (`_Ahead`), so that the
exchange's time and ours overlap; it is proved in its turn like any other.

Trades that arrive while we page are included up to the last page read; the next call
(with the last id yielded) starts from there, so no trade is missed between calls, even when
a page was taken for the end too early.

Candles: the chart endpoint answers the newest `limit` candles whose start lies in
[since, until], oldest first. So a range is read backwards: each page asks for the newest
candles that start before the oldest one seen, until a page holds none (or reaches `since`).
Pages never overlap and leave nothing out, however many candles the exchange actually serves
per page. `candles_before` reads the past that way, page by page; `candles_from` reads the
present forwards in windows of `limit` buckets from the last stored one (a window holds at
most `limit` candles, so it mostly takes one request), each window read whole and handed
over at once, so that a caller whose cursor is the newest bucket taken never skips the older
part of a window that failed halfway.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from datetime import datetime
from functools import partial
from typing import Any, Literal, Protocol

from recorder.config import CANDLE_WIDTH_S, CandleType
from recorder.exchange.rest import BadRequest
from recorder.logs import get_logger
from recorder.records import Candle, Trade

log = get_logger(__name__)

ASK = 1000
"""The `limit` every catch-up page asks for: ten times the documented default."""
DOCUMENTED_LIMIT = 100
"""The docs' default `limit`, surely served: what is asked when a larger one is refused."""

POLL_LIMIT = DOCUMENTED_LIMIT
"""The newest-first page of a poll: a poll mostly finds a few new trades, and parsing a
page of 1,000 every few seconds per pair would cost more than the catch-up it saves."""

Ordering = Literal["id", "-id"]


class TradeSource(Protocol):
    async def trades(
        self,
        pair: str | None = None,
        *,
        limit: int | None = None,
        offset: int | None = None,
        ordering: Ordering | None = None,
    ) -> list[Trade]: ...


class PagingError(Exception):
    """The exchange's pages contradict the assumptions paging relies on (ids out of order)."""


class PageSize:
    """How many trades the exchange serves per `/exchanges/` page, learned from its answers.

    One per exchange, kept across calls and shared by every pair. `recorder probe` asks the
    same sizes (`ASK`, then `DOCUMENTED_LIMIT`) and reports the cap this learns
    (tests/test_probe.py holds the two to the same answer).

    A page shorter than asked is the end of the tape, or the exchange's cap. Once a page of
    `served` trades came back, a shorter one is the end: the exchange would have served
    more had there been more. A page at least that long is told apart by one more request,
    the newest `ask` trades: if even that is shorter than what the tape surely holds, its
    length is the cap, and pages of that length are full pages from then on.
    """

    def __init__(self, ask: int = ASK) -> None:
        if ask < 1:
            raise ValueError(f"a page must ask for at least one trade, not {ask}")
        self.ask = ask
        self.served: int | None = None
        """The longest page served so far (None before the first): at most the cap."""
        self.cap: int | None = None
        """The exchange's page cap, once a page came back shorter than asked from a tape
        that held more; None while none did (then it serves at least `served`)."""

    async def read(
        self,
        source: TradeSource,
        pair: str,
        offset: int,
        ordering: Ordering,
        *,
        limit: int | None = None,
    ) -> tuple[list[Trade], bool]:
        """One page at `offset` (of `limit` trades, else `ask`); and whether it surely ends
        the tape."""
        page, asked = await self._fetch(source, pair, offset, ordering, limit or self.ask)
        count = len(page)
        if count == 0:
            return page, True
        longest = self.served
        self._saw(count)
        if count >= asked or count == self.cap:
            return page, False
        if longest is not None and count < longest:
            return page, True
        # As long as the longest page yet: the end, or the cap? Ask for the newest trades.
        newest, asked = await self._fetch(source, pair, 0, "-id", self.ask)
        surely_held = offset + count if ordering == "id" else count
        if len(newest) < min(asked, surely_held) and len(newest) >= (self.served or 0):
            if self.cap != len(newest):
                log.info("the exchange caps trade pages", cap=len(newest), asked=asked)
            self.cap = len(newest)
        self._saw(len(newest))
        assert self.served is not None
        return page, count < self.served

    def _saw(self, count: int) -> None:
        if self.cap is not None and count > self.cap:
            self.cap = None  # a longer page than the "cap": what looked like one was not
        self.served = max(self.served or 0, count)

    async def _fetch(
        self, source: TradeSource, pair: str, offset: int, ordering: Ordering, limit: int
    ) -> tuple[list[Trade], int]:
        try:
            return await source.trades(pair, limit=limit, offset=offset, ordering=ordering), limit
        except BadRequest:
            if limit <= DOCUMENTED_LIMIT:
                raise
            log.warning("the exchange refused a large trade page; asking for the default",
                        limit=limit, now=DOCUMENTED_LIMIT)  # fmt: skip
            self.ask = limit = DOCUMENTED_LIMIT
            return await source.trades(pair, limit=limit, offset=offset, ordering=ordering), limit


async def trades_after(
    source: TradeSource, pair: str, last_tid: int | None, *, pages: PageSize | None = None
) -> AsyncIterator[Trade]:
    """Every trade of `pair` with an id above `last_tid` (all of them for None), in id order."""
    pages = pages or PageSize()
    if last_tid is not None:
        newest, end = await pages.read(source, pair, 0, "-id", limit=POLL_LIMIT)
        if end or any(t.tid <= last_tid for t in newest):
            for trade in sorted((t for t in newest if t.tid > last_tid), key=lambda t: t.tid):
                yield trade
            return
    anchor = last_tid

    def newer(trade: Trade) -> bool:
        return anchor is None or trade.tid > anchor

    async for trade in _walk(source, pair, newer, pages):
        yield trade


async def trades_since(
    source: TradeSource, pair: str, since: datetime, *, pages: PageSize | None = None
) -> AsyncIterator[Trade]:
    """Every trade of `pair` made at or after `since`, in id order (backfill of a window)."""
    async for trade in _walk(source, pair, lambda t: t.ts >= since, pages or PageSize()):
        yield trade


async def _walk(
    source: TradeSource, pair: str, wanted: Callable[[Trade], bool], pages: PageSize
) -> AsyncIterator[Trade]:
    last: int | None = None  # the last trade yielded

    def fresh(trade: Trade) -> bool:
        return wanted(trade) if last is None else trade.tid > last

    offset = await _first_offset(source, pair, fresh)
    back = 1  # how far before `offset` the next page starts
    alone = False  # read the next page at `offset` itself and prove it afterwards
    ahead = _Ahead()
    try:
        while True:
            if alone:
                start = offset
                page, end = await pages.read(source, pair, start, "id")
                _check_ascending(page)
                before = await source.trades(pair, limit=1, offset=start - 1, ordering="id")
                if not before or fresh(before[0]):
                    alone, back = False, 2  # the offsets moved back: look before them
                    continue
            else:
                start = max(0, offset - back)
                page, end = await ahead.take(start, partial(pages.read, source, pair, start, "id"))
                _check_ascending(page)
                if start > 0 and (not page or fresh(page[0])):
                    # The offsets moved back under us: this page might skip trades. Look
                    # further back, twice as far each time, until it starts at a trade we had.
                    back *= 2
                    continue
            back = 1
            # Nothing beyond the trades we had fitted in this page (or none ever fits beside
            # the proof trade): the next page cannot start early.
            alone = start + len(page) <= offset or pages.served == 1
            offset = start + len(page)
            if not end and not alone:
                # Ask for the next page while this one's trades are taken in; it is proved
                # when its turn comes, like any other.
                ahead.fetch(offset - 1, pages.read(source, pair, offset - 1, "id"))
            for trade in page:
                if fresh(trade):
                    yield trade
                    last = trade.tid
            if end:
                return
    finally:
        ahead.cancel()


class _Ahead:
    """At most one page requested before its turn, and where it starts."""

    def __init__(self) -> None:
        self._start = -1
        self._task: asyncio.Task[tuple[list[Trade], bool]] | None = None

    def fetch(self, start: int, read: Coroutine[Any, Any, tuple[list[Trade], bool]]) -> None:
        self.cancel()
        self._start, self._task = start, asyncio.ensure_future(read)

    async def take(
        self, start: int, read: Callable[[], Awaitable[tuple[list[Trade], bool]]]
    ) -> tuple[list[Trade], bool]:
        """The page at `start`: the one fetched ahead if it starts there, else `read()`."""
        task, self._task = self._task, None
        if task is not None and self._start == start:
            return await task
        if task is not None:
            _discard(task)
        return await read()

    def cancel(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            _discard(task)


def _discard(task: asyncio.Task[Any]) -> None:
    task.cancel()
    # Retrieve whatever it ends with, so that asyncio does not report it as never retrieved.
    task.add_done_callback(lambda t: t.cancelled() or t.exception())


def _check_ascending(page: list[Trade]) -> None:
    for before, after in itertools.pairwise(page):
        if after.tid <= before.tid:
            raise PagingError(f"ordering=id gave trade {after.tid} after {before.tid}")


async def _first_offset(source: TradeSource, pair: str, wanted: Callable[[Trade], bool]) -> int:
    """The smallest ascending offset whose trade is wanted, or the end of the tape.

    `wanted` must be monotone along the tape (false ... false true ... true), as "newer than
    an id" and "at or after a time" are; offsets past the end count as true.
    """

    async def true_at(offset: int) -> bool:
        page = await source.trades(pair, limit=1, offset=offset, ordering="id")
        return not page or wanted(page[0])

    low, step = 0, 1  # every offset below `low` is known false
    while not await true_at(low + step - 1):
        low, step = low + step, step * 2
    high = low + step - 1  # known true
    while low < high:
        middle = (low + high) // 2
        if await true_at(middle):
            high = middle
        else:
            low = middle + 1
    return low


# --- candles --------------------------------------------------------------------------------

CANDLE_LIMIT = 720
"""The chart's documented default `limit`: what every candle page asks for."""


class CandleSource(Protocol):
    async def candles(
        self,
        pair: str,
        resolution: str,
        *,
        limit: int | None = None,
        since: int | None = None,
        until: int | None = None,
    ) -> list[Candle]: ...


def forward_windows(
    since_s: int, now_s: int, width_s: int, limit: int = CANDLE_LIMIT
) -> list[tuple[int, int]]:
    """The windows [since, until] (unix s, both included) of `limit` buckets each that cover
    `since_s` up to `now_s`, oldest first; none when `since_s` lies after `now_s`.

    A window `limit` buckets wide holds at most `limit` bucket starts wherever it begins, so
    a page of `limit` candles covers it when the exchange serves that many.
    """
    span_s = limit * width_s
    return [(start, start + span_s - 1) for start in range(since_s, now_s + 1, span_s)]


async def candles_before(
    source: CandleSource,
    pair: str,
    resolution: CandleType,
    before: datetime | None = None,
    *,
    limit: int = CANDLE_LIMIT,
) -> AsyncIterator[list[Candle]]:
    """Every candle that starts before `before` (all of them for None), newest page first,
    each page oldest first; it ends when the exchange has no older candle.

    To resume after a failure, pass the oldest bucket taken so far as `before`.
    """
    until_s = None if before is None else _unix_s(before) - 1
    async for page in _read_back(source, pair, resolution, None, until_s, limit):
        yield page


async def candles_from(
    source: CandleSource,
    pair: str,
    resolution: CandleType,
    since: datetime | None,
    now: datetime,
    *,
    limit: int = CANDLE_LIMIT,
) -> AsyncIterator[list[Candle]]:
    """Every candle that starts at or after `since` (the last stored bucket; for None, the
    last `limit` buckets) up to `now`, one window at a time, oldest window first; each
    window's candles are yielded together, oldest first.
    """
    width_s = CANDLE_WIDTH_S[resolution]
    now_s = _unix_s(now)
    since_s = now_s - limit * width_s if since is None else _unix_s(since)
    for start_s, end_s in forward_windows(since_s, now_s, width_s, limit):
        pages = [page async for page in _read_back(source, pair, resolution, start_s, end_s, limit)]
        yield sorted((candle for page in pages for candle in page), key=lambda c: c.bucket)


async def _read_back(
    source: CandleSource,
    pair: str,
    resolution: CandleType,
    since_s: int | None,
    until_s: int | None,
    limit: int,
) -> AsyncIterator[list[Candle]]:
    """The candles starting in [since_s, until_s] (unbounded for None), page by page backwards.

    Each next page ends just before the oldest candle of the range seen so far, so pages do
    not overlap. A candle outside the range (an exchange that does not keep to it) is
    yielded with its page but moves nothing; a page with none inside the range ends it.
    """
    while since_s is None or until_s is None or since_s <= until_s:
        page = await source.candles(pair, resolution, limit=limit, since=since_s, until=until_s)
        starts = [
            start_s
            for start_s in map(_bucket_s, page)
            if (since_s is None or start_s >= since_s) and (until_s is None or start_s <= until_s)
        ]
        if page:
            yield page
        if not starts or (since_s is not None and min(starts) <= since_s):
            return
        until_s = min(starts) - 1


def _bucket_s(candle: Candle) -> int:
    return _unix_s(candle.bucket)


def _unix_s(when: datetime) -> int:
    return int(when.timestamp())

"""Trade catch-up: every trade of a pair newer than the last stored one, once, in id order.

The tape is paged by offset. Read newest first (`ordering=-id`), each new trade shifts
every offset by one, so we read it oldest first (`ordering=id`): trade ids grow, new trades
are appended at the end, and the offset of a trade we have not read yet does not move.

1. Poll (few new trades): one newest-first page that reaches back to a trade at or below
   `last_tid` holds every newer trade; they are yielded oldest first.
2. Catch-up: find the first ascending offset whose trade is newer than the anchor
   (exponential probe, then bisection, one trade per request: O(log n) requests), then
   read pages forward until a short page.
3. Proof against shifts we did not foresee (a trade deleted by the exchange): every page
   read at an offset above 0 starts at least one trade early, and that first trade must
   be one we do not want (at or below the last one yielded). Since ids ascend along the
   tape, everything wanted then lies after it, in this page or the next: no gap. If it
   is wanted, the offsets moved back, and the page is read again from twice as far back.
   Trades are yielded only when their id exceeds the last one yielded: none comes twice.

Pages ask for `page_size + 1` trades (99 + 1 by default: the API's default limit, so
surely allowed); a shorter page is the end of the tape.

Trades that arrive while we page are included up to the last page read; the next call
(with the last id yielded) starts from there, so no trade is missed between calls.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import Literal, Protocol

from recorder.records import Trade

PAGE_SIZE = 99


class TradeSource(Protocol):
    async def trades(
        self,
        pair: str | None = None,
        *,
        limit: int | None = None,
        offset: int | None = None,
        ordering: Literal["id", "-id"] | None = None,
    ) -> list[Trade]: ...


class PagingError(Exception):
    """The exchange's pages contradict the assumptions paging relies on (ids out of order)."""


async def trades_after(
    source: TradeSource, pair: str, last_tid: int | None, *, page_size: int = PAGE_SIZE
) -> AsyncIterator[Trade]:
    """Every trade of `pair` with an id above `last_tid` (all of them for None), in id order."""
    if last_tid is not None:
        newest = await source.trades(pair, limit=page_size, offset=0, ordering="-id")
        if len(newest) < page_size or any(t.tid <= last_tid for t in newest):
            for trade in sorted((t for t in newest if t.tid > last_tid), key=lambda t: t.tid):
                yield trade
            return
    anchor = last_tid

    def newer(trade: Trade) -> bool:
        return anchor is None or trade.tid > anchor

    async for trade in _walk(source, pair, newer, page_size):
        yield trade


async def trades_since(
    source: TradeSource, pair: str, since: datetime, *, page_size: int = PAGE_SIZE
) -> AsyncIterator[Trade]:
    """Every trade of `pair` made at or after `since`, in id order (backfill of a window)."""
    async for trade in _walk(source, pair, lambda t: t.ts >= since, page_size):
        yield trade


async def _walk(
    source: TradeSource, pair: str, wanted: Callable[[Trade], bool], page_size: int
) -> AsyncIterator[Trade]:
    last: int | None = None  # the last trade yielded

    def fresh(trade: Trade) -> bool:
        return wanted(trade) if last is None else trade.tid > last

    offset = await _first_offset(source, pair, fresh)
    back = 1  # how far before `offset` the next page starts
    while True:
        start = max(0, offset - back)
        page = await source.trades(pair, limit=page_size + 1, offset=start, ordering="id")
        _check_ascending(page)
        if start > 0 and (not page or fresh(page[0])):
            # The offsets moved back under us: this page might skip trades. Look further
            # back, twice as far each time, until the page starts at a trade we had.
            back *= 2
            continue
        back = 1
        for trade in page:
            if fresh(trade):
                yield trade
                last = trade.tid
        offset = start + len(page)
        if len(page) <= page_size:
            return


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

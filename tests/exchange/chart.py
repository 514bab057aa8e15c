"""An in-memory chart endpoint that keeps to the documented rule: the newest `limit`
candles whose start lies in [since, until], oldest first.

For the candle pager's property tests and the candle recorder's: it counts how often each
candle was served, can serve fewer candles than asked (`cap`), and can fail chosen requests.
"""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Iterable
from datetime import UTC, datetime
from decimal import Decimal

from recorder.exchange.paging import CANDLE_LIMIT
from recorder.exchange.rest import ServerError
from recorder.records import Candle

UPDATED_AT = datetime(2026, 1, 1, tzinfo=UTC)


class Chart:
    def __init__(
        self,
        starts: Iterable[int],
        *,
        cap: int = 10**9,
        fail_at: Iterable[int] = (),
    ) -> None:
        """`starts`: the candles' buckets (unix s); `cap`: the most candles served per page,
        whatever `limit` asks; `fail_at`: the numbers of the requests (from 0) that fail."""
        self.starts = sorted(set(starts))
        self.cap = cap
        self.fail_at = set(fail_at)
        self.requests: list[tuple[int | None, int | None, int]] = []
        """(since, until, limit) of every request, in order, failed ones included."""
        self.served: Counter[int] = Counter()
        """How often each candle (by bucket) was served."""

    async def candles(
        self,
        pair: str,
        resolution: str,
        *,
        limit: int | None = None,
        since: datetime | int | None = None,
        until: datetime | int | None = None,
    ) -> list[Candle]:
        limit = CANDLE_LIMIT if limit is None else limit
        since_s, until_s = _unix_s(since), _unix_s(until)
        number = len(self.requests)
        self.requests.append((since_s, until_s, limit))
        assert number < 20_000, "paging does not end"
        if number in self.fail_at:
            raise ServerError("chart", 503, "a moment's outage")
        low = 0 if since_s is None else bisect.bisect_left(self.starts, since_s)
        high = len(self.starts) if until_s is None else bisect.bisect_right(self.starts, until_s)
        page = self.starts[max(low, high - min(limit, self.cap)) : high]
        self.served.update(page)
        return [candle(pair, resolution, start_s) for start_s in page]


def candle(pair: str, resolution: str, start_s: int) -> Candle:
    price = Decimal(start_s % 997) / 10
    return Candle(
        pair=pair,
        resolution=resolution,
        bucket=datetime.fromtimestamp(start_s, UTC),
        open=price,
        high=price + 1,
        low=price - 1,
        close=price,
        volume=Decimal(start_s % 13),
        updated_at=UPDATED_AT,
    )


def _unix_s(value: datetime | int | None) -> int | None:
    if value is None:
        return None
    return int(value.timestamp()) if isinstance(value, datetime) else int(value)

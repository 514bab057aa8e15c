"""Chart candles computed from the engine's trades, for the seven chart types.

Pure: trades in, candles out. A candle's `time` is the start of its bucket in unix seconds
(UTC; a day starts at 00:00 UTC). Buckets without trades produce no candle. The newest
candle is the one still open, so it changes as trades arrive, as on the exchange.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

from recorder.sim.engine import Fill

BUCKET_SECONDS = {
    "1": 60,
    "5": 300,
    "15": 900,
    "30": 1800,
    "60": 3600,
    "240": 14400,
    "D": 86400,
}
"""Chart type -> bucket length; the keys are the types the exchange serves."""


@dataclass(frozen=True, slots=True)
class Candle:
    time: int
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal


def bucket_start(timestamp: Decimal, bucket_seconds: int) -> int:
    seconds = int(timestamp)  # timestamps are positive: int() floors
    return seconds - seconds % bucket_seconds


def candles(
    trades: Sequence[Fill],
    chart_type: str,
    *,
    since: int | None = None,
    until: int | None = None,
    limit: int | None = None,
) -> list[Candle]:
    """Candles of `trades` (in time order), oldest first: the newest `limit` buckets whose
    start lies in [since, until]."""
    bucket_seconds = BUCKET_SECONDS[chart_type]
    lo, hi = 0, len(trades)
    if since is not None:
        first_start = -(-since // bucket_seconds) * bucket_seconds  # since, rounded up
        lo = bisect.bisect_left(trades, Decimal(first_start), key=_seconds)
    if until is not None:
        end = bucket_start(Decimal(until), bucket_seconds) + bucket_seconds
        hi = bisect.bisect_left(trades, Decimal(end), key=_seconds)
    result: list[Candle] = []
    current: list[Fill] = []
    current_start = None
    for trade in trades[lo:hi]:
        start = bucket_start(trade.timestamp, bucket_seconds)
        if start != current_start and current:
            result.append(_candle(current_start, current))
            current = []
        current_start = start
        current.append(trade)
    if current:
        result.append(_candle(current_start, current))
    if limit is not None:
        result = result[-limit:] if limit > 0 else []
    return result


def _candle(start: int | None, trades: list[Fill]) -> Candle:
    assert start is not None
    prices = [t.price for t in trades]
    return Candle(
        time=start,
        open=prices[0],
        high=max(prices),
        low=min(prices),
        close=prices[-1],
        volume=sum((t.amount for t in trades), Decimal(0)),
    )


def _seconds(trade: Fill) -> Decimal:
    return trade.timestamp

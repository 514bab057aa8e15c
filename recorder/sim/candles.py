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

from recorder.config import CANDLE_WIDTH_S, CandleType
from recorder.sim.engine import Fill


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
    chart_type: CandleType,
    *,
    since: int | None = None,
    until: int | None = None,
    limit: int | None = None,
) -> list[Candle]:
    """Candles of `trades` (in time order), oldest first: the newest `limit` buckets whose
    start lies in [since, until]."""
    bucket_seconds = CANDLE_WIDTH_S[chart_type]
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


class CandleSeries:
    """The candles of one pair and chart type, brought up to date trade by trade.

    Serving a chart then costs a bisect, not a pass over every trade; `candles()` above is
    the reference it is tested against.
    """

    def __init__(self, chart_type: CandleType) -> None:
        self.bucket_seconds = CANDLE_WIDTH_S[chart_type]
        self.times: list[int] = []
        self.candles: list[Candle] = []

    def add(self, trade: Fill) -> None:
        start = bucket_start(trade.timestamp, self.bucket_seconds)
        if self.times and start <= self.times[-1]:
            # the open candle (a clock that stepped back still lands in it)
            last = self.candles[-1]
            self.candles[-1] = Candle(
                time=last.time,
                open=last.open,
                high=max(last.high, trade.price),
                low=min(last.low, trade.price),
                close=trade.price,
                volume=last.volume + trade.amount,
            )
            return
        self.times.append(start)
        self.candles.append(
            Candle(start, trade.price, trade.price, trade.price, trade.price, trade.amount)
        )

    def select(
        self, *, since: int | None = None, until: int | None = None, limit: int | None = None
    ) -> list[Candle]:
        """Oldest first: the newest `limit` candles whose start lies in [since, until]."""
        lo = 0 if since is None else bisect.bisect_left(self.times, since)
        hi = len(self.times) if until is None else bisect.bisect_right(self.times, until)
        if limit is not None:
            lo = max(lo, hi - limit)
        return self.candles[lo:hi] if lo < hi else []


class Charts:
    """Every chart type of every pair, fed with each trade as the engine makes it."""

    def __init__(self, pairs: list[str]) -> None:
        self.series = {
            pair: {chart_type: CandleSeries(chart_type) for chart_type in CANDLE_WIDTH_S}
            for pair in pairs
        }

    def add_pair(self, pair: str) -> None:
        self.series.setdefault(
            pair, {chart_type: CandleSeries(chart_type) for chart_type in CANDLE_WIDTH_S}
        )

    def add(self, trade: Fill) -> None:
        for series in self.series[trade.pair].values():
            series.add(trade)

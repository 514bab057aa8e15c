"""Chart candles of every configured resolution: backfilled as far back as the exchange
serves, then kept current (the open candle is upserted until it closes).

Each pair and resolution runs on a `Ticker` (`candles:PAIR:RES`). Its first step backfills
the chart before its oldest stored candle (`recorder.exchange.paging.candles_before`,
newest page first; everything for a chart with nothing stored); every step then reads
forward from the last stored bucket to now (`candles_from`), which also fills whatever a
downtime left out. A step that fails is tried again: the backfill resumes before the oldest
candle it took, and the forward read from the newest, so a failure halfway loses no candle.
A backfill that a stop (or a kill) interrupted goes on at the next start in the same way;
a finished one costs that start one request that answers nothing older.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import NoReturn

from recorder.clock import REAL_CLOCK, Clock
from recorder.config import CandleType
from recorder.exchange.paging import CandleSource, candles_before, candles_from
from recorder.logs import get_logger
from recorder.records import Candle, utc_now
from recorder.storage.writer import Writer
from recorder.ticker import Ticker

log = get_logger(__name__)

Chart = tuple[str, str]
"""A pair and a resolution."""


@dataclass
class _Backfill:
    """A backfill that has begun and not finished."""

    oldest: datetime
    """The oldest bucket taken: where it resumes."""
    candles: int
    """Candles taken so far."""


class CandleRecorder:
    def __init__(
        self,
        client: CandleSource,
        writer: Writer,
        *,
        poll_interval_s: float,
        stored: Mapping[Chart, tuple[datetime, datetime]],
        clock: Clock = REAL_CLOCK,
    ) -> None:
        """`stored`: the oldest and the newest stored bucket of each chart that has any.
        `clock`: the tickers' (tests move a fake one)."""
        self._client = client
        self._writer = writer
        self._every = partial(Ticker, interval_s=poll_interval_s, clock=clock)
        """A ticker of this source's interval, given its name."""
        self.last_buckets = {chart: newest for chart, (_, newest) in stored.items()}
        self._backfilled: set[Chart] = set()
        """Charts with nothing more to backfill in this run."""
        self._backfilling = {chart: _Backfill(oldest, 0) for chart, (oldest, _) in stored.items()}

    def resume(self, stored: Mapping[Chart, tuple[datetime, datetime]]) -> None:
        """Take what is stored now into account (another recorder recorded these charts
        meanwhile): forward from the newest bucket, backfill before the oldest."""
        for chart, (oldest, newest) in stored.items():
            if chart not in self.last_buckets or newest > self.last_buckets[chart]:
                self.last_buckets[chart] = newest
            if chart not in self._backfilled:
                begun = self._backfilling.setdefault(chart, _Backfill(oldest, 0))
                begun.oldest = min(begun.oldest, oldest)

    async def run(self, pair: str, resolution: CandleType) -> NoReturn:
        """Backfill the chart before its oldest stored candle, then keep it current."""
        chart = (pair, resolution)
        ticker = self._every(f"candles:{pair}:{resolution}")

        async def step(reason: str) -> None:
            if chart not in self._backfilled:
                await self.backfill(pair, resolution)
            await self.forward(pair, resolution)

        await ticker.run(step)

    async def backfill(self, pair: str, resolution: CandleType) -> int:
        """Every candle the exchange serves, newest page first; returns how many were taken.

        Called again after a failure, it goes on before the oldest candle taken so far.
        """
        chart = (pair, resolution)
        begun = self._backfilling.get(chart)
        async for page in candles_before(
            self._client, pair, resolution, begun.oldest if begun is not None else None
        ):
            self._take(page)
            oldest = min(candle.bucket for candle in page)
            if begun is None:
                begun = self._backfilling[chart] = _Backfill(oldest, 0)
            begun.oldest = min(begun.oldest, oldest)
            begun.candles += len(page)
        self._backfilled.add(chart)
        self._backfilling.pop(chart, None)
        count = begun.candles if begun is not None else 0
        if count:  # a chart backfilled before answers nothing older: no news
            log.info("candles backfilled", pair=pair, resolution=resolution, candles=count)
        return count

    async def forward(self, pair: str, resolution: CandleType) -> None:
        """From the last stored bucket (the open candle, refreshed) up to now."""
        since = self.last_buckets.get((pair, resolution))
        async for window in candles_from(self._client, pair, resolution, since, utc_now()):
            self._take(window)

    def _take(self, candles: list[Candle]) -> None:
        self._writer.put_many(candles)
        for candle in candles:
            key = (candle.pair, candle.resolution)
            if key not in self.last_buckets or candle.bucket > self.last_buckets[key]:
                self.last_buckets[key] = candle.bucket

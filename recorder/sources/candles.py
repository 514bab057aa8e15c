"""Chart candles of every configured resolution: backfilled as far back as the exchange
serves, then kept current (the open candle is upserted until it closes).

The chart endpoint answers the newest `limit` candles whose start lies in [since, until],
oldest first. So the past is read backwards (`until` just before the oldest candle seen,
until an empty page), and the present forwards in windows of `limit` candles from the last
stored bucket, which also fills whatever a downtime left out.
"""

from __future__ import annotations

import asyncio
from datetime import datetime

from recorder.exchange.rest import ExchangeClient
from recorder.logs import get_logger
from recorder.records import Candle, utc_now
from recorder.storage.writer import Writer

log = get_logger(__name__)

BUCKET_S = {"1": 60, "5": 300, "15": 900, "30": 1800, "60": 3600, "240": 14400, "D": 86400}
PAGE = 720  # the documented default limit, which any exchange deployment serves


class CandleRecorder:
    def __init__(
        self,
        client: ExchangeClient,
        writer: Writer,
        *,
        poll_interval_s: float,
        last_buckets: dict[tuple[str, str], datetime],
    ) -> None:
        self._client = client
        self._writer = writer
        self._poll_interval_s = poll_interval_s
        self.last_buckets = dict(last_buckets)

    async def run(self, pair: str, resolution: str) -> None:
        if (pair, resolution) not in self.last_buckets:
            await self.backfill(pair, resolution)
        while True:
            await self.forward(pair, resolution)
            await asyncio.sleep(self._poll_interval_s)

    async def backfill(self, pair: str, resolution: str) -> int:
        """Every candle the exchange serves, newest page first; returns how many."""
        until: int | None = None
        count = 0
        while True:
            page = await self._client.candles(pair, resolution, limit=PAGE, until=until)
            if not page:
                break
            self._take(page)
            count += len(page)
            oldest = min(candle.bucket for candle in page)
            until = int(oldest.timestamp()) - 1
        log.info("candles backfilled", pair=pair, resolution=resolution, candles=count)
        return count

    async def forward(self, pair: str, resolution: str) -> None:
        """From the last stored bucket (the open candle, refreshed) up to now."""
        last = self.last_buckets.get((pair, resolution))
        now_s = int(utc_now().timestamp())
        width_s = BUCKET_S[resolution]
        since = int(last.timestamp()) if last is not None else now_s - PAGE * width_s
        while since <= now_s:
            until = since + PAGE * width_s - 1
            self._take(
                await self._client.candles(pair, resolution, limit=PAGE, since=since, until=until)
            )
            since = until + 1

    def _take(self, candles: list[Candle]) -> None:
        self._writer.put_many(candles)
        for candle in candles:
            key = (candle.pair, candle.resolution)
            if key not in self.last_buckets or candle.bucket > self.last_buckets[key]:
                self.last_buckets[key] = candle.bucket

"""The trade tape: caught up from the last stored trade on start and after every reconnect,
then polled.

Each pair runs on a `Ticker` (`trades:PAIR`): a poll every interval, and a catch-up at start
and whenever `catch_up_now()` wakes it (after a stream reconnect). A fetch that fails is
tried again for the same reason, so only what a catch-up recovers counts in
`recorder_trades_backfilled_total`, as the metric promises, never a retried poll.

Per pair, `last_tid` is the newest trade handed to the writer (at start: the newest in the
database). `trades_after` returns every newer trade once, in id order, even while new
trades arrive; the writer's keys make any overlap harmless. A pair with no stored trades is
backfilled as `recorder.trades_backfill` says: everything the exchange serves, a window of
time, or nothing (then recording starts with the newest trade).
"""

from __future__ import annotations

import sys
import time
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta
from functools import partial
from typing import NoReturn

from recorder import metrics
from recorder.clock import REAL_CLOCK, Clock
from recorder.config import TradesBackfill
from recorder.exchange.paging import PageSize, trades_after, trades_since
from recorder.exchange.rest import ExchangeClient
from recorder.logs import get_logger
from recorder.records import Trade, utc_now
from recorder.storage.writer import Writer
from recorder.ticker import Ticker

log = get_logger(__name__)

PROGRESS_EVERY_S = 10.0
METRICS_EVERY = 1000
"""Trades taken in between two updates of a catch-up's metrics."""
POLL = "interval"
"""The reason of a tick that is a poll; every other reason ("start", "connect") catches up."""


class TradeRecorder:
    def __init__(
        self,
        client: ExchangeClient,
        writer: Writer,
        *,
        poll_interval_s: float,
        backfill: TradesBackfill,
        last_tids: dict[str, int],
        on_tape: Callable[[str, datetime], None] | None = None,
        clock: Clock = REAL_CLOCK,
    ) -> None:
        """`on_tape`: told each pair's newest trade time whenever the tape advances (the
        stream's watchdog for silent channels); `clock`: the pairs' tickers' (tests move a
        fake one)."""
        self._client = client
        self._on_tape = on_tape
        self._writer = writer
        self._every = partial(Ticker, interval_s=poll_interval_s, clock=clock)
        """A ticker of this source's interval, given its name."""
        self._backfill = backfill
        self.last_tids = dict(last_tids)
        self.pages = PageSize()
        """The exchange's trade page size, learned by every pair's paging (for the probe)."""
        self._tickers: dict[str, Ticker] = {}
        self._first_filled: set[str] = set()
        """Pairs whose first fill ran: with nothing found, it is not run again each poll."""

    def catch_up_now(self) -> None:
        """After a reconnect: every pair fetches what it missed at once."""
        for ticker in self._tickers.values():
            ticker.wake("connect")

    async def run(self, pair: str) -> NoReturn:
        """Catch `pair` up at once, then poll it every interval; catch up again whenever
        `catch_up_now()` says so."""
        ticker = self._tickers.get(pair)
        if ticker is None:
            ticker = self._every(f"trades:{pair}")
            self._tickers[pair] = ticker

        async def step(reason: str) -> None:
            if pair not in self.last_tids and pair not in self._first_filled:
                await self._first_fill(pair)
                self._first_filled.add(pair)
            await self.fetch_new(pair, catch_up=reason != POLL)

        await ticker.run(step)

    async def fetch_new(self, pair: str, *, catch_up: bool = False) -> int:
        """Write every trade newer than the last one written; return how many.

        `catch_up`: this fetch recovers what was missed (at start, after a reconnect), so
        its trades count in `recorder_trades_backfilled_total`; a poll's do not.
        """
        trades = trades_after(self._client, pair, self.last_tids.get(pair), pages=self.pages)
        return await self._take_all(pair, trades, catch_up=catch_up)

    async def _first_fill(self, pair: str) -> None:
        """No trade of `pair` is stored: backfill as configured."""
        window_s = self._backfill.window_s
        if window_s is None:
            return  # fetch_new with no last id reads the whole tape
        if window_s > 0:
            since = utc_now() - timedelta(seconds=window_s)
            log.info("backfilling trades", pair=pair, since=since.isoformat())
            trades = trades_since(self._client, pair, since, pages=self.pages)
            await self._take_all(pair, trades, catch_up=True)
        else:
            log.info("trades_backfill is none: recording new trades only", pair=pair)
        if pair not in self.last_tids:
            # Nothing wanted from the past: start from the newest trade, not the beginning.
            newest = await self._client.trades(pair, limit=1, ordering="-id")
            if newest:
                self.last_tids[pair] = newest[0].tid

    async def _take_all(self, pair: str, trades: AsyncIterator[Trade], *, catch_up: bool) -> int:
        """Write every trade `trades` yields, showing progress when it is a long catch-up.

        The metrics follow every `METRICS_EVERY` trades and at the end, not every trade:
        three labelled metric updates per trade are costly at catch-up rates.
        """
        count = reported = 0
        newest: Trade | None = None
        progress = _Progress(pair)

        def report() -> None:
            nonlocal reported
            if newest is None or reported == count:
                return
            if catch_up:
                metrics.trades_backfilled.labels(pair).inc(count - reported)
            metrics.last_trade_timestamp.labels(pair).set(newest.ts.timestamp())
            metrics.backfill_cursor_timestamp.labels(pair).set(newest.ts.timestamp())
            if self._on_tape is not None:
                self._on_tape(pair, newest.ts)
            reported = count

        try:
            async for trade in trades:
                self._writer.put(trade)
                self.last_tids[pair] = trade.tid
                newest = trade
                count += 1
                if count % METRICS_EVERY == 0:
                    report()
                progress.tick(count)
        finally:
            report()
        # Only a catch-up that ended ends the backfill: one interrupted by an error is
        # retried from where it stopped, and stays in progress meanwhile (the stuck-backfill
        # alert watches exactly that state).
        progress.done(count)
        return count


class _Progress:
    """Progress of a long catch-up: a bar on a terminal, a log line every few seconds else."""

    def __init__(self, pair: str) -> None:
        self.pair = pair
        self.started = time.monotonic()
        self.last_report = self.started
        self.terminal = sys.stderr.isatty()
        self.active = False

    def tick(self, count: int) -> None:
        now = time.monotonic()
        if count == 1000 and not self.active:
            self.active = True
            metrics.backfill_in_progress.labels(self.pair).set(1)
        if not self.active:
            return
        if self.terminal:
            rate = count / max(now - self.started, 1e-9)
            print(f"\r{self.pair}: {count:,} trades caught up ({rate:,.0f}/s)",
                  end="", file=sys.stderr, flush=True)  # fmt: skip
        elif now - self.last_report >= PROGRESS_EVERY_S:
            self.last_report = now
            log.info("catching up trades", pair=self.pair, trades=count)

    def done(self, count: int) -> None:
        if not self.active:
            # An earlier attempt, interrupted, may have marked the backfill in progress.
            metrics.backfill_in_progress.labels(self.pair).set(0)
            return
        metrics.backfill_in_progress.labels(self.pair).set(0)
        if self.terminal:
            print(file=sys.stderr)
        log.info(
            "trades caught up",
            pair=self.pair,
            trades=count,
            seconds=round(time.monotonic() - self.started, 1),
        )

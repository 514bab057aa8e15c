"""Stored book readings kept warm: once per snapshot interval, each pair this recorder
records gets the cancel readings of its recently closed snapshot windows stored
(`book_windows_warm`, migrations/0018), so that a researcher's first `book_at_many` over a
day costs what the later ones do (docs/research.md, "Stored window readings").

It only saves time: a window not read here is read by `book_at_many` when asked, and a
reading made stale by rows committed later is read again there. So a tick that finds the
database away is skipped, not retried: the next one reads what this one would have.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import timedelta
from typing import NoReturn

import psycopg

from recorder.logs import get_logger
from recorder.records import utc_now
from recorder.ticker import Ticker

log = get_logger(__name__)

LOOKBACK = timedelta(days=1)
"""How far back a tick looks for closed windows without a reading (after a restart, the
windows closed while nothing warmed them, up to a day)."""
WINDOWS_PER_TICK = 10
"""Per pair and tick, the most recent first: a day of one-minute windows is caught up in
a few hours after a first start, while a tick stays short."""


class BookReadings:
    def __init__(
        self, dsn: str, *, snapshot_interval_s: float, pairs: Callable[[], Iterable[str]]
    ) -> None:
        """`pairs`: the pairs this recorder records now."""
        self._dsn = dsn
        # A window is warmed once it has been closed a whole snapshot interval: by then the
        # rows of its last moments, in flight when the next snapshot came, are committed.
        self._settle = timedelta(seconds=snapshot_interval_s)
        self._pairs = pairs
        self._ticker = Ticker("book-readings", snapshot_interval_s, first=None)

    async def run(self) -> NoReturn:
        await self._ticker.run(self._step)

    async def _step(self, reason: str) -> None:
        pairs = sorted(self._pairs())
        if not pairs:
            return
        try:
            warmed = await self.warm(pairs)
        except psycopg.OperationalError as exc:
            log.info("book readings not warmed: database unavailable", error=str(exc).strip())
            return
        if warmed:
            log.debug("book readings stored", windows=warmed)

    async def warm(self, pairs: Iterable[str]) -> int:
        """Store the readings of the pairs' windows closed within the lookback and at least
        one snapshot interval ago; how many windows were read."""
        now = utc_now()
        closed_after, closed_before = now - LOOKBACK, now - self._settle
        warmed = 0
        async with await psycopg.AsyncConnection.connect(self._dsn, autocommit=True) as conn:
            for pair in pairs:
                cursor = await conn.execute(
                    "SELECT book_windows_warm(%s, %s, %s, %s)",
                    (pair, closed_after, closed_before, WINDOWS_PER_TICK),
                )
                row = await cursor.fetchone()
                warmed += int(row[0]) if row else 0
        return warmed

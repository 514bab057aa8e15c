"""Time as the daemon's waiting code sees it, so that retries and tickers can be tested
with a clock that tests move by hand instead of with real seconds.
"""

from __future__ import annotations

import asyncio
import time
from contextlib import suppress
from typing import Protocol


class Clock(Protocol):
    def monotonic(self) -> float:
        """Seconds on a clock that never goes back."""
        ...

    async def wait(self, event: asyncio.Event, timeout_s: float) -> bool:
        """Wait until `event` is set (True) or `timeout_s` has passed (False)."""
        ...


class RealClock:
    def monotonic(self) -> float:
        return time.monotonic()

    async def wait(self, event: asyncio.Event, timeout_s: float) -> bool:
        if timeout_s <= 0:
            return event.is_set()
        # asyncio.timeout, not wait_for: on Python 3.11, wait_for can swallow a cancellation
        # that arrives in the same loop turn as the event, and the waiter would not stop.
        with suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await event.wait()
        return event.is_set()


REAL_CLOCK: Clock = RealClock()

"""Client-side rate limits: stay under the exchange's 100 calls/s public, 2 calls/s private.

A token bucket per limit. With the default capacity of one token the calls are spaced at
least `1 / rate_per_s` apart, so no window of one second (half-open, as a server counts)
ever holds more than `rate_per_s` calls (rounded up), however many tasks call at once; a larger
capacity allows bursts and so up to `capacity - 1` more in a window. The clock and the
sleep are injectable so that tests can check the spacing exactly without waiting.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

PUBLIC_CALLS_PER_S = 95.0
"""The client's default pace for public calls: 5% under the exchange's 100/s. The server
counts calls as they arrive, and calls spaced exactly 1/100 s apart leave no room for jitter:
any two brought closer on the way make 101 in a window. A server that stalls and then
handles a queue of calls at once can still count more; a 429 is then retried after its
Retry-After (docs/benchmarks.md, Footprint)."""
PRIVATE_CALLS_PER_S = 1.8
"""The same for private calls (2/s per account): 10% under, as one call of jitter is a
larger share of a 0.5 s spacing."""
_EPSILON = 1e-9
"""A token short by less than this (float rounding of clock arithmetic) counts as whole."""


class TokenBucket:
    """`acquire()` waits until a token is free, then takes it; FIFO among waiters."""

    def __init__(
        self,
        rate_per_s: float,
        capacity: float = 1.0,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if rate_per_s <= 0 or capacity < 1:
            raise ValueError(f"need rate_per_s > 0 and capacity >= 1: {rate_per_s}, {capacity}")
        self.rate_per_s = rate_per_s
        self.capacity = capacity
        self._clock = clock
        self._sleep = sleep
        self._tokens = capacity
        self._updated = clock()
        self._lock = asyncio.Lock()

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.capacity, self._tokens + (now - self._updated) * self.rate_per_s)
        self._updated = now

    async def acquire(self) -> None:
        # The lock makes waiters queue in order; the one holding it sleeps until its token.
        async with self._lock:
            self._refill()
            while self._tokens < 1 - _EPSILON:
                await self._sleep((1 - self._tokens) / self.rate_per_s)
                self._refill()
            self._tokens = max(0.0, self._tokens - 1)

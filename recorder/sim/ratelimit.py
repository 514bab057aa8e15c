"""The exchange's rate limits: at most N calls in any one-second window per caller.

A sliding window of the accepted calls' times; a refused call does not count, so a client
that backs off gets through again one second after its window filled.
"""

from __future__ import annotations

from collections import deque


class SlidingWindow:
    def __init__(self, calls_per_s: int, window_s: float = 1.0) -> None:
        self.calls_per_s = calls_per_s
        self.window_s = window_s
        self._calls: dict[str, deque[float]] = {}

    def allow(self, caller: str, now_s: float) -> bool:
        """Whether `caller` may make a call at `now_s` (monotonic seconds); counts it if so."""
        calls = self._calls.setdefault(caller, deque())
        while calls and calls[0] <= now_s - self.window_s:
            calls.popleft()
        if len(calls) >= self.calls_per_s:
            return False
        calls.append(now_s)
        return True

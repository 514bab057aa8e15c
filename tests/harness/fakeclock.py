"""A clock that tests move by hand: waiting costs no real time, and time passes only when
the code under test waits or the test says so."""

from __future__ import annotations

import asyncio


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.waits: list[float] = []
        """Every timeout the code under test waited for, in order."""

    def monotonic(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    async def wait(self, event: asyncio.Event, timeout_s: float) -> bool:
        await asyncio.sleep(0)  # let other tasks run (and perhaps set the event) first
        if event.is_set():
            return True
        self.waits.append(timeout_s)
        self.now += max(0.0, timeout_s)
        return event.is_set()

"""Periodic work in the manner of arq's `poll()`: one loop for every source that runs on a
timer, instead of one hand-written loop per source.

A `Ticker` calls its step every `interval_s`, measured from the start of the previous step,
so the step's own duration does not push the schedule back (a 60 s snapshot interval stays
60 s however long the snapshot takes). `wake(reason)` makes it tick at once, for work that
something else makes due early (a reconnect wants a snapshot and a trade catch-up now).

A step that raises does not end the loop: the failure is logged with the task's name and
counted in `recorder_task_failures_total{task}`, and the same step (with the same reason) is
tried again after the task restart backoff, which a success resets.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import NoReturn

from recorder import metrics
from recorder.clock import REAL_CLOCK, Clock
from recorder.logs import get_logger
from recorder.retry import TASK_RESTART, Backoff

log = get_logger(__name__)

Step = Callable[[str], Awaitable[None]]
"""One tick's work; it is told why it runs: the first reason, "interval", or a wake reason."""


class Ticker:
    def __init__(
        self,
        name: str,
        interval_s: float,
        *,
        first: str | None = "start",
        retry: Backoff = TASK_RESTART,
        clock: Clock = REAL_CLOCK,
    ) -> None:
        """`first`: the reason of a first tick at once; None waits one interval first."""
        self.name = name
        self.interval_s = interval_s
        self._first = first
        self._retry = retry
        self._clock = clock
        self._woken = asyncio.Event()
        self._wake_reason = "wake"

    def wake(self, reason: str) -> None:
        """Tick now, or as soon as the running step ends, with `reason`."""
        self._wake_reason = reason
        self._woken.set()

    async def run(self, step: Step) -> NoReturn:
        clock = self._clock
        attempts = self._retry.attempts(clock)
        reason = self._first or "interval"
        due = clock.monotonic() + (0.0 if self._first is not None else self.interval_s)
        while True:
            if await clock.wait(self._woken, due - clock.monotonic()):
                self._woken.clear()
                reason = self._wake_reason
            started = clock.monotonic()
            attempts.started()
            try:
                await step(reason)
            except Exception as exc:
                metrics.task_failures.labels(self.name).inc()
                delay_s = attempts.failed()
                log.error(
                    "step failed; trying again",
                    task=self.name,
                    reason=reason,
                    error=f"{type(exc).__name__}: {exc}",
                    retry_in_s=round(delay_s, 2),
                    exc_info=exc,
                )
                due = clock.monotonic() + delay_s
                continue  # the same reason again: a failed resync is still owed
            attempts.succeeded()
            reason = "interval"
            due = started + self.interval_s

"""The one periodic loop: drift-compensated ticks, early wake-ups, and steps that fail
without ending the loop, on a clock the test moves."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Callable

from prometheus_client import REGISTRY

from recorder.retry import Backoff
from recorder.ticker import Step, Ticker
from tests.harness.fakeclock import FakeClock

RETRY = Backoff(initial_s=1.0, max_s=4.0)


async def run_until(ticker: Ticker, step: Step, done: Callable[[], bool]) -> None:
    """Run `ticker` until `done()` holds after a step, then stop it."""
    finished = asyncio.Event()

    async def watched(reason: str) -> None:
        try:
            await step(reason)
        finally:
            if done():
                finished.set()
                await asyncio.Event().wait()  # no further tick until the test cancels

    running = asyncio.create_task(ticker.run(watched))
    await asyncio.wait_for(finished.wait(), 10)
    running.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await running


async def test_ticks_keep_their_schedule_however_long_a_step_takes() -> None:
    clock = FakeClock()
    ticks: list[tuple[float, str]] = []

    async def step(reason: str) -> None:
        ticks.append((clock.now, reason))
        clock.advance(3.0)  # the work itself takes time

    await run_until(Ticker("t", 10.0, clock=clock), step, lambda: len(ticks) == 4)
    assert ticks == [(0.0, "start"), (10.0, "interval"), (20.0, "interval"), (30.0, "interval")]


async def test_a_step_longer_than_the_interval_is_followed_at_once() -> None:
    clock = FakeClock()
    starts: list[float] = []

    async def step(reason: str) -> None:
        starts.append(clock.now)
        clock.advance(15.0)

    await run_until(Ticker("t", 10.0, clock=clock), step, lambda: len(starts) == 3)
    assert starts == [0.0, 15.0, 30.0]


async def test_without_a_first_reason_the_first_tick_waits_one_interval() -> None:
    clock = FakeClock()
    ticks: list[tuple[float, str]] = []

    async def step(reason: str) -> None:
        ticks.append((clock.now, reason))

    await run_until(Ticker("t", 5.0, first=None, clock=clock), step, lambda: len(ticks) == 2)
    assert ticks == [(5.0, "interval"), (10.0, "interval")]


async def test_wake_ticks_at_once_with_its_reason_and_the_schedule_restarts_from_there() -> None:
    clock = FakeClock()
    ticks: list[tuple[float, str]] = []
    ticker = Ticker("t", 10.0, clock=clock)

    async def step(reason: str) -> None:
        ticks.append((clock.now, reason))
        if len(ticks) == 2:
            clock.advance(2.0)
            ticker.wake("connect")  # woken while a step runs: the next tick comes at once

    await run_until(ticker, step, lambda: len(ticks) == 4)
    assert ticks == [(0.0, "start"), (10.0, "interval"), (12.0, "connect"), (22.0, "interval")]


async def test_a_failing_step_is_counted_and_retried_with_its_reason_after_the_backoff() -> None:
    clock = FakeClock()
    ticks: list[tuple[float, str]] = []

    async def step(reason: str) -> None:
        ticks.append((clock.now, reason))
        if len(ticks) <= 3:
            raise RuntimeError(f"failure {len(ticks)}")

    def failures() -> float:
        return REGISTRY.get_sample_value("recorder_task_failures_total", {"task": "flaky"}) or 0.0

    before = failures()
    await run_until(Ticker("flaky", 100.0, retry=RETRY, clock=clock), step, lambda: len(ticks) == 5)
    assert failures() - before == 3
    assert [reason for _, reason in ticks] == ["start"] * 4 + ["interval"]
    gaps = [later - earlier for (earlier, _), (later, _) in itertools.pairwise(ticks)]
    for gap, ceiling in zip(gaps[:3], [1.0, 2.0, 4.0], strict=True):
        assert ceiling / 2 <= gap <= ceiling  # the backoff grows with each failure
    assert gaps[3] == 100.0  # after a success, the interval again

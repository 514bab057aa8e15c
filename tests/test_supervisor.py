"""The supervisor restarts failed tasks, counts failures, and stops within its bound."""

from __future__ import annotations

import asyncio
import contextlib

from recorder.backoff import Backoff
from recorder.supervisor import Supervisor, task_failures


async def test_a_failing_task_is_logged_counted_and_restarted() -> None:
    runs = 0
    done = asyncio.Event()

    async def flaky() -> None:
        nonlocal runs
        runs += 1
        if runs < 3:
            raise RuntimeError(f"failure {runs}")
        done.set()
        await asyncio.Event().wait()

    before = task_failures.labels("flaky")._value.get()
    supervisor = Supervisor(backoff_initial_s=0.01, backoff_max_s=0.02)
    supervisor.spawn("flaky", flaky)
    await asyncio.wait_for(done.wait(), 10)
    assert runs == 3
    assert task_failures.labels("flaky")._value.get() - before == 2
    assert supervisor.names == ["flaky"]
    assert await supervisor.stop(5) == []
    assert supervisor.names == []


async def test_a_task_that_returns_is_not_restarted() -> None:
    runs = 0

    async def once() -> None:
        nonlocal runs
        runs += 1

    supervisor = Supervisor()
    supervisor.spawn("once", once)
    await asyncio.sleep(0.05)
    assert runs == 1
    assert not supervisor.running("once")


async def test_stop_reports_tasks_that_refuse_to_stop() -> None:
    async def stubborn() -> None:
        # A bug in a task: it swallows the cancellation (once, so that the test can end).
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(10)
        await asyncio.sleep(10)

    async def polite() -> None:
        await asyncio.sleep(10)

    supervisor = Supervisor()
    supervisor.spawn("stubborn", stubborn)
    supervisor.spawn("polite", polite)
    await asyncio.sleep(0.01)
    assert await supervisor.stop(0.2) == ["stubborn"]
    for task in asyncio.all_tasks():
        if task.get_name() == "stubborn":
            task.cancel()


def test_backoff_is_capped_jittered_and_resets() -> None:
    backoff = Backoff(initial_s=1, max_s=8)
    delays = [backoff.delay_s(attempt) for attempt in range(10)]
    assert all(0.5 <= d <= 8 for d in delays)
    assert max(delays[5:]) <= 8
    assert delays[0] <= 1
    assert backoff.delay_s(0) <= 1  # counting attempts from 0 again starts small again

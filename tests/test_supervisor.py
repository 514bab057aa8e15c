"""The supervisor restarts failed tasks after the task restart backoff, counts failures,
and stops within its bound."""

from __future__ import annotations

import asyncio
import contextlib

from prometheus_client import REGISTRY

from recorder.retry import Backoff
from recorder.supervisor import Supervisor
from tests.harness.fakeclock import FakeClock
from tests.harness.metrics import sample
from tests.harness.waiting import eventually

RESTART = Backoff(initial_s=1.0, max_s=4.0, healthy_after_s=60.0)


def failures(task: str) -> float:
    return REGISTRY.get_sample_value("recorder_task_failures_total", {"task": task}) or 0.0


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

    before = failures("flaky")
    supervisor = Supervisor(restart=Backoff(initial_s=0.01, max_s=0.02))
    supervisor.spawn("flaky", flaky)
    await asyncio.wait_for(done.wait(), 10)
    assert runs == 3
    assert failures("flaky") - before == 2
    assert supervisor.names == ["flaky"]
    assert await supervisor.stop(5) == []
    assert supervisor.names == []


async def test_restarts_back_off_and_a_healthy_run_starts_over() -> None:
    clock = FakeClock()
    runs = 0
    done = asyncio.Event()

    async def flaky() -> None:
        nonlocal runs
        runs += 1
        if runs == 5:  # this run lasts long enough to count as healthy before it fails
            clock.advance(61.0)
        if runs == 6:
            done.set()
            await asyncio.Event().wait()
        raise RuntimeError(f"failure {runs}")

    supervisor = Supervisor(restart=RESTART, clock=clock)
    supervisor.spawn("flaky", flaky)
    await asyncio.wait_for(done.wait(), 10)
    await supervisor.stop(5)
    ceilings = [1.0, 2.0, 4.0, 4.0, 1.0]
    assert len(clock.waits) == len(ceilings)
    for waited, ceiling in zip(clock.waits, ceilings, strict=True):
        assert ceiling / 2 <= waited <= ceiling


async def test_stop_ends_a_restart_that_waits_its_delay() -> None:
    async def broken() -> None:
        raise RuntimeError("always")

    before = sample("recorder_task_failures_total", task="broken")
    supervisor = Supervisor(restart=Backoff(initial_s=3600.0, max_s=3600.0))
    supervisor.spawn("broken", broken)
    await eventually(lambda: sample("recorder_task_failures_total", task="broken") > before,
                     what="the first failure, now waiting an hour to restart")  # fmt: skip
    assert await asyncio.wait_for(supervisor.stop(1), 5) == []


async def test_a_task_that_returns_is_not_restarted() -> None:
    runs = 0

    async def once() -> None:
        nonlocal runs
        runs += 1

    supervisor = Supervisor()
    supervisor.spawn("once", once)
    await eventually(lambda: not supervisor.running("once"), what="the task finished")
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
    await asyncio.sleep(0)  # both tasks enter their first await, where cancellation meets them
    assert await supervisor.stop(0.2) == ["stubborn"]
    for task in asyncio.all_tasks():
        if task.get_name() == "stubborn":
            task.cancel()

"""Named, supervised tasks: every job of the daemon runs here, and none dies silently.

Each task is a coroutine factory with a name (`stream`, `trades:BTC_USD`, ...). When the
coroutine raises, the failure is logged with the task's name and counted in
`recorder_task_failures_total{task}`, and the task is started again after the task restart
backoff (`recorder.retry.TASK_RESTART`), which starts over once a run lasted long enough to
count as healthy. Stopping cancels every task and waits, within a bound, logging the names
of any that would not stop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from recorder.clock import REAL_CLOCK, Clock
from recorder.logs import get_logger
from recorder.metrics import task_failures
from recorder.retry import TASK_RESTART, Backoff

log = get_logger(__name__)

TaskFactory = Callable[[], Awaitable[None]]


class Supervisor:
    def __init__(self, *, restart: Backoff = TASK_RESTART, clock: Clock = REAL_CLOCK) -> None:
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._restart = restart
        self._clock = clock
        self._stopping = asyncio.Event()

    @property
    def names(self) -> list[str]:
        return sorted(name for name, task in self._tasks.items() if not task.done())

    def running(self, name: str) -> bool:
        task = self._tasks.get(name)
        return task is not None and not task.done()

    def spawn(self, name: str, factory: TaskFactory) -> None:
        """Run `factory()` as task `name`, restarting it whenever it raises."""
        if self.running(name):
            raise ValueError(f"a task named {name!r} is already running")
        self._tasks[name] = asyncio.create_task(self._guard(name, factory), name=name)

    async def _guard(self, name: str, factory: TaskFactory) -> None:
        attempts = self._restart.attempts(self._clock)
        while True:
            attempts.started()
            try:
                await factory()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                task_failures.labels(name).inc()
                delay_s = attempts.failed()
                log.error(
                    "task failed; restarting",
                    task=name,
                    error=f"{type(exc).__name__}: {exc}",
                    restart_in_s=round(delay_s, 2),
                    exc_info=exc,
                )
                if await self._clock.wait(self._stopping, delay_s):
                    return
            else:
                log.info("task finished", task=name)
                return

    async def cancel(self, name: str) -> None:
        """Stop task `name` (if it runs) and wait until it has."""
        task = self._tasks.pop(name, None)
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def stop(self, timeout_s: float = 10.0) -> list[str]:
        """Cancel every task; wait up to `timeout_s`; return the names that did not stop."""
        self._stopping.set()
        tasks = dict(self._tasks)
        self._tasks.clear()
        for task in tasks.values():
            task.cancel()
        if not tasks:
            return []
        _, pending = await asyncio.wait(tasks.values(), timeout=timeout_s)
        stuck = sorted(name for name, task in tasks.items() if task in pending)
        if stuck:
            log.warning("tasks did not stop in time", tasks=stuck, timeout_s=timeout_s)
        return stuck

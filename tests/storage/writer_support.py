"""What the writer's fault tests share: waiting on a condition, metrics, the stored rows."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import psycopg
from prometheus_client import REGISTRY

from recorder.retry import Backoff

FAST_RETRY = Backoff(initial_s=0.05, max_s=0.3)
"""Retries within a test's patience; the shape of the backoff is tested in test_retry.py."""

UNREACHABLE_DSN = "postgresql://recorder:secret@127.0.0.1:9/recorder?connect_timeout=1"


async def eventually(check: Callable[[], Any], *, timeout_s: float = 30.0, what: str = "") -> Any:
    """Poll `check()` until it returns something true, and return that; fail after
    `timeout_s` naming `what` and the last value seen."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if loop.time() >= deadline:
            raise AssertionError(f"not within {timeout_s:g} s: {what}; last value: {value!r}")
        await asyncio.sleep(0.02)


def sample(name: str, **labels: str) -> float:
    """A metric's current value through the registry (0 for a labelled child not yet used)."""
    return REGISTRY.get_sample_value(name, labels) or 0.0


def stored_tids(dsn: str) -> list[int]:
    with psycopg.connect(dsn) as conn:
        return [row[0] for row in conn.execute("SELECT tid FROM trades ORDER BY tid")]


def worker() -> asyncio.Task[Any]:
    """The running writer's worker task (tests run one writer at a time)."""
    (task,) = [task for task in asyncio.all_tasks() if task.get_name() == "writer"]
    return task

"""What the writer's fault tests share: quick retries, an unreachable database, the stored rows."""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg

from recorder.retry import Backoff

FAST_RETRY = Backoff(initial_s=0.05, max_s=0.3)
"""Retries within a test's patience; the shape of the backoff is tested in test_retry.py."""

UNREACHABLE_DSN = "postgresql://recorder:secret@127.0.0.1:9/recorder?connect_timeout=1"


def stored_tids(dsn: str) -> list[int]:
    with psycopg.connect(dsn) as conn:
        return [row[0] for row in conn.execute("SELECT tid FROM trades ORDER BY tid")]


def worker() -> asyncio.Task[Any]:
    """The running writer's worker task (tests run one writer at a time)."""
    (task,) = [task for task in asyncio.all_tasks() if task.get_name() == "writer"]
    return task

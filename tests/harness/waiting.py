"""Waiting on a condition, the one way tests and benches wait for something to happen.

A fixed sleep is either too short on a loaded machine (a flaky test) or too long everywhere
(a slow one), and says nothing when the thing never happens. `eventually` polls a check
until it holds and, when it never does, fails saying what was awaited and what the check
last gave.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")

DEFAULT_TIMEOUT_S = 30.0
"""Generous: the suite shares a small machine with other work; only a failure waits this long."""
DEFAULT_INTERVAL_S = 0.05


async def eventually(
    check: Callable[[], T | Awaitable[T]],
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    interval_s: float = DEFAULT_INTERVAL_S,
    what: str = "",
    ignoring: tuple[type[BaseException], ...] = (),
) -> T:
    """Poll `check()` (plain or async) until it returns something true, and return that.

    An exception of a type in `ignoring` counts as "not yet" (a table not migrated yet, a
    server not listening yet); any other one fails at once. After `timeout_s` an
    AssertionError names `what` (or the check) and the last value or exception seen.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    last: Any = None
    error: BaseException | None = None
    while True:
        try:
            value = check()
            if inspect.isawaitable(value):
                value = await value
        except ignoring as exc:
            error, last = exc, None
        else:
            if value:
                return value  # type: ignore[return-value]
            error, last = None, value
        if loop.time() >= deadline:
            seen = f"last error: {error!r}" if error is not None else f"last value: {last!r}"
            raise AssertionError(
                f"not within {timeout_s:g} s: {what or getattr(check, '__name__', check)}; {seen}"
            ) from error
        await asyncio.sleep(interval_s)

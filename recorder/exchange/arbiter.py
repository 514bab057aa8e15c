"""Which of the redundant connections' copies of a book event is the one kept: the first.

Every connection subscribed to a pair is sent the same events. The stream keeps each event
once, by its identity (pair, oid, kind), from whichever connection delivered it first, so it
is recorded in the order first received and its `session_id` names the connection that
brought it.

Memory stays small: an identity is remembered only until every other connection that could
still deliver it has done so (normally milliseconds later), and at most `window_s`: a
connection that dropped never delivers its copies, and one lagging more than that is broken.
A copy arriving after its identity was forgotten is kept again; the primary key stores it
once, and the drift check corrects the in-memory book.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable
from typing import Any

WINDOW_S = 60.0
NOT_A_COPY: Any = object()


class Arbiter:
    def __init__(
        self, *, window_s: float = WINDOW_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._window_s = window_s
        self._clock = clock
        self._pending: dict[Hashable, tuple[float, int, Any]] = {}
        """key -> (first seen, copies still expected, what the first copy said); insertion
        order is age order."""
        self.duplicates = 0

    def __len__(self) -> int:
        return len(self._pending)

    def first(
        self, identity: Hashable, *, others: int, value: Any = None, text: Hashable = None
    ) -> bool:
        """True for the first copy of `identity`: keep it. `others`: how many other
        connections are up now and may deliver copies of it (0: nothing to remember);
        `value`: what `copy()` gives for them. `text`, if given: a second key of the same
        event (its text as received), remembered with it in the same step, for which
        `copy()` gives `(identity, value)`; `identity` alone then gives None."""
        pending = self._pending
        if identity in pending:
            self.copy(identity)
            return False
        if others > 0:
            now = self._clock()
            if text is None:
                pending[identity] = (now, others, value)
            else:
                pending[identity] = (now, others, None)
                pending[text] = (now, others, (identity, value))
            self._forget_older_than(now - self._window_s)
        return True

    def copy(self, key: Hashable) -> Any:
        """The `value` remembered with `key` if this is a copy of something kept (counted
        as one of the copies expected); `NOT_A_COPY` if not."""
        value = self.expected(key)
        if value is not NOT_A_COPY:
            self.duplicates += 1
        return value

    def expected(self, key: Hashable) -> Any:
        """As `copy()`, for a second key of the same copy: not counted again."""
        pending = self._pending.get(key)
        if pending is None:
            return NOT_A_COPY
        seen_at, expected, value = pending
        if expected <= 1:
            del self._pending[key]
        else:
            self._pending[key] = (seen_at, expected - 1, value)
        return value

    def _forget_older_than(self, limit: float) -> None:
        pending = self._pending
        while pending:
            oldest = next(iter(pending))
            if pending[oldest][0] >= limit:
                return
            del pending[oldest]

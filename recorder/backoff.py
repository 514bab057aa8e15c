"""Capped, jittered exponential backoff: one small idea, used wherever we wait to try again.

Delays grow `initial_s * multiplier**attempt` up to `max_s`; each is then drawn uniformly
from its upper half, so many clients that failed together do not come back together, and
no delay is ever zero.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Backoff:
    initial_s: float = 0.5
    max_s: float = 30.0
    multiplier: float = 2.0

    def ceiling_s(self, attempt: int) -> float:
        """The delay before jitter for `attempt` (0 for the first retry)."""
        return float(min(self.max_s, self.initial_s * self.multiplier ** min(attempt, 64)))

    def delay_s(self, attempt: int) -> float:
        ceiling = self.ceiling_s(attempt)
        return ceiling / 2 + random.uniform(0, ceiling / 2)  # noqa: S311 - jitter, not crypto

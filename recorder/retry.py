"""Waiting to try again: one policy with state, used by every retry loop of the daemon.

`Backoff` is the settings (a capped, jittered exponential), and each setting the daemon uses
has a name below. `Attempts` is one loop's state, in the manner of psycopg_pool's
`AttemptWithBackoff`: `failed()` says how long to wait, `succeeded()` starts over, and with
`healthy_after_s` an attempt that ran well that long before failing starts over too (a
connection that lasted an hour and then dropped is not a flapping one).

The delays themselves are tenacity's: half of the capped exponential is fixed and half drawn
at random ("equal jitter"), so clients that failed together do not come back together and no
delay is ever zero. `Backoff.wait()` hands the same strategy to tenacity's own retrying.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

from tenacity import RetryCallState
from tenacity.wait import wait_base, wait_exponential, wait_random_exponential

from recorder.clock import REAL_CLOCK, Clock


@dataclass(frozen=True, slots=True)
class Backoff:
    initial_s: float
    """The ceiling of the first delay; each failure multiplies it by `multiplier`."""
    max_s: float
    """No delay is longer than this."""
    multiplier: float = 2.0
    healthy_after_s: float | None = None
    """An attempt that ran this long before it failed resets the backoff (None: never)."""
    steady_at_max: bool = False
    """Once the exponential reaches `max_s`, wait `max_s` exactly: a server that refuses
    every attempt then sees one per `max_s`. The jitter of the growing delays has already
    spread clients that failed together apart, and a steady period keeps them apart."""

    def wait(self) -> wait_base:
        """The delays as a tenacity wait strategy (for `tenacity.AsyncRetrying(wait=...)`)."""
        half: dict[str, Any] = {
            "multiplier": self.initial_s / 2,
            "max": self.max_s / 2,
            "exp_base": self.multiplier,
        }
        return wait_exponential(**half) + wait_random_exponential(**half)

    def delay_s(self, failures: int) -> float:
        """The delay after `failures` failures in a row (1 for the first)."""
        failures = max(1, failures)
        if self.steady_at_max and self.initial_s * self.multiplier ** (failures - 1) >= self.max_s:
            return self.max_s
        state = RetryCallState(cast(Any, None), None, (), {})
        state.attempt_number = failures
        return float(self.wait()(state))

    def attempts(self, clock: Clock = REAL_CLOCK) -> Attempts:
        return Attempts(self, clock=clock)


class Attempts:
    """One retry loop's state: how many failures in a row, and since when the attempt runs."""

    def __init__(self, backoff: Backoff, *, clock: Clock = REAL_CLOCK) -> None:
        self.backoff = backoff
        self.failures = 0
        """Failures in a row since the last success (or healthy attempt)."""
        self._clock = clock
        self._started = clock.monotonic()

    def started(self) -> None:
        """An attempt begins now (what `healthy_after_s` measures from)."""
        self._started = self._clock.monotonic()

    def failed(self) -> float:
        """The attempt failed: how long to wait before the next, in seconds."""
        healthy_after_s = self.backoff.healthy_after_s
        if (
            healthy_after_s is not None
            and self._clock.monotonic() - self._started >= healthy_after_s
        ):
            self.failures = 0
        self.failures += 1
        return self.backoff.delay_s(self.failures)

    def succeeded(self) -> None:
        """The attempt worked: the next failure waits the shortest delay again."""
        self.failures = 0


# The daemon's backoff settings, one name each.
TASK_RESTART = Backoff(initial_s=0.5, max_s=30.0, healthy_after_s=60.0)
"""A supervised task or a periodic step that raised."""
STREAM_RECONNECT = Backoff(initial_s=0.5, max_s=10.0, steady_at_max=True)
"""One socket stream connection, after a failed or lost connection: the first retry within
half a second, starting over once subscribed (`max_s` is `exchange.stream_backoff_max_s`)."""
REST_RETRY = Backoff(initial_s=0.5, max_s=30.0)
"""One REST call, after a 429, a 5xx, a timeout or a connection error."""
EXCHANGE_WAIT = Backoff(initial_s=0.5, max_s=30.0)
"""Start-up, while the exchange does not answer the pair list."""
DATABASE_WAIT = Backoff(initial_s=0.5, max_s=10.0)
"""Start-up, while the database is unreachable."""
DATABASE_RETRY = Backoff(initial_s=0.2, max_s=5.0)
"""The writer, while the database does not take its batches."""
SPOOL_RETRY = Backoff(initial_s=0.5, max_s=10.0)
"""The writer, while its spool under data_dir cannot be written or read (a full disk)."""

"""Fault switches: what the simulator does wrong on purpose, set at start-up or at run time.

`Faults` holds the state; the server consults it on every REST request and socket connect,
and the admin endpoints change it. Draws use their own seeded generator so that a run with
the same seed fails the same way.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal

RestFault = Literal["429", "5xx", "truncated"]


@dataclass
class Faults:
    rate_429: float = 0.0
    """Share of public and private REST calls answered 429 (0..1)."""
    rate_5xx: float = 0.0
    """Share of REST calls answered 500 or 502."""
    rate_truncated: float = 0.0
    """Share of REST calls answered 200 with the JSON body cut in half."""
    latency_s: float = 0.0
    """Added before every REST answer."""
    subscribe_delay_s: float = 0.0
    """Added before a socket.io subscription takes effect: the client's stream misses what
    the book does meanwhile, as a real exchange's may while a subscribe is on its way."""
    stream_delay_s: float = 0.0
    """How long each book event waits before it is emitted: the stream runs behind REST, so
    a snapshot answer holds events the stream delivers only later, as an exchange's socket
    under load (or a client behind its socket) may."""
    outage_until_s: float = 0.0
    """Monotonic time until which REST answers 502 and socket.io refuses connections."""
    paused: bool = False
    """The order flow is paused (private orders still trade)."""
    seed: int = 0
    served: Counter[str] = field(default_factory=Counter, repr=False)
    """How many REST answers got each fault (`429`, `5xx`, `truncated`), for chaos reports."""
    _random: random.Random = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._random = random.Random(self.seed)  # noqa: S311 - reproducible faults, not crypto

    def in_outage(self, now_s: float) -> bool:
        return now_s < self.outage_until_s

    def draw_rest_fault(self) -> RestFault | None:
        """Which fault (if any) this REST call gets."""
        roll = self._random.random()
        for fault, rate in (
            ("429", self.rate_429),
            ("5xx", self.rate_5xx),
            ("truncated", self.rate_truncated),
        ):
            if roll < rate:
                self.served[fault] += 1
                return fault  # type: ignore[return-value]
            roll -= rate
        return None

    def pick_5xx(self) -> int:
        return self._random.choice((500, 502))

    def update(self, changes: dict[str, Any]) -> None:
        """Set switches from an admin request, all or none; ValueError names a bad one."""
        new = {key: _checked(key, value) for key, value in changes.items()}
        rates = {k: getattr(self, k) for k in ("rate_429", "rate_5xx", "rate_truncated")}
        rates.update({k: v for k, v in new.items() if k in rates})
        if sum(rates.values()) > 1:
            raise ValueError("rate_429 + rate_5xx + rate_truncated must not exceed 1")
        for key, value in new.items():
            setattr(self, key, value)

    def state(self, now_s: float) -> dict[str, Any]:
        return {
            "rate_429": self.rate_429,
            "rate_5xx": self.rate_5xx,
            "rate_truncated": self.rate_truncated,
            "latency_s": self.latency_s,
            "subscribe_delay_s": self.subscribe_delay_s,
            "stream_delay_s": self.stream_delay_s,
            "paused": self.paused,
            "outage_remaining_s": max(0.0, self.outage_until_s - now_s),
        }


def _checked(key: str, value: Any) -> float | bool:
    if key in ("rate_429", "rate_5xx", "rate_truncated"):
        rate = _number(key, value)
        if not 0 <= rate <= 1:
            raise ValueError(f"{key} must be between 0 and 1")
        return rate
    if key in ("latency_s", "subscribe_delay_s", "stream_delay_s"):
        seconds = _number(key, value)
        if seconds < 0:
            raise ValueError(f"{key} must be >= 0")
        return seconds
    if key == "paused":
        if not isinstance(value, bool):
            raise ValueError("paused must be true or false")
        return value
    raise ValueError(f"unknown fault switch {key!r}")


def _number(key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{key} must be a number")
    return float(value)

"""Clock skew between the exchange and us, each estimate with its precision. Pure.

Two kinds of evidence, of different strength:

- The HTTP `Date` header is the exchange's clock when it answered, cut to the second. The
  answer was made between our sending and our receiving, so each answer bounds the skew
  (exchange minus ours) to `[date - received, date + 1 - sent]`; the bounds of all answers
  intersect to an interval whose half-width is the precision.
- A trade's or a book event's date is the exchange's clock when it happened, some time
  before we received it. `received - date` (the lag) is that delay minus the skew, so the
  smallest lag seen bounds the skew from one side only: skew >= -min lag. A lag below zero
  means the exchange's clock is ahead of ours by at least that much.
"""

from __future__ import annotations

import email.utils
import statistics
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from recorder.probe.observe import HttpExchange
from recorder.probe.report import Finding

DATE_HEADER_RESOLUTION_S = 1.0
"""RFC 9110 dates have whole seconds."""
MICROSECOND_DIGITS = 6


@dataclass(frozen=True, slots=True)
class DateSkew:
    """The exchange's clock minus ours lies in `[low_s, high_s]`, per the `Date` headers."""

    low_s: float
    high_s: float
    samples: int
    consistent: bool
    """False: the answers' bounds did not overlap (a clock step, or servers that disagree);
    the interval is then the hull of them all."""

    @property
    def estimate_s(self) -> float:
        return (self.low_s + self.high_s) / 2

    @property
    def precision_s(self) -> float:
        return (self.high_s - self.low_s) / 2


def parse_http_date(text: str | None) -> float | None:
    """An HTTP `Date` header as unix seconds; None when absent or unreadable."""
    if not text:
        return None
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def http_date_skew(exchanges: Iterable[HttpExchange]) -> DateSkew | None:
    bounds = []
    for exchange in exchanges:
        date_s = parse_http_date(exchange.date)
        if date_s is not None:
            low = date_s - exchange.received_s
            bounds.append((low, date_s + DATE_HEADER_RESOLUTION_S - exchange.sent_s))
    if not bounds:
        return None
    low = max(b[0] for b in bounds)
    high = min(b[1] for b in bounds)
    if low <= high:
        return DateSkew(low, high, len(bounds), consistent=True)
    return DateSkew(min(b[0] for b in bounds), max(b[1] for b in bounds), len(bounds), False)


@dataclass(frozen=True, slots=True)
class Lags:
    """Our receipt time minus the exchange's date, over `samples` dated items."""

    samples: int
    min_s: float
    median_s: float
    max_s: float
    resolution_s: float
    """The finest decimal unit the dates are given in (1e-06: microseconds or finer)."""

    @property
    def skew_at_least_s(self) -> float:
        """A lower bound of the exchange's clock minus ours."""
        return -self.min_s


def lags(dated: Iterable[tuple[datetime, datetime]]) -> Lags | None:
    """`(exchange date, our receipt)` pairs summed up; None when there are none."""
    pairs = list(dated)
    if not pairs:
        return None
    values = [(received - date).total_seconds() for date, received in pairs]
    return Lags(
        samples=len(values),
        min_s=min(values),
        median_s=statistics.median(values),
        max_s=max(values),
        resolution_s=resolution_s(date for date, _ in pairs),
    )


def resolution_s(times: Iterable[datetime]) -> float:
    """The finest decimal unit (1, 0.1, ... 1e-06 s) in which all of `times` are stated.

    A date sent as `1485686507.09` has microseconds that are multiples of 10,000: hundredths.
    Parsed dates keep microseconds, so 1e-06 means "microseconds or finer".
    """
    micros = [t.microsecond for t in times]
    for digits in range(MICROSECOND_DIGITS + 1):
        unit = 10 ** (MICROSECOND_DIGITS - digits)
        if all(m % unit == 0 for m in micros):
            return 10.0**-digits
    raise AssertionError("unreachable: every microsecond count is a multiple of 1")


# --- findings -------------------------------------------------------------------------------

SKEW_WARN_S = 2.0
"""A skew surely beyond this is worth a warning: the recorder keeps the exchange's dates
and its own receipt times side by side, and lag metrics mix the two clocks."""
_UNITS = {1.0: "s", 1e-3: "ms", 1e-6: "µs"}


def _unit(resolution: float) -> str:
    for value, name in _UNITS.items():
        if abs(resolution - value) < value / 10:
            return name
    return f"{resolution:g} s"


def http_date_finding(skew: DateSkew | None) -> Finding:
    key = "clock.http_date"
    if skew is None:
        return Finding(key, "skip", "no answer carried a Date header")
    details = {
        "skew_s": skew.estimate_s,
        "precision_s": skew.precision_s,
        "low_s": skew.low_s,
        "high_s": skew.high_s,
        "samples": skew.samples,
        "consistent": skew.consistent,
        "resolution_s": DATE_HEADER_RESOLUTION_S,
    }
    text = (
        f"exchange minus ours {skew.estimate_s:+.3f} s ± {skew.precision_s:.3f} s, "
        f"from {skew.samples} Date headers (whole seconds)"
    )
    if not skew.consistent:
        return Finding(key, "warn", f"{text}; the headers disagree with each other", details)
    beyond = skew.low_s > SKEW_WARN_S or skew.high_s < -SKEW_WARN_S
    return Finding(key, "warn" if beyond else "ok", text, details)


def dated_finding(key: str, what: str, found: Lags | None, *, newest_only: bool = False) -> Finding:
    """A finding on `what` (trades, book events): their dates against our receipt.

    `newest_only`: only the least lag means anything (a page of trades reaches back in
    time, so its median is the tape's age, not a delay).
    """
    if found is None:
        return Finding(key, "skip", f"no {what} to compare")
    details = {
        "samples": found.samples,
        "lag_min_s": found.min_s,
        "lag_median_s": found.median_s,
        "lag_max_s": found.max_s,
        "skew_at_least_s": found.skew_at_least_s,
        "resolution_s": found.resolution_s,
    }
    if newest_only:
        lag = f"the newest of {found.samples} {what} received {found.min_s:+.3f} s after its date"
    else:
        lag = (
            f"{found.samples} {what} received {found.min_s:+.3f} s (least) / "
            f"{found.median_s:+.3f} s (median) after their date"
        )
    text = (
        f"{lag}, dated to the {_unit(found.resolution_s)}: "
        f"exchange minus ours >= {found.skew_at_least_s:+.3f} s"
    )
    if found.skew_at_least_s > SKEW_WARN_S:
        return Finding(key, "warn", f"{text}: the exchange's clock is ahead", details)
    return Finding(key, "ok", text, details)

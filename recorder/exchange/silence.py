"""Telling a silent channel from a quiet market: the trade tape says when a pair traded.

A connection can stay up while the exchange stops sending it a pair's channel (a subscription
lost on the server's side, a stuck room): nothing fails, nothing is recorded. Every trade is
made by a new order, and every new order is a book event, so when the tape (polled over REST)
shows a trade newer than the last event a connection delivered for that pair, and that
connection has heard nothing of the pair for `silence_s`, its channel is silent. A quiet
market has no new trades and never looks silent.

Times: the tape's trades and the events carry the exchange's clock and are compared with
each other. A connection that has delivered nothing since it subscribed is measured from its
subscription, on our clock, plus `skew_s` for the exchange's clock being ahead of ours.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

SKEW_S = 2.0

Action = Literal["resubscribe", "reconnect"]


@dataclass
class _Channel:
    """One pair on one connection."""

    mark: datetime
    """The exchange time up to which this connection has shown the pair's events."""
    heard_at: float
    """When it last delivered an event of the pair, or (re)subscribed it (monotonic)."""
    resubscribed: bool = False
    """Resubscribed for silence and silent since: the next step is to reconnect."""


@dataclass(frozen=True, slots=True)
class Silent:
    connection: int
    pair: str
    action: Action
    behind_s: float
    """How far (exchange time) the tape is ahead of what the connection delivered."""


class SilenceWatch:
    def __init__(
        self,
        silence_s: float,
        *,
        skew_s: float = SKEW_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.silence_s = silence_s
        self._skew = timedelta(seconds=skew_s)
        self._clock = clock
        self._channels: dict[tuple[int, str], _Channel] = {}
        self._tape: dict[str, datetime] = {}
        """Each pair's newest trade on the tape (exchange time)."""
        self.checks = 0
        """How many times `silent()` was asked."""

    def subscribed(self, connection: int, pair: str, at: datetime) -> None:
        """`connection` (re)subscribed `pair` at `at` (our clock)."""
        key = (connection, pair)
        resubscribed = key in self._channels and self._channels[key].resubscribed
        self._channels[key] = _Channel(at + self._skew, self._clock(), resubscribed)

    def heard(self, connection: int, pair: str, ts: datetime) -> None:
        """`connection` delivered an event of `pair` dated `ts` (the exchange's clock)."""
        channel = self._channels.get((connection, pair))
        if channel is None:
            return
        channel.heard_at = self._clock()
        channel.resubscribed = False
        if ts > channel.mark:
            channel.mark = ts

    def forget(self, connection: int, pairs: list[str] | None = None) -> None:
        """`connection` went down (or stopped following `pairs`)."""
        for key in [k for k in self._channels if k[0] == connection]:
            if pairs is None or key[1] in pairs:
                del self._channels[key]

    def tape(self, pair: str, newest_ts: datetime) -> None:
        """The trade tape of `pair` has a trade dated `newest_ts`."""
        known = self._tape.get(pair)
        if known is None or newest_ts > known:
            self._tape[pair] = newest_ts

    def silent(self, at: datetime) -> list[Silent]:
        """The channels silent at `at` (our clock), each with what to do: resubscribe first,
        then reconnect.

        Asking counts as acting: a channel reported for resubscription is measured again as if
        subscribed at `at`, and reported again (for a reconnect) only if the tape shows a
        trade after that which it does not deliver either."""
        self.checks += 1
        now = self._clock()
        found: list[Silent] = []
        for (connection, pair), channel in self._channels.items():
            tape = self._tape.get(pair)
            if tape is None or tape <= channel.mark or now - channel.heard_at < self.silence_s:
                continue
            action: Action = "reconnect" if channel.resubscribed else "resubscribe"
            found.append(Silent(connection, pair, action, (tape - channel.mark).total_seconds()))
            channel.heard_at = now
            channel.mark = max(channel.mark, at + self._skew)
            channel.resubscribed = True
        return found

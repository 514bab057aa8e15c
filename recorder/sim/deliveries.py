"""Which socket.io connection was sent what: the exact record a chaos run checks against.

socket.io has no replay, so "every event delivered while connected is stored" can only be
checked against a list of what each connection was actually sent. With
`SimSettings(record_deliveries=True)` the simulator keeps one `Connection` per accepted
socket.io client, holding, in the order they were handed to socket.io, the book events of
the channels it had subscribed and the garbage (malformed or unknown events) it was sent.
Events emitted while no connection had subscribed their channel are counted apart, with when
they were emitted, and grouped into gaps (runs of consecutive events that no connection was
sent): only a snapshot can cover them.

It also notes each connection's subscribe requests and the channels the simulator silenced
on it (`Simulator.silence`), so that a test can tell what the client asked for from what it
was sent.

Off by default: it holds a reference to every emitted event for the simulator's lifetime.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from recorder.sim.engine import Event


@dataclass(frozen=True, slots=True)
class Garbage:
    """A payload sent on purpose to be refused: `event` is its socket.io event name."""

    event: str


Item = Event | Garbage


@dataclass
class Gap:
    """A run of consecutive book events, in the order emitted, that no connection was sent."""

    started_at: float
    """Unix seconds: when its first event was emitted."""
    ended_at: float
    """When its last event was emitted."""
    events: int


@dataclass
class Connection:
    sid: str
    connected_at: float
    """Unix seconds."""
    disconnected_at: float | None = None
    items: list[Item] = field(default_factory=list)
    subscriptions: list[tuple[float, str]] = field(default_factory=list)
    """(unix seconds, channel) of every subscribe request it made, followed or not."""
    silenced: list[tuple[float, str]] = field(default_factory=list)
    """(unix seconds, channel): from then on that channel was not sent to it, until it
    subscribed again (unless the silence ignored that)."""

    @property
    def events(self) -> list[Event]:
        return [item for item in self.items if not isinstance(item, Garbage)]

    @property
    def garbage(self) -> int:
        return sum(1 for item in self.items if isinstance(item, Garbage))


class DeliveryLog:
    def __init__(self) -> None:
        self.connections: dict[str, Connection] = {}
        self.undelivered: list[Event] = []
        """Emitted while no connection had subscribed the event's channel."""
        self.undelivered_at: list[float] = []
        """When each of `undelivered` was emitted (unix seconds), in the same order."""
        self.gaps: list[Gap] = []
        """`undelivered` as runs: a gap ends when an event is sent to some connection."""
        self._in_gap = False

    def connected(self, sid: str) -> None:
        self.connections[sid] = Connection(sid, time.time())

    def disconnected(self, sid: str) -> None:
        connection = self.connections.get(sid)
        if connection is not None and connection.disconnected_at is None:
            connection.disconnected_at = time.time()

    def sent(self, item: Item, sids: Iterable[str]) -> None:
        """`item` was handed to socket.io for each of `sids` (possibly none)."""
        recipients = [c for c in map(self.connections.get, sids) if c and c.disconnected_at is None]
        for connection in recipients:
            connection.items.append(item)
        if isinstance(item, Garbage):
            return
        if recipients:
            self._in_gap = False
            return
        now = time.time()
        self.undelivered.append(item)
        self.undelivered_at.append(now)
        if self._in_gap:
            self.gaps[-1].ended_at = now
            self.gaps[-1].events += 1
        else:
            self.gaps.append(Gap(now, now, 1))
            self._in_gap = True

    def subscribed(self, sid: str, channel: str) -> None:
        connection = self.connections.get(sid)
        if connection is not None:
            connection.subscriptions.append((time.time(), channel))

    def silenced(self, sid: str, channel: str) -> None:
        connection = self.connections.get(sid)
        if connection is not None:
            connection.silenced.append((time.time(), channel))

    def open(self) -> list[Connection]:
        """The connections not (yet) disconnected, oldest first."""
        return [c for c in self.connections.values() if c.disconnected_at is None]

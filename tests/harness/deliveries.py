"""What the simulator delivered to each connection, against what the recorder stored.

socket.io has no replay: an event is recorded only if it reached a connection of the
recorder's. With `SimSettings(record_deliveries=True)` the simulator keeps, per accepted
connection, every event it handed to socket.io for it (recorder/sim/deliveries.py); each
connection the recorder had is one stream session in the database. A recorder may hold
several connections at once, each sent the same events, and stores each event once, under
the session of whichever connection delivered it first (`docs/reliability.md`). So a
recording is exact when:

- every event sent to a connection is stored, once, with the values sent, under the session
  of one of the connections it was sent to;
- nothing else is stored: no event that no connection was sent, none under a session that
  was not sent it, none under a session that is not stored;
- the fills are those of the events, and each malformed payload is kept once, however many
  connections it was sent to (the stream keeps one copy of the same text, as of an event).

Comparing counts instead would let a lost event hide behind an extra one. A recorder process
that is SIGKILLed loses what it received and did not commit; `judge` says what it may have
lost, from what it did commit (`SentTo.killed`).

Which connection a stored session recorded is not written down by either side, so
`match_sessions` works it out: the connection was accepted before the session began, by the
same recorder process, and was sent every event stored under the session.

The expected rows are worked out here from the simulator's events, independently of the
recorder's parsers: ids as the wire carried them (under the simulator's reading of which id
a cancel names), times to the microsecond, prices and amounts as the exact Decimals sent.
"""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from recorder.book import Reading
from recorder.sim import wire
from recorder.sim.deliveries import Connection, Garbage, Item
from recorder.sim.engine import Cancel, Event, NewOrder
from recorder.sim.server import Simulator
from tests.harness.postgres import query

EventKey = tuple[str, int, str]
"""(pair, oid, kind): book_events' primary key."""
FillKey = tuple[str, int]
"""(pair, tid): book_fills' primary key."""

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def utc(seconds: Decimal) -> datetime:
    """Unix seconds as the database returns them, exact to the microsecond."""
    micros = seconds * 10**6
    assert micros == int(micros), seconds  # the simulator's times have six places at most
    return EPOCH + timedelta(microseconds=int(micros))


def event_key(event: Event, cancel_id: Reading = "oid") -> EventKey:
    """The key of the row an event must be stored as: its ids as the wire carried them."""
    if isinstance(event, Cancel):
        return (event.pair, wire.cancel_ids(event, cancel_id)[0], "cancel")
    return (event.pair, event.oid, "new")


def event_value(event: Event, cancel_id: Reading = "oid") -> tuple[Any, ...]:
    """(ts, type, price, amount, cancel_order_id) of the row an event must be stored as."""
    named = wire.cancel_ids(event, cancel_id)[1] if isinstance(event, Cancel) else None
    return (utc(event.date), event.type, event.price, event.amount, named)


def event_rows(events: Iterable[Event], cancel_id: Reading = "oid") -> dict[EventKey, Any]:
    """The book_events rows `events` must give: key -> the values sent."""
    return {event_key(e, cancel_id): event_value(e, cancel_id) for e in events}


def fills_of(event: Event) -> dict[FillKey, tuple[Any, ...]]:
    """The book_fills rows a new order's trades must give: (pair, tid) -> the values sent."""
    if not isinstance(event, NewOrder):
        return {}
    return {(t.pair, t.tid): (t.oid, t.o_id, t.type, t.price, t.amount) for t in event.trades}


def fill_rows(events: Iterable[Event]) -> dict[FillKey, tuple[Any, ...]]:
    return {key: value for e in events for key, value in fills_of(e).items()}


def stored_event_sessions(dsn: str) -> dict[EventKey, Any]:
    """Each stored book event's key -> the session it is stored under."""
    rows = query(dsn, "SELECT pair, oid, kind, session_id FROM book_events")
    return {(pair, oid, kind): session_id for pair, oid, kind, session_id in rows}


def stored_event_rows(dsn: str) -> dict[EventKey, tuple[Any, ...]]:
    """The book_events rows, as `event_rows` spells them."""
    rows = query(dsn, "SELECT pair, oid, kind, ts, type, price, amount, cancel_order_id "
                 "FROM book_events")  # fmt: skip
    return {(pair, oid, kind): tuple(values) for pair, oid, kind, *values in rows}


def stored_fill_rows(dsn: str) -> dict[FillKey, tuple[Any, ...]]:
    rows = query(dsn, "SELECT pair, tid, oid, o_id, type, price, amount FROM book_fills")
    return {(pair, tid): tuple(rest) for pair, tid, *rest in rows}


@dataclass(frozen=True)
class SessionRow:
    """A stored stream session: one connection of a recorder, as the recorder saw it."""

    session_id: Any
    connected_at: datetime
    disconnected_at: datetime | None = None
    run_id: Any = None
    connection: int | None = None


SESSIONS_SQL = (
    "SELECT session_id, connected_at, disconnected_at, run_id, connection FROM stream_sessions"
)


def stored_sessions(dsn: str) -> list[SessionRow]:
    return [SessionRow(*row) for row in query(dsn, SESSIONS_SQL)]


# --- which connection each session recorded -------------------------------------------------


@dataclass
class SentTo:
    """One simulator connection as the comparison sees it: what it was sent, in order, and
    which recorder process held it (`process`, counted from 0, see `process_of`)."""

    sid: str
    items: list[Item]
    connected_at: float = 0.0
    """Unix seconds, when the simulator accepted it."""
    disconnected_at: float | None = None
    process: int = 0
    killed: bool = False
    """Its process was SIGKILLed while it was open (or just after it ended): what it
    received last may not have been committed."""

    @classmethod
    def of(cls, connection: Connection, process: int = 0, killed: bool = False) -> SentTo:
        return cls(connection.sid, list(connection.items), connection.connected_at,
                   connection.disconnected_at, process, killed)  # fmt: skip

    def events(self) -> list[Event]:
        return [item for item in self.items if not isinstance(item, Garbage)]


def process_of(unix_s: float, process_starts: Sequence[float]) -> int:
    """Which recorder process was the latest started at `unix_s` (0 without starts: one
    process throughout). A connection the simulator accepted after a process was killed and
    before the next started is the killed one's (a connect already on its way)."""
    return max(0, bisect.bisect_right(process_starts, unix_s) - 1)


CONNECT_SLACK_S = 0.001
"""How far the recorder's clock may read a session's start before the simulator's reads the
accept that preceded it: both read the same clock, but a session's time is rounded to the
microsecond."""
LATE_OPEN_S = 5.0
"""How long after the simulator ended a connection the recorder may still open its session:
a connect answered just before a drop is read by the recorder after it."""


def match_sessions(
    sessions: Sequence[SessionRow],
    connections: Sequence[SentTo],
    stored_under: Mapping[Any, set[EventKey]],
    *,
    cancel_id: Reading = "oid",
    process_starts: Sequence[float] = (),
) -> dict[Any, str | None]:
    """session_id -> the sid of the connection it recorded (None: none fits).

    A session's connection was accepted by the simulator before the session began (the
    recorder opens its session once the connect is answered), by the same recorder process,
    had not been ended long before, and was sent every event stored under the session. A
    recorder's redundant connections overlap, so times alone cannot tell two sessions
    opened together apart; the events stored under each can, and where neither can (a
    session that stored nothing) either answer gives the same verdict. Each connection
    recorded at most one session: a perfect matching is searched (augmenting paths), the
    connection accepted last before the session tried first. A session that fits no
    connection by its events is then matched by time alone, so that the comparison can say
    which of its events its connection was not sent.
    """
    sent_keys = {c.sid: {event_key(e, cancel_id) for e in c.events()} for c in connections}

    def by_time(session: SessionRow) -> list[SentTo]:
        begun = session.connected_at.timestamp()
        process = process_of(begun, process_starts)
        fits = [
            c
            for c in connections
            if c.process == process
            and c.connected_at <= begun + CONNECT_SLACK_S
            and (c.disconnected_at is None or c.disconnected_at >= begun - LATE_OPEN_S)
        ]
        return sorted(fits, key=lambda c: -c.connected_at)

    ordered = sorted(sessions, key=lambda s: s.connected_at)
    candidates = {
        s.session_id: [
            c.sid for c in by_time(s) if stored_under.get(s.session_id, set()) <= sent_keys[c.sid]
        ]
        for s in ordered
    }
    holder: dict[str, Any] = {}
    """sid -> the session matched to it so far."""

    def place(session_id: Any, tried: set[str]) -> bool:
        for sid in candidates[session_id]:
            if sid in tried:
                continue
            tried.add(sid)
            if sid not in holder or place(holder[sid], tried):
                holder[sid] = session_id
                return True
        return False

    for session in ordered:
        place(session.session_id, set())
    matched: dict[Any, str | None] = {session_id: sid for sid, session_id in holder.items()}
    for session in ordered:
        if session.session_id not in matched:
            free = [c.sid for c in by_time(session) if c.sid not in holder]
            matched[session.session_id] = free[0] if free else None
            if free:
                holder[free[0]] = session.session_id
    return matched


# --- the verdict ------------------------------------------------------------------------------


@dataclass
class ConnectionCheck:
    """One connection's part of the verdict."""

    sid: str
    session_id: Any
    """The stored session that recorded it; None if none did (a process killed before it
    committed the session, or a connection the recorder never used)."""
    process: int
    killed: bool
    sent: int
    """Book events sent to it."""
    stored_here: int
    """Events stored under its session (the others it was sent came first on another)."""
    not_sent_here: int
    """Events stored under its session that it was not sent: wrongly attributed."""
    after_last_commit: int = 0
    """Of a killed process: events sent to it after the last one stored under its session."""

    @property
    def ok(self) -> bool:
        return self.not_sent_here == 0


@dataclass
class Judged:
    """What the database must hold, given what the simulator sent and what was stored."""

    events: dict[EventKey, tuple[Any, ...]] = field(default_factory=dict)
    """Must be stored, with these values."""
    fills: dict[FillKey, tuple[Any, ...]] = field(default_factory=dict)
    garbage: Counter[str] = field(default_factory=Counter)
    """Garbage sent to connections, by event name, that must be kept."""
    may_miss_events: dict[EventKey, tuple[Any, ...]] = field(default_factory=dict)
    """Sent only to connections of SIGKILLed processes, after what their sessions stored
    last: stored or lost to the kill."""
    may_miss_fills: dict[FillKey, tuple[Any, ...]] = field(default_factory=dict)
    may_miss_garbage: Counter[str] = field(default_factory=Counter)
    connections: list[ConnectionCheck] = field(default_factory=list)
    unmatched_sessions: list[Any] = field(default_factory=list)
    """Stored sessions that no connection fits: a session the simulator never accepted."""
    under_unknown_session: int = 0
    """Events stored under a session_id that is not in stream_sessions."""
    lost_to_kill_by_process: dict[int, int] = field(default_factory=dict)
    """Per SIGKILLed process: events it may have missed that are not stored."""

    @property
    def misattributed(self) -> int:
        return sum(c.not_sent_here for c in self.connections)

    @property
    def sessions_ok(self) -> bool:
        """Every session and every event's session is accounted for."""
        return not (self.unmatched_sessions or self.under_unknown_session or self.misattributed)


def judge(
    connections: Sequence[SentTo],
    sessions: Sequence[SessionRow],
    stored_sessions_of: Mapping[EventKey, Any],
    *,
    cancel_id: Reading = "oid",
    process_starts: Sequence[float] = (),
) -> Judged:
    """Split what the connections were sent into what must be stored and what a SIGKILL may
    have taken, and check under which session each stored event is.

    A connection of a process that was not killed: everything it was sent must be stored
    (under some session of a connection it was sent to). Of a killed process: everything it
    was sent before the last event stored under its session. Its events arrive in the order
    sent and the writer commits in the order first received, so an event that came before a
    committed one on the same connection was received (on this connection or sooner on
    another) before it, and committed too. What comes after may have died with the process:
    "lost to SIGKILL", if no connection of a live process was sent it either.
    """
    stored_under: dict[Any, set[EventKey]] = {}
    for key, session_id in stored_sessions_of.items():
        stored_under.setdefault(session_id, set()).add(key)
    matched = match_sessions(sessions, connections, stored_under, cancel_id=cancel_id,
                             process_starts=process_starts)  # fmt: skip
    session_of = {sid: session_id for session_id, sid in matched.items() if sid is not None}
    judged = Judged(unmatched_sessions=[s for s, sid in matched.items() if sid is None])
    judged.under_unknown_session = sum(
        len(keys) for session_id, keys in stored_under.items() if session_id not in matched
    )
    killed_processes: dict[EventKey, int] = {}
    # A garbage payload is one object however many connections it was sent to; the stream
    # keeps one copy, like an event's.
    must_garbage: dict[int, Garbage] = {}
    may_miss_garbage: dict[int, Garbage] = {}
    for connection in connections:
        session_id = session_of.get(connection.sid)
        here = stored_under.get(session_id, set()) if session_id is not None else set()
        keys = [
            None if isinstance(x, Garbage) else event_key(x, cancel_id) for x in connection.items
        ]
        end = len(keys)
        if connection.killed:
            end = max((i + 1 for i, key in enumerate(keys) if key in here), default=0)
        sent = {key for key in keys if key is not None}
        judged.connections.append(ConnectionCheck(
            connection.sid, session_id, connection.process, connection.killed,
            sent=len(sent), stored_here=len(here), not_sent_here=len(here - sent),
            after_last_commit=sum(1 for key in keys[end:] if key is not None),
        ))  # fmt: skip
        for i, item in enumerate(connection.items):
            must = i < end
            if isinstance(item, Garbage):
                (must_garbage if must else may_miss_garbage)[id(item)] = item
                continue
            key = event_key(item, cancel_id)
            events, fills = (judged.events, judged.fills) if must else (
                judged.may_miss_events, judged.may_miss_fills)  # fmt: skip
            events[key] = event_value(item, cancel_id)
            fills.update(fills_of(item))
            if not must:
                killed_processes.setdefault(key, connection.process)
    judged.garbage.update(g.event for g in must_garbage.values())
    judged.may_miss_garbage.update(
        g.event for ident, g in may_miss_garbage.items() if ident not in must_garbage
    )
    for key in judged.events:
        judged.may_miss_events.pop(key, None)
    for fill in judged.fills:
        judged.may_miss_fills.pop(fill, None)
    for key, process in killed_processes.items():
        if key in judged.may_miss_events and key not in stored_sessions_of:
            judged.lost_to_kill_by_process[process] = (
                judged.lost_to_kill_by_process.get(process, 0) + 1
            )
    return judged


# --- the assertion the daemon's tests make ----------------------------------------------------


@dataclass(frozen=True)
class Compared:
    """What `assert_stored_as_delivered` compared."""

    sessions: int
    connections: int
    events: int
    """Distinct events sent to the recorder's connections, each found stored exactly."""
    fills: int
    garbage: int
    """Malformed and unknown payloads sent to the recorder's connections, each kept raw."""
    checks: list[ConnectionCheck]
    """Per connection: what it was sent, what is stored under its session."""


def _difference(sent: dict[Any, Any], stored: dict[Any, Any]) -> str:
    lost = [key for key in sent if key not in stored]
    extra = [key for key in stored if key not in sent]
    differ = [key for key in sent if key in stored and sent[key] != stored[key]]
    first = (lost + extra + differ)[:3]
    return (
        f"{len(sent)} sent, {len(stored)} stored: {len(lost)} lost, {len(extra)} never sent, "
        f"{len(differ)} with other values; first: "
        + "; ".join(f"{key}: sent {sent.get(key)}, stored {stored.get(key)}" for key in first)
    )


def assert_stored_as_delivered(dsn: str, sim: Simulator) -> Compared:
    """Every event the simulator delivered to any connection (all of them the in-process
    recorder's, none killed) is stored once, exactly, under the session of one of the
    connections it was sent to; nothing else is stored (no event under no session or under
    a session that was not sent it, none that was never sent); the fills are exactly those
    of the events sent; every malformed or unknown payload sent to each connection is kept
    in raw_messages under its socket.io event name, and no other socket input is."""
    assert sim.deliveries is not None, "the simulator must run with record_deliveries=True"
    cancel_id = sim.settings.cancel_id
    connections = [SentTo.of(c) for c in sim.deliveries.connections.values()]
    sessions = stored_sessions(dsn)
    judged = judge(connections, sessions, stored_event_sessions(dsn), cancel_id=cancel_id)
    assert not judged.unmatched_sessions, (
        f"stream sessions that no connection of the simulator fits: {judged.unmatched_sessions}"
    )
    assert not judged.under_unknown_session, (
        f"{judged.under_unknown_session} events stored under sessions never stored"
    )
    wrong = [c for c in judged.connections if not c.ok]
    assert not wrong, f"events stored under a session whose connection was not sent them: {wrong}"
    stored = stored_event_rows(dsn)
    assert stored == judged.events, f"book_events: {_difference(judged.events, stored)}"
    stored_fills = stored_fill_rows(dsn)
    assert stored_fills == judged.fills, f"book_fills: {_difference(judged.fills, stored_fills)}"
    kept_raw = Counter(
        event for (event,) in query(dsn, "SELECT event FROM raw_messages WHERE source = 'socket'")
    )
    assert kept_raw == judged.garbage, (
        f"raw socket messages: sent {judged.garbage}, kept {kept_raw}"
    )
    return Compared(
        sessions=len(sessions),
        connections=len(connections),
        events=len(judged.events),
        fills=len(judged.fills),
        garbage=sum(judged.garbage.values()),
        checks=judged.connections,
    )


def delivered_events(sim: Simulator) -> int:
    """How many copies of book events the simulator has handed to socket.io, one per
    connection it was sent to (an event sent to two connections counts twice)."""
    assert sim.deliveries is not None, "the simulator must run with record_deliveries=True"
    return sum(len(c.events) for c in sim.deliveries.connections.values())


def delivered_keys(sim: Simulator) -> set[EventKey]:
    """The keys of the book events the simulator has sent to at least one connection."""
    assert sim.deliveries is not None, "the simulator must run with record_deliveries=True"
    cancel_id = sim.settings.cancel_id
    return {event_key(e, cancel_id) for c in sim.deliveries.connections.values() for e in c.events}


def every_delivered_event_stored(dsn: str, sim: Simulator) -> bool:
    """Whether every event sent to a connection is in book_events (whatever its values or
    session): what to wait for before stopping a recorder whose every delivery counts,
    however many connections it holds and whatever its metrics count."""
    stored = {tuple(row) for row in query(dsn, "SELECT pair, oid, kind FROM book_events")}
    return delivered_keys(sim) <= stored

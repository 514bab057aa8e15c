"""What the simulator delivered to each connection, against what the recorder stored.

socket.io has no replay: an event is recorded only if it reached a connection of the
recorder's. With `SimSettings(record_deliveries=True)` the simulator keeps, per accepted
connection, every event it handed to socket.io for it (recorder/sim/deliveries.py); each
connection the recorder had is one stream session in the database. So a recording is exact
when every session holds the events its connection was sent, with the values sent, and
nothing else; comparing counts instead would let a lost event hide behind an extra one.

The expected rows are worked out here from the simulator's events, independently of the
recorder's parsers: ids as the wire carried them (under the simulator's reading of which id
a cancel names), times to the microsecond, prices and amounts as the exact Decimals sent.
"""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from recorder.book import Reading
from recorder.sim import wire
from recorder.sim.deliveries import Connection, Garbage
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


def stored_event_rows(dsn: str) -> dict[Any, dict[EventKey, tuple[Any, ...]]]:
    """session_id -> the book_events rows stored under it, as `event_rows` spells them."""
    rows = query(dsn, "SELECT session_id, pair, oid, kind, ts, type, price, amount, "
                 "cancel_order_id FROM book_events")  # fmt: skip
    by_session: dict[Any, dict[EventKey, tuple[Any, ...]]] = {}
    for session_id, pair, oid, kind, *values in rows:
        by_session.setdefault(session_id, {})[(pair, oid, kind)] = tuple(values)
    return by_session


def stored_fill_rows(dsn: str) -> dict[FillKey, tuple[Any, ...]]:
    rows = query(dsn, "SELECT pair, tid, oid, o_id, type, price, amount FROM book_fills")
    return {(pair, tid): tuple(rest) for pair, tid, *rest in rows}


def connections_of_sessions(
    connections: list[Connection], sessions: list[tuple[Any, datetime]]
) -> dict[Any, Connection]:
    """session_id -> the simulator's connection it recorded.

    The simulator notes a connection when it accepts it, the stream opens its session only
    once the connect is answered, and it connects again only after that session ended: so
    a session's connection is the last one accepted at or before the session began.
    """
    ordered = sorted(connections, key=lambda c: c.connected_at)
    starts = [c.connected_at for c in ordered]
    matched: dict[Any, Connection] = {}
    for session_id, connected_at in sessions:
        index = bisect.bisect_right(starts, connected_at.timestamp()) - 1
        assert index >= 0, f"session {session_id} began before any connection was accepted"
        matched[session_id] = ordered[index]
    sids = [c.sid for c in matched.values()]
    assert len(sids) == len(set(sids)), "two stream sessions on one connection"
    return matched


@dataclass(frozen=True)
class Compared:
    """What `assert_stored_as_delivered` compared."""

    sessions: int
    connections: int
    events: int
    """Events sent to recorded connections, each found stored exactly."""
    fills: int
    garbage: int
    """Malformed and unknown payloads sent to recorded connections, each kept raw."""


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
    """Every event the simulator delivered to a connection whose stream session the
    recorder stored is stored under that session, exactly; nothing else is stored (no
    event under no session, none that was never sent); the fills are exactly those of the
    events sent to those connections; every malformed or unknown payload sent to them is
    kept in raw_messages under its socket.io event name, and no other socket input is."""
    assert sim.deliveries is not None, "the simulator must run with record_deliveries=True"
    cancel_id = sim.settings.cancel_id
    sessions = [
        (session_id, connected_at)
        for session_id, connected_at in query(
            dsn, "SELECT session_id, connected_at FROM stream_sessions ORDER BY connected_at"
        )
    ]
    matched = connections_of_sessions(list(sim.deliveries.connections.values()), sessions)
    stored = stored_event_rows(dsn)
    orphans = set(stored) - set(matched)
    assert not orphans, f"events stored under sessions never stored: {orphans}"
    events = 0
    for session_id, connection in matched.items():
        sent = event_rows(connection.events, cancel_id)
        kept = stored.get(session_id, {})
        assert kept == sent, (
            f"session {session_id} (connection {connection.sid}): {_difference(sent, kept)}"
        )
        events += len(sent)
    sent_fills = fill_rows(e for c in matched.values() for e in c.events)
    stored_fills = stored_fill_rows(dsn)
    assert stored_fills == sent_fills, f"book_fills: {_difference(sent_fills, stored_fills)}"
    sent_garbage = Counter(
        item.event for c in matched.values() for item in c.items if isinstance(item, Garbage)
    )
    kept_raw = Counter(
        event for (event,) in query(dsn, "SELECT event FROM raw_messages WHERE source = 'socket'")
    )
    assert kept_raw == sent_garbage, f"raw socket messages: sent {sent_garbage}, kept {kept_raw}"
    return Compared(
        sessions=len(sessions),
        connections=len(sim.deliveries.connections),
        events=events,
        fills=len(sent_fills),
        garbage=sum(sent_garbage.values()),
    )


def delivered_events(sim: Simulator) -> int:
    """How many book events the simulator has handed to socket.io for any connection."""
    assert sim.deliveries is not None, "the simulator must run with record_deliveries=True"
    return sum(len(c.events) for c in sim.deliveries.connections.values())

"""The daemon resumes after every kind of interruption, with nothing lost or duplicated.

Each test runs the daemon in-process against the simulator (real sockets) and a real
PostgreSQL, injects one kind of fault, and checks afterwards, exactly: the trade tape is
stored once and as the engine made it; every book event the simulator delivered to any of
the recorder's connections is stored once, with the values sent, under the stream session
of a connection it was sent to, their fills too, and nothing that was never sent
(`assert_stored_as_delivered`); the book rebuilt by book_at is the engine's.

The recorder holds `exchange.stream_connections` connections at once; the expectations
(sessions per connection) are counted from that, so the tests hold for one
connection as for several.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from recorder.daemon import Daemon
from recorder.sim.server import Simulator
from tests.harness.daemon import (
    PAIRS,
    assert_book_at_now_is_the_engines,
    daemon_config,
    engine_tape,
    resynced_since,
    sessions,
    simulated_exchange,
    start_daemon,
    stop_daemon,
    stored_tape,
)
from tests.harness.deliveries import (
    Compared,
    assert_stored_as_delivered,
    delivered_keys,
    event_key,
    every_delivered_event_stored,
)
from tests.harness.postgres import EmbeddedPostgres, count_rows, query
from tests.harness.waiting import eventually

OUTAGE_S = 30.0
STORM_FAULTS = 5
"""Answers of each faulty kind (429, 5xx, truncated) the REST storm lasts for."""
EVENTS_AFTER_BURST = 100
"""Book events delivered after the malformed ones (enough that a loss of a few shows)."""
EVENTS_WHILE_DB_DOWN = 300
"""Book events the simulator delivers while the database is down (some ten seconds)."""
EVENTS_AFTER_DROP = 100
"""Book events delivered after a connection was dropped and replaced."""


@pytest.fixture
async def sim(dialect: str) -> AsyncIterator[Simulator]:
    """The simulated exchange, under each reading of what the docs leave open."""
    async with simulated_exchange(dialect, seed=11, rate_per_s=30, history_hours=0.25) as simulator:
        yield simulator


class Recording:
    """The daemon recording the simulator, from `await Recording.start(...)` to `finish()`."""

    def __init__(self, daemon: Daemon, sim: Simulator, dsn: str) -> None:
        self.daemon, self.sim, self.dsn = daemon, sim, dsn
        self.connections = daemon.config.exchange.stream_connections
        self.running: asyncio.Task[int] | None = None

    @classmethod
    async def start(cls, sim: Simulator, dsn: str, tmp_path: Path) -> Recording:
        recording = cls(Daemon(daemon_config(tmp_path, sim, dsn)), sim, dsn)
        recording.running = await start_daemon(recording.daemon)
        await eventually(recording.fully_subscribed, what="every connection subscribed")
        await eventually(lambda: sessions(dsn) == recording.connections, what="their sessions")
        return recording

    def fully_subscribed(self) -> bool:
        """Each of the recorder's connections is subscribed to every pair."""
        return all(len(self.sim.subscribers(f"book_{pair}")) == self.connections for pair in PAIRS)

    async def finish(self) -> Compared:
        """Quiet the exchange; once the whole tape is stored and every event sent to a
        connection is stored too, stop the recorder (which commits what it holds); then
        compare the database exactly with what the simulator made and sent."""
        sim, dsn = self.sim, self.dsn
        sim.pause()
        await sim.drained()
        total = len(sim.engine.trades)
        await eventually(lambda: count_rows(dsn, "trades") == total, timeout_s=90,
                         what="every trade of the tape")  # fmt: skip
        # If it never holds, the comparison after the stop says what is missing.
        with suppress(AssertionError):
            await eventually(lambda: every_delivered_event_stored(dsn, sim), timeout_s=60,
                             what="every event sent stored")  # fmt: skip
        assert self.running is not None
        await stop_daemon(self.daemon, self.running)
        return check_recording(sim, dsn)


def check_recording(sim: Simulator, dsn: str) -> Compared:
    """The tape, every event sent and the book at the end, exactly."""
    assert stored_tape(dsn) == engine_tape(sim)
    compared = assert_stored_as_delivered(dsn, sim)
    # No event after the last snapshot is missing: the book rebuilt from them is the
    # exchange's own, order by order.
    assert_book_at_now_is_the_engines(dsn, sim, PAIRS)
    return compared


def first_connected_since(dsn: str, since: datetime) -> Any:
    return query(dsn, "SELECT min(connected_at) FROM stream_sessions WHERE connected_at > %s",
                 since)[0][0]  # fmt: skip


async def test_exchange_outage_then_rest_storms(sim: Simulator, db: str, tmp_path: Path) -> None:
    recording = await Recording.start(sim, db, tmp_path)
    n = recording.connections
    outage_from = datetime.now(UTC)
    sim.start_outage(OUTAGE_S)  # REST 502, sockets dropped and refused
    await eventually(lambda: sessions(db) == 2 * n, timeout_s=OUTAGE_S + 60,
                     what="the stream back")  # fmt: skip
    back = first_connected_since(db, outage_from)
    await eventually(lambda: resynced_since(db, back) == len(PAIRS),
                     what="resync snapshots after the outage")  # fmt: skip

    storm = {"rate_429": 0.2, "rate_5xx": 0.2, "rate_truncated": 0.1}
    before = Counter(sim.faults.served)
    sim.faults.update(storm)
    kinds = ("429", "5xx", "truncated")
    await eventually(lambda: all(sim.faults.served[k] >= before[k] + STORM_FAULTS for k in kinds),
                     what=f"{STORM_FAULTS} REST answers of each faulty kind")  # fmt: skip
    sim.faults.update(dict.fromkeys(storm, 0))
    compared = await recording.finish()
    assert compared.sessions == compared.connections == 2 * n
    assert compared.events > 0
    # Truncated answers were kept verbatim, with the reason.
    kept = query(db, "SELECT event, payload, error FROM raw_messages WHERE source = 'rest'")
    assert 0 < len(kept) <= sim.faults.served["truncated"]
    assert all(payload and error for _, payload, error in kept)


async def test_malformed_socket_events_are_kept_and_recording_goes_on(
    sim: Simulator, db: str, tmp_path: Path
) -> None:
    recording = await Recording.start(sim, db, tmp_path)
    await sim.burst(malformed=5, unknown=3)
    raw_socket = "SELECT count(*) FROM raw_messages WHERE source = 'socket'"
    await eventually(lambda: query(db, raw_socket)[0][0] >= 5 * len(PAIRS),
                     what="the malformed events kept")  # fmt: skip
    before = len(delivered_keys(sim))
    await eventually(lambda: len(delivered_keys(sim)) > before + EVENTS_AFTER_BURST,
                     what="events after the burst")  # fmt: skip
    compared = await recording.finish()
    # Bad input did not cost a reconnect; every bad payload sent is kept, by its event name,
    # once however many connections it was sent to.
    n = recording.connections
    assert compared.sessions == compared.connections == n
    assert compared.garbage == 5 * len(PAIRS) + 3


async def test_database_down_for_a_while_loses_nothing(
    sim: Simulator, own_pg: EmbeddedPostgres, tmp_path: Path
) -> None:
    recording = await Recording.start(sim, own_pg.dsn, tmp_path)
    await asyncio.to_thread(own_pg.crash)
    before = len(delivered_keys(sim))
    await eventually(lambda: len(delivered_keys(sim)) >= before + EVENTS_WHILE_DB_DOWN,
                     what="events delivered while the database is down")  # fmt: skip
    writer = recording.daemon.writer
    assert writer is not None
    assert writer.buffered_rows > 0
    await asyncio.to_thread(own_pg.restart)
    compared = await recording.finish()
    # One session per connection throughout; every event delivered, those of the outage
    # included, stored.
    assert compared.sessions == compared.connections == recording.connections
    assert compared.events >= before + EVENTS_WHILE_DB_DOWN


async def test_a_dropped_connection_loses_nothing_it_was_sent(
    sim: Simulator, db: str, tmp_path: Path
) -> None:
    """The exchange drops one of the recorder's connections, the oldest; the recorder opens
    another. What each connection was sent is compared with what is stored, event by event:
    every event sent before the drop, to the dropped connection or another, and after it."""
    assert sim.deliveries is not None
    recording = await Recording.start(sim, db, tmp_path)
    n = recording.connections
    uncovered = len(sim.deliveries.undelivered)
    dropped = sim.oldest_socket()
    assert dropped is not None
    # Subscribed is not yet sent to: the connection dropped must have been sent something.
    deliveries = sim.deliveries
    await eventually(lambda: deliveries.connections[dropped].events,
                     what="an event sent to the connection to be dropped")  # fmt: skip
    assert await sim.drop_socket(dropped)
    await eventually(lambda: sessions(db) == n + 1 and recording.fully_subscribed(),
                     what="the dropped connection replaced")  # fmt: skip
    before = len(delivered_keys(sim))
    await eventually(lambda: len(delivered_keys(sim)) > before + EVENTS_AFTER_DROP,
                     what="events after the drop")  # fmt: skip
    if n > 1:  # the other connections were subscribed throughout: nothing went uncovered
        assert len(sim.deliveries.undelivered) == uncovered
    compared = await recording.finish()
    assert compared.sessions == compared.connections == n + 1
    checks = {check.sid: check for check in compared.checks}
    assert checks[dropped].sent > 0
    assert all(check.session_id is not None for check in checks.values())

    # The comparison notices an event moved under the dropped connection's session (sent
    # only after the drop, so never to it), and an event missing.
    last = list(sim.deliveries.connections.values())[-1].events[-1]  # the newest's last
    key = event_key(last, sim.settings.cancel_id)
    move = ("UPDATE book_events SET session_id = %s WHERE (pair, oid, kind) = (%s, %s, %s) "
            "RETURNING session_id")  # fmt: skip
    ((kept_under,),) = query(db, "SELECT session_id FROM book_events "
                             "WHERE (pair, oid, kind) = (%s, %s, %s)", *key)  # fmt: skip
    assert query(db, move, checks[dropped].session_id, *key)
    with pytest.raises(AssertionError, match="session"):
        assert_stored_as_delivered(db, sim)
    assert query(db, move, kept_under, *key)
    assert_stored_as_delivered(db, sim)
    assert query(db, "DELETE FROM book_events WHERE (pair, oid, kind) = (%s, %s, %s) "
                 "RETURNING oid", *key)  # fmt: skip
    with pytest.raises(AssertionError, match="1 lost"):
        assert_stored_as_delivered(db, sim)

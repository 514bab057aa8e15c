"""The daemon resumes after every kind of interruption, with nothing lost or duplicated.

Each test runs the daemon in-process against the simulator (real sockets) and a real
PostgreSQL, injects one kind of fault, and checks afterwards, exactly: the trade tape is
stored once and as the engine made it; every book event the simulator delivered to each of
the recorder's connections is stored under that connection's stream session with the values
sent, their fills too, and nothing that was never sent (`assert_stored_as_delivered`); the
book rebuilt by book_at is the engine's.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from recorder.daemon import Daemon
from recorder.sim.server import Simulator
from tests.harness.daemon import (
    PAIRS,
    assert_book_at_now_is_the_engines,
    daemon_config,
    engine_tape,
    events_received,
    last_connected_at,
    resynced_since,
    sessions,
    simulated_exchange,
    start_daemon,
    stop_daemon,
    stored_tape,
)
from tests.harness.deliveries import Compared, assert_stored_as_delivered, delivered_events
from tests.harness.postgres import EmbeddedPostgres, count_rows, query
from tests.harness.waiting import eventually

OUTAGE_S = 30.0
STORM_FAULTS = 5
"""Answers of each faulty kind (429, 5xx, truncated) the REST storm lasts for."""
EVENTS_AFTER_BURST = 100
"""Book events delivered after the malformed ones (enough that a loss of a few shows)."""
EVENTS_WHILE_DB_DOWN = 300
"""Book events the simulator delivers while the database is down (some ten seconds)."""


@pytest.fixture
async def sim(dialect: str) -> AsyncIterator[Simulator]:
    """The simulated exchange, under each reading of what the docs leave open."""
    async with simulated_exchange(dialect, seed=11, rate_per_s=30, history_hours=0.25) as simulator:
        yield simulator


class Recording:
    """The daemon recording the simulator, from `await Recording.start(...)` to `finish()`."""

    def __init__(self, daemon: Daemon, sim: Simulator, dsn: str) -> None:
        self.daemon, self.sim, self.dsn = daemon, sim, dsn
        self.received_before = events_received()
        self.running: asyncio.Task[int] | None = None

    @classmethod
    async def start(cls, sim: Simulator, dsn: str, tmp_path: Path) -> Recording:
        recording = cls(Daemon(daemon_config(tmp_path, sim, dsn)), sim, dsn)
        recording.running = await start_daemon(recording.daemon)
        await eventually(lambda: sessions(dsn) == 1, what="the stream")
        return recording

    def received(self) -> float:
        return events_received() - self.received_before

    async def finish(self) -> Compared:
        """Quiet the exchange; once the whole tape is stored and the recorder has received
        every event sent, stop it (which commits what it holds); then compare the database
        exactly with what the simulator made and sent."""
        sim, dsn = self.sim, self.dsn
        sim.pause()
        await sim.drained()
        total = len(sim.engine.trades)
        await eventually(lambda: count_rows(dsn, "trades") == total, timeout_s=90,
                         what="every trade of the tape")  # fmt: skip
        await eventually(lambda: self.received() >= delivered_events(sim), timeout_s=90,
                         what="every event sent received")  # fmt: skip
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


async def test_exchange_outage_then_rest_storms(sim: Simulator, db: str, tmp_path: Path) -> None:
    recording = await Recording.start(sim, db, tmp_path)
    sim.start_outage(OUTAGE_S)  # REST 502, sockets dropped and refused
    await eventually(lambda: sessions(db) == 2, timeout_s=OUTAGE_S + 60, what="the stream back")
    second = last_connected_at(db)
    await eventually(lambda: resynced_since(db, second) == len(PAIRS),
                     what="resync snapshots after the outage")  # fmt: skip

    storm = {"rate_429": 0.2, "rate_5xx": 0.2, "rate_truncated": 0.1}
    before = Counter(sim.faults.served)
    sim.faults.update(storm)
    kinds = ("429", "5xx", "truncated")
    await eventually(lambda: all(sim.faults.served[k] >= before[k] + STORM_FAULTS for k in kinds),
                     what=f"{STORM_FAULTS} REST answers of each faulty kind")  # fmt: skip
    sim.faults.update(dict.fromkeys(storm, 0))
    compared = await recording.finish()
    assert compared.sessions == compared.connections == 2
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
    before = delivered_events(sim)
    await eventually(lambda: delivered_events(sim) > before + EVENTS_AFTER_BURST,
                     what="events after the burst")  # fmt: skip
    compared = await recording.finish()
    # Bad input did not cost a reconnect; every bad payload sent is kept, by its event name.
    assert compared.sessions == compared.connections == 1
    assert compared.garbage == 5 * len(PAIRS) + 3


async def test_database_down_for_a_while_loses_nothing(
    sim: Simulator, own_pg: EmbeddedPostgres, tmp_path: Path
) -> None:
    recording = await Recording.start(sim, own_pg.dsn, tmp_path)
    await asyncio.to_thread(own_pg.crash)
    before = delivered_events(sim)
    await eventually(lambda: delivered_events(sim) >= before + EVENTS_WHILE_DB_DOWN,
                     what="events delivered while the database is down")  # fmt: skip
    writer = recording.daemon.writer
    assert writer is not None
    assert writer.buffered_rows > 0
    await asyncio.to_thread(own_pg.restart)
    compared = await recording.finish()
    # One session throughout; every event delivered, those of the outage included, stored.
    assert compared.sessions == compared.connections == 1
    assert compared.events >= before + EVENTS_WHILE_DB_DOWN

"""The daemon resumes after every kind of interruption, with nothing lost or duplicated.

Each test runs the daemon in-process against the simulator (real sockets) and a real
PostgreSQL, injects one kind of fault, and checks afterwards that the trade tape is stored
exactly once and exactly, that the stream came back with a resync, and what was kept.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from recorder.daemon import Daemon
from recorder.sim.server import SimSettings, Simulator, run_sim
from tests.conftest import crash
from tests.dialects import DIALECTS
from tests.test_daemon import (
    PAIRS,
    assert_book_at_now_is_the_engines,
    daemon_config,
    eventually,
    query,
    start_daemon,
)

OUTAGE_S = 30.0


@pytest.fixture(params=list(DIALECTS))
async def sim(request: pytest.FixtureRequest) -> AsyncIterator[Simulator]:
    """The simulated exchange, under each reading of what the docs leave open."""
    settings = SimSettings(seed=11, pairs=PAIRS, rate_per_s=30, history_hours=0.25,
                           **DIALECTS[request.param])  # fmt: skip
    async with run_sim(settings) as simulator:
        yield simulator


async def finish(daemon: Daemon, running: asyncio.Task[int], sim: Simulator, dsn: str) -> None:
    """Quiet the exchange, wait for the whole tape, stop; then check the tape exactly."""
    sim.pause()
    await sim.drained()
    total = len(sim.engine.trades)
    await eventually(lambda: query(dsn, "SELECT count(*) FROM trades")[0][0] == total,
                     timeout_s=90, what="every trade of the tape")  # fmt: skip
    await asyncio.sleep(0.5)
    daemon.request_stop("SIGTERM")
    assert await asyncio.wait_for(running, 60) == 0
    stored = query(dsn, "SELECT tid, pair, type, price, amount FROM trades ORDER BY tid")
    assert stored == sorted((f.tid, f.pair, f.type, f.price, f.amount) for f in sim.engine.trades)
    # No event after the last snapshot is missing: the book rebuilt from them is the
    # exchange's own, order by order.
    assert_book_at_now_is_the_engines(dsn, sim, PAIRS)


def sessions(dsn: str) -> int:
    return int(query(dsn, "SELECT count(*) FROM stream_sessions")[0][0])


async def test_exchange_outage_then_rest_storms(sim: Simulator, db: str, tmp_path: Path) -> None:
    daemon = Daemon(daemon_config(tmp_path, sim, db))
    running = await start_daemon(daemon)
    await eventually(lambda: sessions(db) == 1, what="the stream")
    sim.start_outage(OUTAGE_S)  # REST 502, sockets dropped and refused
    await asyncio.sleep(OUTAGE_S)
    await eventually(lambda: sessions(db) == 2, timeout_s=60, what="the stream back")
    second = query(db, "SELECT max(connected_at) FROM stream_sessions")[0][0]
    await eventually(
        lambda: query(db, "SELECT count(DISTINCT pair) FROM book_snapshots "
                      "WHERE reason = 'connect' AND taken_at >= %s", second)[0][0] == len(PAIRS),
        timeout_s=30, what="resync snapshots after the outage",
    )  # fmt: skip

    sim.faults.update({"rate_429": 0.2, "rate_5xx": 0.2, "rate_truncated": 0.1})
    await asyncio.sleep(5)
    sim.faults.update({"rate_429": 0, "rate_5xx": 0, "rate_truncated": 0})
    await finish(daemon, running, sim, db)
    # Truncated answers were kept verbatim, with the reason.
    kept = query(db, "SELECT event, payload, error FROM raw_messages WHERE source = 'rest'")
    assert kept
    assert all(payload and error for _, payload, error in kept)


async def test_malformed_socket_events_are_kept_and_recording_goes_on(
    sim: Simulator, db: str, tmp_path: Path
) -> None:
    daemon = Daemon(daemon_config(tmp_path, sim, db))
    running = await start_daemon(daemon)
    await eventually(lambda: sessions(db) == 1, what="the stream")
    await sim.burst(malformed=5, unknown=3)
    await eventually(
        lambda: (
            query(db, "SELECT count(*) FROM raw_messages WHERE source = 'socket'")[0][0]
            >= 5 * len(PAIRS)
        ),
        what="the malformed events kept",
    )
    before = query(db, "SELECT count(*) FROM book_events")[0][0]
    await eventually(lambda: query(db, "SELECT count(*) FROM book_events")[0][0] > before + 10,
                     what="events after the burst")  # fmt: skip
    await finish(daemon, running, sim, db)
    assert sessions(db) == 1  # bad input did not cost a reconnect


async def test_database_down_for_a_while_loses_nothing(
    sim: Simulator, own_pg_server: Any, tmp_path: Path
) -> None:
    dsn = own_pg_server.get_uri()
    daemon = Daemon(daemon_config(tmp_path, sim, dsn))
    running = await start_daemon(daemon)
    await eventually(lambda: sessions(dsn) == 1, what="the stream")
    crash(own_pg_server)
    events_before = sim.emitted_count
    await asyncio.sleep(OUTAGE_S)
    events_during = sim.emitted_count - events_before
    assert daemon.writer is not None
    assert daemon.writer.buffered_rows > 0
    own_pg_server.ensure_postgres_running()
    await finish(daemon, running, sim, dsn)
    # Every event delivered during the outage was kept: one session, nothing missing.
    assert sessions(dsn) == 1
    stored_events = query(dsn, "SELECT count(*) FROM book_events")[0][0]
    assert events_during > 0
    assert stored_events >= events_during

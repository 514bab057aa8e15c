"""The daemon end to end: the simulator over real sockets, a real PostgreSQL, real signals.

What a run must leave behind: every trade of the exchange's tape exactly once and exact,
the stream's events and fills, a resync snapshot after every (re)connect, every stream
session opened and closed, and, at the end, the exchange's own book rebuilt by book_at.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import pytest

from recorder.config import ExchangeConfig
from recorder.daemon import Daemon
from recorder.sim.server import Simulator
from tests.harness.daemon import (
    PAIRS,
    assert_book_at_now_is_the_engines,
    daemon_config,
    daemon_config_path,
    engine_tape,
    last_connected_at,
    resynced_since,
    sessions,
    simulated_exchange,
    start_daemon,
    stop_daemon,
    stored_tape,
)
from tests.harness.deliveries import (
    assert_stored_as_delivered,
    delivered_events,
    every_delivered_event_stored,
)
from tests.harness.postgres import NOT_MIGRATED, count_rows, query
from tests.harness.recorder_process import RecorderProcess
from tests.harness.waiting import eventually


@pytest.fixture
async def sim(dialect: str) -> AsyncIterator[Simulator]:
    """The simulated exchange, under each reading of what the docs leave open."""
    async with simulated_exchange(dialect, seed=5, rate_per_s=40, history_hours=0.5) as simulator:
        yield simulator


async def test_a_run_records_everything_and_resyncs_after_a_socket_drop(
    sim: Simulator, db: str, tmp_path: Path
) -> None:
    daemon = Daemon(daemon_config(tmp_path, sim, db))
    running = await start_daemon(daemon)
    await eventually(lambda: count_rows(db, "book_events") > 0, what="live events")

    # The socket drops: a new session, a resync snapshot per pair, the tape caught up.
    await sim.drop_sockets()
    # A second session of every connection (each had one before the drop).
    connections = daemon.config.exchange.stream_connections
    await eventually(lambda: sessions(db) == 2 * connections, what="the stream back")
    second = last_connected_at(db)
    await eventually(lambda: resynced_since(db, second) == len(PAIRS),
                     what="a resync snapshot of every pair after the reconnect")  # fmt: skip
    # Events on the new connection, after its resync, before the exchange is quieted.
    on_second = delivered_events(sim)
    await eventually(lambda: delivered_events(sim) > on_second + 20,
                     what="events sent on the second connection")  # fmt: skip

    # Quiet the exchange, let the recorder catch up, then stop it with a signal's handler.
    sim.pause()
    await sim.drained()
    await eventually(lambda: count_rows(db, "trades") == len(sim.engine.trades),
                     what="every trade of the tape")  # fmt: skip
    await eventually(lambda: every_delivered_event_stored(db, sim),
                     what="every event sent stored")  # fmt: skip
    await stop_daemon(daemon, running)

    # Every trade once, exact.
    stored = stored_tape(db)
    assert stored == engine_tape(sim)
    # Every event each connection was sent, under its session, exact; their fills too.
    compared = assert_stored_as_delivered(db, sim)
    # Each of the connections, before the drop and after.
    assert compared.sessions == compared.connections == 2 * connections
    assert compared.fills
    # Every fill seen on the socket is a trade of the tape, identical.
    fills = query(db, "SELECT tid, pair, type, price, amount FROM book_fills ORDER BY tid")
    assert set(fills) <= set(stored)
    # Sessions: two per connection, all closed: the first by the drop, the last by the stop.
    closed = query(db, "SELECT disconnected_at IS NOT NULL, reason FROM stream_sessions "
                   "ORDER BY connected_at")  # fmt: skip
    assert [reason for _, reason in closed] == ["server disconnect"] * connections + [
        "stopped"
    ] * connections  # ended by the stream itself, like any session
    assert all(done for done, _ in closed)
    # The book at the end, rebuilt from the last snapshot and the events after it, is the
    # exchange's own book, order by order.
    assert_book_at_now_is_the_engines(db, sim, PAIRS)
    # Candles of the configured resolutions, and nothing refused.
    assert {r[0] for r in query(db, "SELECT DISTINCT resolution FROM candles")} == {"1", "60"}
    assert count_rows(db, "raw_messages") == 0
    assert isinstance(stored[0][3], Decimal)


async def test_sigkill_and_restart_lose_nothing_and_sigterm_exits_0(
    sim: Simulator, db: str, tmp_path: Path
) -> None:
    """A real process, real signals: killed mid-recording, restarted, then stopped cleanly."""
    recorder = RecorderProcess(daemon_config_path(tmp_path, sim, db))
    try:
        recorder.start()
        await recorder.wait_until(
            lambda: count_rows(db, "book_events") > 20,
            timeout_s=60, what="the first run recording", ignoring=NOT_MIGRATED,
        )  # fmt: skip
        # Its metrics are where its log says, on the port it was free to pick.
        assert (await recorder.metrics())["recorder_socket_connected"] == 1
        recorder.kill()  # SIGKILL: no shutdown at all
        made = sim.engine.event_count
        await eventually(lambda: sim.engine.event_count > made + 20,
                         what="the exchange going on while no recorder runs")  # fmt: skip

        before = sessions(db)
        recorder.start()
        await recorder.wait_until(lambda: sessions(db) > before, timeout_s=60,
                                  what="the second run's stream session")  # fmt: skip
        sim.pause()
        await sim.drained()
        await recorder.wait_until(lambda: count_rows(db, "trades") == len(sim.engine.trades),
                                  timeout_s=60, what="every trade after the restart")  # fmt: skip
        assert await asyncio.to_thread(recorder.stop) == 0
    finally:
        recorder.kill_if_running()
    assert any(e.get("event") == "stopped" for e in recorder.log_entries(this_start=True))

    assert stored_tape(db) == engine_tape(sim)
    # The killed run's sessions (one per connection) were never closed by it; the stopped
    # run's were.
    open_sessions = query(db, "SELECT count(DISTINCT run_id), count(*) FROM stream_sessions "
                          "WHERE disconnected_at IS NULL")  # fmt: skip
    assert open_sessions == [(1, ExchangeConfig().stream_connections)]

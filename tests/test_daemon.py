"""The daemon end to end: the simulator over real sockets, a real PostgreSQL, real signals.

What a run must leave behind: every trade of the exchange's tape exactly once and exact,
the stream's events and fills, a resync snapshot after every (re)connect, every stream
session opened and closed, and, at the end, the exchange's own book rebuilt by book_at.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest

from recorder.config import Config, load_config
from recorder.daemon import Daemon
from recorder.sim.server import SimSettings, Simulator, run_sim
from tests.dialects import DIALECTS

PAIRS = ("BTC_USD", "ETH_USD")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def daemon_config(tmp_path: Path, sim: Simulator, dsn: str, **recorder: Any) -> Config:
    settings = {
        "snapshot_interval_s": 30,
        "trades_poll_interval_s": 0.3,
        "candles_poll_interval_s": 1,
        "candle_types": ["1", "60"],
        **recorder,
    }
    lines = [
        "[exchange]",
        f'base_url = "{sim.base_url}"',
        f'socket_url = "{sim.base_url}"',
        "[database]",
        f'dsn = "{dsn}"',
        "[recorder]",
        f'data_dir = "{tmp_path / "data"}"',
        *(f"{key} = {value!r}".replace("'", '"') for key, value in settings.items()),
        "[metrics]",
        f'listen = "127.0.0.1:{free_port()}"',
    ]
    path = tmp_path / "recorder.toml"
    path.write_text("\n".join(lines) + "\n")
    return load_config(path)


async def eventually(check: Callable[[], bool], timeout_s: float = 30.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout_s
    while not _holds(check):
        assert time.monotonic() < deadline, f"timed out waiting for {what or check}"
        await asyncio.sleep(0.1)


def _holds(check: Callable[[], bool]) -> bool:
    try:
        return check()
    except psycopg.errors.UndefinedTable:  # the recorder has not migrated yet
        return False


def query(dsn: str, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(sql.encode(), params or None).fetchall()


def assert_book_at_now_is_the_engines(dsn: str, sim: Simulator, pairs: tuple[str, ...]) -> None:
    """book_at(pair, now()) holds exactly the simulator's resting orders, for every pair."""
    for pair in pairs:
        rebuilt = query(dsn, "SELECT side, order_id, price, amount FROM book_at(%s, now()) "
                        "ORDER BY side, order_id", pair)  # fmt: skip
        truth = sorted(
            (o.side, o.oid, o.price, o.amount)
            for side in ("buy", "sell")
            for o in sim.engine.books[pair].orders(side)  # type: ignore[arg-type]
        )
        assert rebuilt == truth, pair


@pytest.fixture(params=list(DIALECTS))
async def sim(request: pytest.FixtureRequest) -> AsyncIterator[Simulator]:
    """The simulated exchange, under each reading of what the docs leave open."""
    settings = SimSettings(seed=5, pairs=PAIRS, rate_per_s=40, history_hours=0.5,
                           **DIALECTS[request.param])  # fmt: skip
    async with run_sim(settings) as simulator:
        yield simulator


async def test_a_run_records_everything_and_resyncs_after_a_socket_drop(
    sim: Simulator, db: str, tmp_path: Path
) -> None:
    daemon = Daemon(daemon_config(tmp_path, sim, db))
    running = asyncio.create_task(daemon.run())
    await asyncio.wait_for(daemon.ready.wait(), 60)
    await eventually(lambda: len(query(db, "SELECT 1 FROM book_events LIMIT 1")) == 1,
                     what="live events")  # fmt: skip

    # The socket drops: a new session, a resync snapshot per pair, the tape caught up.
    await sim.drop_sockets()
    await eventually(lambda: query(db, "SELECT count(*) FROM stream_sessions")[0][0] >= 2,
                     what="a second stream session")  # fmt: skip
    second = query(db, "SELECT max(connected_at) FROM stream_sessions")[0][0]
    await eventually(
        lambda: query(db, "SELECT count(DISTINCT pair) FROM book_snapshots "
                      "WHERE reason = 'connect' AND taken_at >= %s", second)[0][0] == len(PAIRS),
        timeout_s=10, what="a resync snapshot of every pair after the reconnect",
    )  # fmt: skip

    # Quiet the exchange, let the recorder catch up, then stop it with a signal's handler.
    await asyncio.sleep(1.0)
    sim.pause()
    await sim.drained()
    expected_tids = sorted(fill.tid for fill in sim.engine.trades)
    await eventually(
        lambda: query(db, "SELECT count(*) FROM trades")[0][0] == len(expected_tids),
        what="every trade of the tape",
    )
    await asyncio.sleep(1.0)  # the last events reach the writer
    daemon.request_stop("SIGTERM")
    assert await asyncio.wait_for(running, 60) == 0

    # Every trade once, exact.
    stored = query(db, "SELECT tid, pair, type, price, amount FROM trades ORDER BY tid")
    truth = sorted((f.tid, f.pair, f.type, f.price, f.amount) for f in sim.engine.trades)
    assert stored == truth
    # Every fill seen on the socket is a trade of the tape, identical.
    fills = query(db, "SELECT tid, pair, type, price, amount FROM book_fills ORDER BY tid")
    assert fills
    assert set(fills) <= set(truth)
    # Sessions: two, both closed; the last one by the stop.
    sessions = query(db, "SELECT disconnected_at IS NOT NULL, reason FROM stream_sessions "
                     "ORDER BY connected_at")  # fmt: skip
    assert len(sessions) == 2
    assert all(closed for closed, _ in sessions)
    assert sessions[-1][1] in {"stopped", "recorder stopped"}  # the stream's, or our own
    # The book at the end, rebuilt from the last snapshot and the events after it, is the
    # exchange's own book, order by order.
    assert_book_at_now_is_the_engines(db, sim, PAIRS)
    # Candles of the configured resolutions, and nothing refused.
    assert {r[0] for r in query(db, "SELECT DISTINCT resolution FROM candles")} == {"1", "60"}
    assert query(db, "SELECT count(*) FROM raw_messages")[0][0] == 0
    assert isinstance(stored[0][3], Decimal)


async def start_daemon(daemon: Daemon) -> asyncio.Task[int]:
    """Run `daemon` in-process until it is recording; the task ends with its exit code."""
    running = asyncio.create_task(daemon.run())
    ready = asyncio.create_task(daemon.ready.wait())
    await asyncio.wait([running, ready], timeout=60, return_when=asyncio.FIRST_COMPLETED)
    assert daemon.ready.is_set(), "the daemon did not come up"
    return running


async def stop_daemon(daemon: Daemon, running: asyncio.Task[int]) -> None:
    daemon.request_stop("SIGTERM")
    assert await asyncio.wait_for(running, 60) == 0


async def start_recorder(config_path: Path) -> asyncio.subprocess.Process:
    import sys

    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "recorder", "run", "--config", str(config_path),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip


async def test_sigkill_and_restart_lose_nothing_and_sigterm_exits_0(
    sim: Simulator, db: str, tmp_path: Path
) -> None:
    """A real process, real signals: killed mid-recording, restarted, then stopped cleanly."""
    import signal

    daemon_config(tmp_path, sim, db)  # writes tmp_path / "recorder.toml"
    config_path = tmp_path / "recorder.toml"
    first = await start_recorder(config_path)
    await eventually(lambda: query(db, "SELECT count(*) FROM book_events")[0][0] > 20,
                     timeout_s=60, what="the first run recording")  # fmt: skip
    first.kill()  # SIGKILL: no shutdown at all
    await first.wait()
    await asyncio.sleep(1.0)  # the exchange goes on meanwhile

    second = await start_recorder(config_path)
    before = query(db, "SELECT count(*) FROM stream_sessions")[0][0]
    await eventually(lambda: query(db, "SELECT count(*) FROM stream_sessions")[0][0] > before,
                     timeout_s=60, what="the second run's stream session")  # fmt: skip
    sim.pause()
    await sim.drained()
    total = len(sim.engine.trades)
    await eventually(lambda: query(db, "SELECT count(*) FROM trades")[0][0] == total,
                     timeout_s=60, what="every trade after the restart")  # fmt: skip
    second.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(second.wait(), 60) == 0
    assert second.stderr is not None
    log = (await second.stderr.read()).decode()
    assert '"stopped"' in log

    stored = query(db, "SELECT tid, pair, price, amount FROM trades ORDER BY tid")
    assert stored == sorted((f.tid, f.pair, f.price, f.amount) for f in sim.engine.trades)
    # The killed run's session was never closed by it; the stopped one was.
    open_sessions = query(db, "SELECT count(*) FROM stream_sessions WHERE disconnected_at IS NULL")
    assert open_sessions[0][0] == 1

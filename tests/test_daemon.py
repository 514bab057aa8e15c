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
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what or check}"
        await asyncio.sleep(0.1)


def query(dsn: str, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(sql.encode(), params or None).fetchall()


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    settings = SimSettings(seed=5, pairs=PAIRS, rate_per_s=40, history_hours=0.5)
    async with run_sim(settings) as simulator:
        yield simulator


async def test_a_run_records_everything_and_resyncs_after_a_socket_drop(
    sim: Simulator, pg_dsn: str, tmp_path: Path
) -> None:
    daemon = Daemon(daemon_config(tmp_path, sim, pg_dsn))
    running = asyncio.create_task(daemon.run())
    await asyncio.wait_for(daemon.ready.wait(), 60)
    await eventually(lambda: len(query(pg_dsn, "SELECT 1 FROM book_events LIMIT 1")) == 1,
                     what="live events")  # fmt: skip

    # The socket drops: a new session, a resync snapshot per pair, the tape caught up.
    await sim.drop_sockets()
    await eventually(lambda: query(pg_dsn, "SELECT count(*) FROM stream_sessions")[0][0] >= 2,
                     what="a second stream session")  # fmt: skip
    second = query(pg_dsn, "SELECT max(connected_at) FROM stream_sessions")[0][0]
    await eventually(
        lambda: query(pg_dsn, "SELECT count(DISTINCT pair) FROM book_snapshots "
                      "WHERE reason = 'connect' AND taken_at >= %s", second)[0][0] == len(PAIRS),
        timeout_s=10, what="a resync snapshot of every pair after the reconnect",
    )  # fmt: skip

    # Quiet the exchange, let the recorder catch up, then stop it with a signal's handler.
    await asyncio.sleep(1.0)
    sim.pause()
    await sim.drained()
    expected_tids = sorted(fill.tid for fill in sim.engine.trades)
    await eventually(
        lambda: query(pg_dsn, "SELECT count(*) FROM trades")[0][0] == len(expected_tids),
        what="every trade of the tape",
    )
    await asyncio.sleep(1.0)  # the last events reach the writer
    daemon.request_stop("SIGTERM")
    assert await asyncio.wait_for(running, 60) == 0

    # Every trade once, exact.
    stored = query(pg_dsn, "SELECT tid, pair, type, price, amount FROM trades ORDER BY tid")
    truth = sorted((f.tid, f.pair, f.type, f.price, f.amount) for f in sim.engine.trades)
    assert stored == truth
    # Every fill seen on the socket is a trade of the tape, identical.
    fills = query(pg_dsn, "SELECT tid, pair, type, price, amount FROM book_fills ORDER BY tid")
    assert fills
    assert set(fills) <= set(truth)
    # Sessions: two, both closed; the last one by the stop.
    sessions = query(pg_dsn, "SELECT disconnected_at IS NOT NULL, reason FROM stream_sessions "
                     "ORDER BY connected_at")  # fmt: skip
    assert len(sessions) == 2
    assert all(closed for closed, _ in sessions)
    assert sessions[-1][1] in {"stopped", "recorder stopped"}  # the stream's, or our own
    # The book at the end, rebuilt from the last snapshot and the events after it, is the
    # exchange's own book, order by order.
    for pair in PAIRS:
        rebuilt = query(pg_dsn, "SELECT side, order_id, price, amount FROM book_at(%s, now()) "
                        "ORDER BY side, order_id", pair)  # fmt: skip
        truth_book = sorted(
            (o.side, o.oid, o.price, o.amount)
            for side in ("buy", "sell")
            for o in sim.engine.books[pair].orders(side)  # type: ignore[arg-type]
        )
        assert rebuilt == truth_book, pair
    # Candles of the configured resolutions, and nothing refused.
    assert {r[0] for r in query(pg_dsn, "SELECT DISTINCT resolution FROM candles")} == {"1", "60"}
    assert query(pg_dsn, "SELECT count(*) FROM raw_messages")[0][0] == 0
    assert isinstance(stored[0][3], Decimal)

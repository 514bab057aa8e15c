"""The daemon in-process against the simulator: its config, its start and stop, the book check.

The daemon's end-to-end tests (tests/test_daemon*.py, the research recording, the Node and
fuzz pipelines) run `Daemon.run()` on the test's own event loop, beside the simulator, so
that a test can stop the exchange's flow, wait until everything was sent, and then compare
the database with the simulator's own record.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from recorder.config import Config, load_config
from recorder.daemon import Daemon
from recorder.sim.server import SimSettings, Simulator, run_sim
from tests.dialects import DIALECTS
from tests.harness.config import write_config
from tests.harness.deliveries import delivered_keys
from tests.harness.metrics import metric_total
from tests.harness.postgres import count_rows, query
from tests.harness.waiting import eventually

PAIRS = ("BTC_USD", "ETH_USD")

QUICK_POLLS = {
    "snapshot_interval_s": 30,
    "trades_poll_interval_s": 0.3,
    "candles_poll_interval_s": 1,
    "candle_types": ["1", "60"],
}
"""Polls much quicker than the defaults, so that a test of seconds sees every source work."""


@asynccontextmanager
async def simulated_exchange(dialect: str, **settings: Any) -> AsyncIterator[Simulator]:
    """The simulator with `settings` under one reading of what the docs leave open
    (tests/dialects.py), on PAIRS, noting what it delivered to each connection."""
    settings = {"pairs": PAIRS, "record_deliveries": True, **settings, **DIALECTS[dialect]}
    async with run_sim(SimSettings(**settings)) as sim:
        yield sim


def daemon_config_path(
    tmp_path: Path,
    sim: Simulator,
    dsn: str,
    *,
    stream_connections: int | None = None,
    **recorder: Any,
) -> Path:
    """Write `tmp_path / "recorder.toml"` for recording `sim` into `dsn`; its path. The
    stream has the configuration's default connections unless `stream_connections` says."""
    return write_config(
        tmp_path / "recorder.toml",
        base_url=sim.base_url,
        dsn=dsn,
        data_dir=tmp_path / "data",
        exchange={} if stream_connections is None else {"stream_connections": stream_connections},
        recorder={**QUICK_POLLS, **recorder},
        log_format="json",
    )


def daemon_config(
    tmp_path: Path,
    sim: Simulator,
    dsn: str,
    *,
    stream_connections: int | None = None,
    **recorder: Any,
) -> Config:
    """The config of `daemon_config_path`, loaded as `recorder run` loads it."""
    return load_config(
        daemon_config_path(tmp_path, sim, dsn, stream_connections=stream_connections, **recorder)
    )


async def start_daemon(daemon: Daemon, timeout_s: float = 60.0) -> asyncio.Task[int]:
    """Run `daemon` in-process until it is recording; the task ends with its exit code."""
    running = asyncio.create_task(daemon.run())
    ready = asyncio.create_task(daemon.ready.wait())
    await asyncio.wait([running, ready], timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
    if not daemon.ready.is_set():
        ready.cancel()
        raise AssertionError(
            f"the daemon did not come up: {running.result() if running.done() else 'no answer'}"
        )
    return running


async def stop_daemon(daemon: Daemon, running: asyncio.Task[int]) -> None:
    """Stop it as SIGTERM does; it must exit 0 (everything committed)."""
    daemon.request_stop("SIGTERM")
    assert await asyncio.wait_for(running, 60) == 0


def logged_metrics_url(records: Iterable[logging.LogRecord]) -> str:
    """Where an in-process daemon serves its metrics, as its "metrics served" line says
    (its config asks for port 0: any free one). Needs INFO records of recorder.daemon."""
    for record in records:
        if record.name == "recorder.daemon" and record.getMessage() == "metrics served":
            return str(record.fields["url"])  # type: ignore[attr-defined]
    raise AssertionError("the daemon logged no metrics URL (is INFO captured?)")


async def quiet_until_recorded(sim: Simulator, dsn: str, received: float) -> None:
    """Pause the exchange, then wait until the recorder stored the whole trade tape and
    received every event sent (`received`: `events_received()` when it started)."""
    sim.pause()
    await sim.drained()
    total = len(sim.engine.trades)
    await eventually(lambda: count_rows(dsn, "trades") == total, timeout_s=60,
                     what="every trade of the tape")  # fmt: skip
    await eventually(lambda: events_received() - received >= len(delivered_keys(sim)),
                     what="every event sent received")  # fmt: skip


def events_received() -> float:
    """Book events the stream has received so far, in this process, every pair and kind."""
    return metric_total("recorder_socket_events_total")


def sessions(dsn: str) -> int:
    return int(query(dsn, "SELECT count(*) FROM stream_sessions")[0][0])


def resynced_since(dsn: str, since: Any) -> int:
    """How many pairs have a resync snapshot ("connect") taken at or after `since` that the
    stream followed (`in_sync`: one that a drop under way does not spoil, book_at's start)."""
    return int(
        query(dsn, "SELECT count(DISTINCT pair) FROM book_snapshots "
              "WHERE reason = 'connect' AND in_sync AND taken_at >= %s", since)[0][0]
    )  # fmt: skip


def last_connected_at(dsn: str) -> Any:
    return query(dsn, "SELECT max(connected_at) FROM stream_sessions")[0][0]


def stored_tape(dsn: str) -> list[tuple[Any, ...]]:
    return query(dsn, "SELECT tid, pair, type, price, amount FROM trades ORDER BY tid")


def engine_tape(sim: Simulator) -> list[tuple[Any, ...]]:
    """The simulator's whole trade tape, as `stored_tape` must read."""
    return sorted((t.tid, t.pair, t.type, t.price, t.amount) for t in sim.engine.trades)


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

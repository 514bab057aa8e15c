"""The daemon's start and end: what it waits out, what makes it give up, what it gives back.

Real parts throughout: the simulator over real sockets, a real PostgreSQL (one the test may
crash, or the embedded one the daemon starts itself), a real `recorder run` process where
the exit code matters, and real signals.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import psycopg
import pytest

import recorder.daemon
from recorder import exitcodes
from recorder.config import Config, load_config
from recorder.daemon import Daemon
from recorder.sim.server import SimSettings, Simulator, run_sim
from tests.harness.daemon import daemon_config, start_daemon, stop_daemon
from tests.harness.ports import refused_port
from tests.harness.postgres import EmbeddedPostgres, query
from tests.harness.recorder_process import RecorderProcess
from tests.harness.waiting import eventually

PAIRS = ("BTC_USD",)


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with run_sim(SimSettings(seed=8, pairs=PAIRS, rate_per_s=20, history_hours=0.1)) as s:
        yield s


def with_line(config_path: Path, key: str, value: str) -> Config:
    """The configuration at `config_path` with `key = value` in place of its line."""
    lines = [
        f'{key} = "{value}"' if line.startswith(f"{key} = ") else line
        for line in config_path.read_text().splitlines()
    ]
    config_path.write_text("\n".join(lines) + "\n")
    return load_config(config_path)


def logged(caplog: pytest.LogCaptureFixture, message: str) -> int:
    return sum(1 for record in caplog.records if record.getMessage() == message)


async def until_up_or_ended(daemon: Daemon, running: asyncio.Task[int]) -> None:
    ready = asyncio.create_task(daemon.ready.wait())
    await asyncio.wait([running, ready], timeout=90, return_when=asyncio.FIRST_COMPLETED)
    ready.cancel()


# --- the database -----------------------------------------------------------------------------


async def test_a_database_down_between_migrations_and_the_resume_queries_is_waited_out(
    sim: Simulator, own_pg: EmbeddedPostgres, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dsn = own_pg.dsn
    migrate = recorder.daemon.migrate
    last_trade_ids = recorder.daemon.last_trade_ids
    crashed = threading.Event()
    refused: list[Exception] = []

    def migrate_then_crash(target: str) -> list[str]:
        applied = migrate(target)
        if not crashed.is_set():  # the database goes down right after the migrations
            own_pg.crash()
            crashed.set()
        return applied

    async def last_trade_ids_seen(target: str) -> dict[str, int]:
        try:
            return await last_trade_ids(target)
        except psycopg.OperationalError as exc:
            refused.append(exc)
            raise

    monkeypatch.setattr(recorder.daemon, "migrate", migrate_then_crash)
    monkeypatch.setattr(recorder.daemon, "last_trade_ids", last_trade_ids_seen)
    daemon = Daemon(daemon_config(tmp_path, sim, dsn))
    running = asyncio.create_task(daemon.run())
    await eventually(lambda: bool(refused) or running.done(), what="a resume query refused")
    await asyncio.to_thread(own_pg.restart)

    await until_up_or_ended(daemon, running)
    assert not running.done() or running.exception() is None, running.exception()
    assert daemon.ready.is_set(), "the daemon did not come up once the database was back"
    await eventually(lambda: query(dsn, "SELECT count(*) FROM book_events")[0][0] > 0,
                     what="recording")  # fmt: skip
    await stop_daemon(daemon, running)


async def test_the_embedded_database_starts_while_the_event_loop_runs_on(
    sim: Simulator, tmp_path: Path
) -> None:
    """The demo runs the simulator on the daemon's loop: it must not freeze while the
    embedded PostgreSQL is created and started (seconds), nor while it stops."""
    # Under /tmp, not pytest's private tmp_path: as root, the embedded server runs as an
    # unprivileged user who must be able to reach its data directory.
    data_dir = Path(tempfile.mkdtemp(prefix="recorder-test-embedded-"))
    try:
        config_path = tmp_path / "recorder.toml"
        daemon_config(tmp_path, sim, "")  # writes config_path
        config = with_line(config_path, "data_dir", str(data_dir))
        assert config.database.embedded
        daemon = Daemon(config)
        gaps_s: list[float] = []

        async def tick_until_the_database_is_up() -> None:
            last = time.monotonic()
            while not daemon.dsn:
                await asyncio.sleep(0.02)
                now = time.monotonic()
                gaps_s.append(now - last)
                last = now

        ticking = asyncio.create_task(tick_until_the_database_is_up())
        running = await start_daemon(daemon)
        await ticking
        await stop_daemon(daemon, running)
        starting_s = sum(gaps_s)
        assert starting_s > 0.5, "the embedded server started too fast to tell anything"
        assert max(gaps_s) < starting_s / 3, f"the loop stood still for {max(gaps_s):.2f} s"
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


# --- the exchange -----------------------------------------------------------------------------


async def test_a_wrong_base_url_exits_3_naming_the_url_and_the_status(
    sim: Simulator, db: str, tmp_path: Path
) -> None:
    """A 404 on the pair list is not an outage: waiting would wait for ever."""
    config_path = tmp_path / "recorder.toml"
    daemon_config(tmp_path, sim, db)
    wrong = f"{sim.base_url}/no/such/root"
    with_line(config_path, "base_url", wrong)
    process = RecorderProcess(config_path)
    process.start()
    await eventually(lambda: not process.running, timeout_s=60, what="the recorder giving up")
    assert process.returncode == exitcodes.STARTUP_FAILURE
    log = process.log_text()
    assert f"{wrong}/api/v1/currencies/" in log
    assert "404" in log
    assert "Traceback" not in log


async def test_an_exchange_that_answers_5xx_and_429_at_start_is_waited_out(
    sim: Simulator, db: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="recorder")
    sim.faults.update({"rate_5xx": 0.5, "rate_429": 0.5})
    daemon = Daemon(daemon_config(tmp_path, sim, db))
    running = asyncio.create_task(daemon.run())
    await eventually(lambda: logged(caplog, "exchange unreachable; waiting") > 0 or running.done(),
                     timeout_s=60, what="the daemon waiting for the exchange")  # fmt: skip
    assert not running.done()
    sim.faults.update({"rate_5xx": 0.0, "rate_429": 0.0})
    await until_up_or_ended(daemon, running)
    assert daemon.ready.is_set()
    await stop_daemon(daemon, running)


async def test_an_exchange_that_refuses_connections_at_start_is_waited_out(
    sim: Simulator, db: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="recorder")
    config_path = tmp_path / "recorder.toml"
    daemon_config(tmp_path, sim, db)
    with refused_port() as port:
        daemon = Daemon(with_line(config_path, "base_url", f"http://127.0.0.1:{port}"))
        running = asyncio.create_task(daemon.run())
        await eventually(
            lambda: logged(caplog, "exchange unreachable; waiting") > 0 or running.done(),
            timeout_s=60,
            what="the daemon waiting for the exchange",
        )
        assert not running.done()
        daemon.request_stop("SIGTERM")
        assert await asyncio.wait_for(running, 30) == exitcodes.OK


# --- signals ----------------------------------------------------------------------------------


@pytest.fixture
def own_handlers() -> Iterator[Any]:
    """A SIGINT and SIGTERM handler of the test's own, in place while it runs."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise AssertionError(f"signal {signum} reached the test's own handler")

    saved = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield handler
    finally:
        for sig, previous in saved.items():
            signal.signal(sig, previous)


async def test_a_real_sigterm_stops_the_run_and_the_previous_handlers_come_back(
    sim: Simulator, db: str, tmp_path: Path, own_handlers: Any
) -> None:
    daemon = Daemon(daemon_config(tmp_path, sim, db, stream_connections=1))
    running = await start_daemon(daemon)
    await eventually(lambda: query(db, "SELECT count(*) FROM stream_sessions")[0][0] == 1,
                     what="the stream session")  # fmt: skip
    os.kill(os.getpid(), signal.SIGTERM)
    assert await asyncio.wait_for(running, 60) == exitcodes.OK
    assert signal.getsignal(signal.SIGINT) is own_handlers
    assert signal.getsignal(signal.SIGTERM) is own_handlers
    # The stream's own end closed the session, like any other it recorded.
    assert query(db, "SELECT reason FROM stream_sessions") == [("stopped",)]

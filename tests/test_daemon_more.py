"""More of what `recorder run` promises: the account with keys, trades_backfill, systemd's
notify protocol over a real socket, and a second signal that stops at once losing nothing.
"""

from __future__ import annotations

import asyncio
import socket
import tempfile
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

from recorder.daemon import Daemon
from recorder.exchange.rest import ExchangeClient
from recorder.sim.server import SimSettings, Simulator, run_sim
from tests.harness.daemon import (
    daemon_config,
    daemon_config_path,
    events_received,
    simulated_exchange,
    start_daemon,
    stop_daemon,
)
from tests.harness.deliveries import delivered_events, delivered_keys
from tests.harness.postgres import EmbeddedPostgres, count_rows, query
from tests.harness.recorder_process import RecorderProcess, environment
from tests.harness.waiting import eventually


@pytest.fixture
async def sim(dialect: str) -> AsyncIterator[Simulator]:
    """The simulated exchange, under each reading of what the docs leave open."""
    async with simulated_exchange(dialect, seed=21, rate_per_s=30, history_hours=1) as simulator:
        yield simulator


async def test_with_keys_the_account_is_recorded(sim: Simulator, db: str, tmp_path: Path) -> None:
    alice = sim.accounts.by_name["alice"]
    async with ExchangeClient(
        sim.base_url,
        api_key=_secret(alice.credentials.key),
        api_secret=_secret(alice.credentials.secret),
    ) as client:
        best_sell = sim.engine.books["BTC_USD"].best_price("sell")
        assert best_sell is not None
        await client.create_order("BTC_USD", "buy", Decimal("0.001"), best_sell)  # trades

    config = daemon_config(tmp_path, sim, db)
    config = config.model_copy(update={"exchange": config.exchange.model_copy(update={
        "api_key": _secret(alice.credentials.key), "api_secret": _secret(alice.credentials.secret),
    })})  # fmt: skip
    daemon = Daemon(config)
    running = await start_daemon(daemon)
    await eventually(lambda: query(db, "SELECT count(*) FROM account_withdraws")[0][0] > 0,
                     timeout_s=30, what="a round of account calls")  # fmt: skip
    await stop_daemon(daemon, running)

    wallets = dict(query(db, "SELECT currency, balance FROM account_wallets"))
    assert set(wallets) == set(alice.balances)
    orders = {row[0] for row in query(db, "SELECT id FROM account_orders")}
    assert set(alice.order_ids) <= orders
    own_trades = {row[0] for row in query(db, "SELECT id FROM account_trades")}
    assert own_trades == {t.tid for t in alice.trades}
    assert own_trades
    deposits = sorted(r[0] for r in query(db, "SELECT id FROM account_deposits"))
    assert deposits == sorted(d.id for d in alice.deposits)
    withdraws = sorted(r[0] for r in query(db, "SELECT id FROM account_withdraws"))
    assert withdraws == sorted(w.id for w in alice.withdraws)


def _secret(value: str) -> Any:
    from pydantic import SecretStr

    return SecretStr(value)


@pytest.mark.parametrize("backfill", ["none", "20m"])
async def test_trades_backfill_decides_how_far_back_an_empty_database_goes(
    sim: Simulator, db: str, tmp_path: Path, backfill: str
) -> None:
    started = datetime.now(UTC)
    newest_before = max(f.tid for f in sim.engine.trades)
    daemon = Daemon(daemon_config(tmp_path, sim, db, trades_backfill=backfill))
    running = await start_daemon(daemon)
    made = len(sim.engine.trades)
    await eventually(lambda: len(sim.engine.trades) >= made + 5, what="trades after the start")
    sim.pause()
    await sim.drained()
    if backfill == "none":
        # Recording starts at the newest trade when the daemon looked, a moment after start.
        await eventually(lambda: query(db, "SELECT count(*) FROM trades")[0][0] > 0,
                         what="new trades")  # fmt: skip
        first = query(db, "SELECT min(tid) FROM trades")[0][0]
        assert first > newest_before
        wanted = sorted(f.tid for f in sim.engine.trades if f.tid >= first)
    else:
        since = started - timedelta(minutes=20)
        wanted = sorted(
            f.tid for f in sim.engine.trades
            if datetime.fromtimestamp(float(f.timestamp), UTC) >= since + timedelta(seconds=5)
        )  # fmt: skip
    await eventually(lambda: set(wanted) <= {r[0] for r in query(db, "SELECT tid FROM trades")},
                     what="the trades wanted")  # fmt: skip
    await stop_daemon(daemon, running)
    stored = sorted(r[0] for r in query(db, "SELECT tid FROM trades"))
    if backfill == "none":
        assert stored == wanted  # nothing from before the start
    else:
        oldest = query(db, "SELECT min(ts) FROM trades")[0][0]
        assert oldest >= started - timedelta(minutes=20, seconds=5)
        assert len(stored) < len(sim.engine.trades)  # an hour of history, 20 minutes taken


def test_systemd_hears_ready_watchdog_and_stopping(db: str, tmp_path: Path) -> None:
    """`recorder run` as a process under a fake systemd: READY=1, WATCHDOG=1, STOPPING=1."""
    notify_path = Path(tempfile.mkdtemp()) / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind(str(notify_path))
        listener.settimeout(60)

        async def run_it() -> list[bytes]:
            async with run_sim(SimSettings(seed=3, pairs=("BTC_USD",), history_hours=0.1)) as s:
                env = environment(NOTIFY_SOCKET=str(notify_path), WATCHDOG_USEC="400000")
                recorder = RecorderProcess(daemon_config_path(tmp_path, s, db), env=env)
                recorder.start()
                loop = asyncio.get_running_loop()
                messages: list[bytes] = []
                try:
                    deadline = time.monotonic() + 60
                    while not any(m.startswith(b"READY=1") for m in messages):
                        assert time.monotonic() < deadline, messages
                        messages.append(await loop.run_in_executor(None, listener.recv, 1024))
                    watchdogs = 0
                    while watchdogs < 2:
                        message = await loop.run_in_executor(None, listener.recv, 1024)
                        messages.append(message)
                        watchdogs += message == b"WATCHDOG=1"
                    assert await asyncio.to_thread(recorder.stop) == 0
                finally:
                    recorder.kill_if_running()
                while b"STOPPING=1" not in messages:
                    messages.append(await loop.run_in_executor(None, listener.recv, 1024))
                return messages

        messages = asyncio.run(run_it())
    assert messages[0].startswith(b"READY=1\nSTATUS=recording 1 pairs")
    assert b"STOPPING=1" in messages


async def test_a_second_signal_stops_at_once_and_the_next_start_commits_the_rest(
    sim: Simulator, own_pg: EmbeddedPostgres, tmp_path: Path
) -> None:
    dsn = own_pg.dsn
    config = daemon_config(tmp_path, sim, dsn)
    daemon = Daemon(config)
    received = events_received()
    running = await start_daemon(daemon)
    await eventually(lambda: count_rows(dsn, "book_events") > 0, what="events")
    await asyncio.to_thread(own_pg.crash)
    down_at = datetime.now(UTC)
    sent = delivered_events(sim)
    # Events keep coming; the writer holds them.
    await eventually(lambda: delivered_events(sim) >= sent + 40, what="events while down")
    sim.pause()
    await sim.drained()
    await eventually(lambda: events_received() - received >= len(delivered_keys(sim)),
                     what="every event sent received")  # fmt: skip
    daemon.request_stop("SIGTERM")  # would wait up to drain_timeout_s for the database
    # The second signal, once the first has stopped the sources and the drain has begun.
    await eventually(lambda: REGISTRY.get_sample_value("recorder_socket_connected") == 0,
                     what="the stream closed by the first signal")  # fmt: skip
    stopped_at = time.monotonic()
    signalled_at = datetime.now(UTC)
    daemon.request_stop("SIGINT")  # the second signal: at once
    assert await asyncio.wait_for(running, 30) == 0
    assert time.monotonic() - stopped_at < daemon.drain_timeout_s / 2
    spool = config.recorder.data_dir / "spool"
    assert list(spool.glob("*.jsonl")), "what was not committed must be in the spool"

    await asyncio.to_thread(own_pg.restart)
    sim.resume()
    second = Daemon(config)
    running = await start_daemon(second)
    sim.pause()
    await sim.drained()
    total = len(sim.engine.trades)
    await eventually(lambda: query(dsn, "SELECT count(*) FROM trades")[0][0] == total,
                     what="the whole tape")  # fmt: skip
    await stop_daemon(second, running)
    assert not list(spool.glob("*.jsonl"))
    # The events received while the database was down reached it through the spool.
    during = query(dsn, "SELECT count(*) FROM book_events WHERE received_at BETWEEN %s AND %s",
                   down_at, signalled_at)  # fmt: skip
    assert during[0][0] > 0


async def test_a_pair_listed_later_is_recorded_without_a_restart(
    sim: Simulator, db: str, tmp_path: Path
) -> None:
    daemon = Daemon(daemon_config(tmp_path, sim, db, metadata_refresh_s=0.5))
    running = await start_daemon(daemon)
    sim.list_pair("LTC_USD")
    await eventually(
        lambda: query(db, "SELECT count(*) FROM book_events WHERE pair = 'LTC_USD'")[0][0] > 0,
        what="events of the new pair",
    )
    await eventually(
        lambda: query(db, "SELECT count(*) FROM book_snapshots WHERE pair = 'LTC_USD'")[0][0] > 0,
        what="a snapshot of the new pair",
    )
    sim.pause()
    await sim.drained()
    wanted = {f.tid for f in sim.engine.trades_by_pair["LTC_USD"]}
    await eventually(
        lambda: (
            wanted <= {r[0] for r in query(db, "SELECT tid FROM trades WHERE pair = 'LTC_USD'")}
        ),
        what="the new pair's trades",
    )
    await stop_daemon(daemon, running)
    assert query(db, "SELECT count(*) FROM pairs WHERE name = 'LTC_USD'")[0][0] == 1

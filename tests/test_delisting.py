"""A pair that leaves the exchange's list is stopped cleanly, noted, and followed again when
it comes back: the daemon against the simulator (real sockets) and a real PostgreSQL.

Stopped cleanly means: its tasks cancelled (no more failures against an exchange that
answers 404 for it), its book channel unsubscribed (and not subscribed again at the next
connection), logged once, counted, and told apart from holes by `recorder coverage`.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from prometheus_client import REGISTRY

from recorder.daemon import Daemon
from recorder.research.coverage import format_report, load_report
from recorder.sim.server import SimSettings, Simulator, run_sim
from tests.harness.daemon import daemon_config, start_daemon, stop_daemon
from tests.harness.postgres import query
from tests.harness.waiting import eventually

PAIRS = ("BTC_USD", "ETH_USD")
GONE = "ETH_USD"
DELISTED_LOG = "pairs delisted by the exchange: recording them stopped"


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with run_sim(SimSettings(seed=4, pairs=PAIRS, rate_per_s=40, history_hours=0.2)) as s:
        yield s


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def pair_tasks(daemon: Daemon, pair: str) -> list[str]:
    return [name for name in daemon.supervisor.names if name.split(":")[1:2] == [pair]]


def failures_of(tasks: list[str]) -> float:
    return sum(sample("recorder_task_failures_total", task=task) for task in tasks)


def pair_list_answers() -> float:
    return sample("recorder_http_requests_total", endpoint="pairs", status="200")


def coverage_of(dsn: str) -> dict[str, Any]:
    with psycopg.connect(dsn) as conn:
        report = load_report(conn)
    return {pair.pair: pair for pair in report.pairs} | {"text": format_report(report)}


def count(dsn: str, sql: str, *params: Any) -> int:
    return int(query(dsn, sql, *params)[0][0])


@pytest.mark.parametrize("pairs", [["*"], list(PAIRS)], ids=["all-pairs", "configured-pairs"])
async def test_a_delisted_pair_is_stopped_noted_and_followed_again_when_listed(
    sim: Simulator, db: str, tmp_path: Path, caplog: pytest.LogCaptureFixture, pairs: list[str]
) -> None:
    caplog.set_level(logging.INFO, logger="recorder")
    daemon = Daemon(daemon_config(tmp_path, sim, db, pairs=pairs, metadata_refresh_s=0.3))
    running = await start_daemon(daemon)
    tasks = pair_tasks(daemon, GONE)
    assert sorted(tasks) == [f"candles:{GONE}:1", f"candles:{GONE}:60", f"snapshots:{GONE}",
                             f"trades:{GONE}"]  # fmt: skip
    n = daemon.config.exchange.stream_connections  # each connection subscribes every pair
    await eventually(lambda: len(sim.subscribers(f"book_{GONE}")) == n, what="the subscription")
    await eventually(lambda: count(db, "SELECT count(*) FROM book_events WHERE pair = %s",
                                   GONE) > 0, what="the pair recorded")  # fmt: skip
    delisted_before = sample("recorder_pairs_delisted_total", pair=GONE)

    # Delisted: its tasks stop, its channel is left, and it is said once.
    sim.delist_pair(GONE)
    await eventually(lambda: not pair_tasks(daemon, GONE), what="the pair's tasks stopped")
    # Counted once its tasks are stopped and its leases dropped, a moment after the above.
    await eventually(
        lambda: sample("recorder_pairs_delisted_total", pair=GONE) == delisted_before + 1,
        what="the delisting counted",
    )
    assert sample("recorder_pairs_followed") == 1
    assert pair_tasks(daemon, "BTC_USD")
    # Its gauges are gone: frozen, they would say the recording stalled (and alert).
    for gauge in (
        "recorder_last_event_timestamp_seconds",
        "recorder_last_snapshot_timestamp_seconds",
    ):
        assert REGISTRY.get_sample_value(gauge, {"pair": GONE}) is None, gauge
        assert REGISTRY.get_sample_value(gauge, {"pair": "BTC_USD"}) is not None, gauge
    await eventually(lambda: not sim.subscribers(f"book_{GONE}"), what="the channel left")
    failed = failures_of(tasks)
    answers = pair_list_answers()
    await eventually(lambda: pair_list_answers() >= answers + 3, what="three more refreshes")
    assert failures_of(tasks) == failed, "a delisted pair's task still failed"
    assert not pair_tasks(daemon, GONE)
    assert sum(r.getMessage() == DELISTED_LOG for r in caplog.records) == 1

    # The next connection subscribes only the pairs still followed.
    await sim.drop_sockets()
    await eventually(lambda: count(db, "SELECT count(*) FROM stream_sessions") == 2 * n,
                     what="a second stream session")  # fmt: skip
    await eventually(lambda: len(sim.subscribers("book_BTC_USD")) == n, what="resubscribed")
    assert not sim.subscribers(f"book_{GONE}")

    # `recorder coverage` tells the delisting: last listed when the stored row last moved.
    last_listed = query(db, "SELECT updated_at FROM pairs WHERE name = %s", GONE)[0][0]
    coverage = coverage_of(db)
    assert coverage[GONE].last_listed == last_listed
    assert coverage["BTC_USD"].last_listed is None
    assert coverage["text"].count("delisted     last listed") == 1

    # Listed again: followed again, from a fresh snapshot.
    relisted_at = query(db, "SELECT now()")[0][0]
    sim.list_pair(GONE)
    await eventually(lambda: sorted(pair_tasks(daemon, GONE)) == sorted(tasks),
                     what="the pair's tasks again")  # fmt: skip
    await eventually(lambda: len(sim.subscribers(f"book_{GONE}")) == n, what="subscribed again")
    await eventually(
        lambda: count(db, "SELECT count(*) FROM book_snapshots WHERE pair = %s "
                      "AND reason = 'start' AND taken_at > %s", GONE, relisted_at) == 1,
        what="a snapshot at once",
    )  # fmt: skip
    await eventually(lambda: count(db, "SELECT count(*) FROM book_events WHERE pair = %s "
                                   "AND received_at > %s", GONE, relisted_at) > 0,
                     what="the pair's events again")  # fmt: skip
    assert sample("recorder_pairs_followed") == 2
    await eventually(lambda: coverage_of(db)[GONE].last_listed is None, what="listed again")

    # Nothing of the tape is missing, the delisted pair's included.
    sim.pause()
    await sim.drained()
    truth = sorted((f.tid, f.pair, f.price, f.amount) for f in sim.engine.trades)
    stored = "SELECT tid, pair, price, amount FROM trades ORDER BY tid"
    await eventually(lambda: query(db, stored) == truth, what="the whole tape")
    await stop_daemon(daemon, running)


async def test_a_configured_pair_not_listed_yet_is_waited_for_not_failed_on(
    sim: Simulator, db: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="recorder")
    config = daemon_config(tmp_path, sim, db, pairs=["BTC_USD", "LTC_USD"], metadata_refresh_s=0.3)
    daemon = Daemon(config)
    running = await start_daemon(daemon)
    answers = pair_list_answers()
    await eventually(lambda: pair_list_answers() >= answers + 3, what="three more refreshes")
    assert pair_tasks(daemon, "BTC_USD")
    assert not pair_tasks(daemon, "LTC_USD")
    assert not pair_tasks(daemon, "ETH_USD")  # listed, but not configured
    assert sample("recorder_pairs_followed") == 1
    unlisted = "a configured pair is not listed by the exchange; recording it once it is"
    assert [r.getMessage() for r in caplog.records].count(unlisted) == 1

    sim.list_pair("LTC_USD")
    await eventually(lambda: len(pair_tasks(daemon, "LTC_USD")) == 4, what="LTC_USD followed")
    await eventually(lambda: count(db, "SELECT count(*) FROM book_events WHERE pair = %s",
                                   "LTC_USD") > 0, what="LTC_USD recorded")  # fmt: skip
    assert sample("recorder_pairs_followed") == 2
    await stop_daemon(daemon, running)

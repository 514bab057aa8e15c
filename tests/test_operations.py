"""The shipped monitoring against a live recorder: every alert fires on its fault and resolves.

One live run: the simulator (in this process), an embedded PostgreSQL of the test's own, a
`recorder run` process, Debian's Alertmanager, and Debian's Prometheus configured from
deploy/prometheus/prometheus.yml with the shipped rules, time-scaled (a minute of the rules
is a second here: tests/harness/monitoring.py says exactly what changes). Faults are made
one after another, each the real thing: the exchange answering 429 to everything, book
events withheld, the market gone quiet, an exchange outage, the database crashed, the spool
directory made unwritable, a table the writer may no longer write, the recorder killed.
Each alert must be firing in Prometheus (/api/v1/alerts) and received by Alertmanager
(/api/v2/alerts), and gone from both once its fault is over.

With `-s` the test prints the measured times as the table of docs/operations.md, "Alerts":
    .venv/bin/pytest tests/test_operations.py -s -q
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest

from recorder.sim.server import SimSettings, Simulator, run_sim
from tests.harness import debian_tools
from tests.harness.config import write_config
from tests.harness.monitoring import (
    NOT_YET,
    PROMETHEUS_DIR,
    SCALE,
    Alertmanager,
    Prometheus,
    alert_names,
    prometheus_config,
)
from tests.harness.ports import free_port
from tests.harness.postgres import EmbeddedPostgres, query
from tests.harness.recorder_process import RecorderProcess
from tests.harness.waiting import eventually

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "recorder.json"
PAIR = "BTC_USD"
POLL_S = 0.25
FIRE_TIMEOUT_S = 120.0

RECORDER_SETTINGS = {
    "pairs": [PAIR],
    # A full snapshot of a deep book every second: drift is checked every second, and a
    # database that is down (early in the run, while the book is still deep) sees thousands
    # of rows a second pile up (the backlog alert's
    # threshold is 10,000 rows, a count the time scaling leaves as it ships).
    "snapshot_interval_s": 1,
    "trades_poll_interval_s": 0.5,
    "candles_poll_interval_s": 1,
    "candle_types": ["1"],
}
EXCHANGE_SETTINGS = {
    # Slow enough that the trade backfill is still running when the test turns on the 429s.
    "public_calls_per_s": 20,
    "stream_backoff_max_s": 2,
    # A withheld pair is resubscribed after this long: the drift alert has time to fire.
    "stream_silence_s": 12,
}


def tool(get: object) -> Path:
    try:
        return get()  # type: ignore[operator,no-any-return]
    except debian_tools.ToolUnavailable as exc:
        if os.environ.get("CI"):
            pytest.fail(f"{exc} (CI must run this check)")
        pytest.skip(str(exc))


@dataclass
class Episode:
    """One alert's life in the run, in seconds of the test's monotonic clock."""

    fault: str
    fault_at: float = 0.0
    fired_at: float = 0.0
    received_at: float = 0.0
    fault_over_at: float = 0.0
    resolved_at: float = 0.0
    cleared_at: float = 0.0


@dataclass
class AlertWatch:
    """Looks at Prometheus and Alertmanager while the test waits, and notes when each alert
    fires and ends there."""

    prometheus: Prometheus
    alertmanager: Alertmanager
    firing: set[str] = field(default_factory=set)
    received: set[str] = field(default_factory=set)
    episodes: dict[str, Episode] = field(default_factory=dict)

    async def poll(self) -> None:
        """One look at both: note each alert's first firing, receipt and end."""
        with suppress(*NOT_YET):
            states = await self.prometheus.alerts()
            active = await self.alertmanager.active()
            now = time.monotonic()
            self.firing = {name for name, state in states.items() if state == "firing"}
            self.received = set(active)
            for name, episode in self.episodes.items():
                if not episode.fired_at and name in self.firing:
                    episode.fired_at = now
                if not episode.received_at and name in self.received:
                    episode.received_at = now
                if episode.fault_over_at and not episode.resolved_at and name not in states:
                    episode.resolved_at = now
                if episode.fault_over_at and not episode.cleared_at and name not in active:
                    episode.cleared_at = now

    def fault(self, fault: str, *names: str) -> None:
        now = time.monotonic()
        for name in names:
            assert name not in self.episodes, f"{name} was made to fire already"
            self.episodes[name] = Episode(fault, fault_at=now)

    async def fired(self, *names: str) -> None:
        async def all_fired_and_received() -> bool:
            await self.poll()
            return all(self.episodes[n].fired_at and self.episodes[n].received_at for n in names)

        await eventually(all_fired_and_received, timeout_s=FIRE_TIMEOUT_S, interval_s=POLL_S,
                         what=f"{names} firing and received; firing: {self.firing}")  # fmt: skip

    def fault_over(self, *names: str) -> None:
        now = time.monotonic()
        for name in names:
            self.episodes[name].fault_over_at = now

    async def resolved(self, *names: str) -> None:
        async def all_resolved() -> bool:
            await self.poll()
            return all(self.episodes[n].resolved_at and self.episodes[n].cleared_at for n in names)

        await eventually(all_resolved, timeout_s=FIRE_TIMEOUT_S, interval_s=POLL_S,
                         what=f"{names} resolved; still firing: {self.firing}")  # fmt: skip

    def table(self) -> str:
        lines = [
            "| Alert | Fault made in the test | Fired after | Resolved after |",
            "|---|---|---|---|",
        ]
        for name, e in sorted(self.episodes.items(), key=lambda item: item[1].fault_at):
            fired = max(e.fired_at, e.received_at) - e.fault_at
            resolved = max(e.resolved_at, e.cleared_at) - e.fault_over_at
            lines.append(f"| `{name}` | {e.fault} | {fired:.0f} s | {resolved:.0f} s |")
        return "\n".join(lines)


@asynccontextmanager
async def monitoring(tmp_path: Path, target: str) -> AsyncIterator[tuple[Prometheus, Alertmanager]]:
    alertmanager_binary = tool(debian_tools.alertmanager)
    prometheus_binary = tool(debian_tools.prometheus_server)
    alertmanager = Alertmanager(alertmanager_binary, tmp_path / "alertmanager")
    prometheus: Prometheus | None = None
    try:
        am_url = await alertmanager.listening()
        directory = tmp_path / "prometheus"
        directory.mkdir()
        config = prometheus_config(
            directory, target=target, alertmanager=am_url.removeprefix("http://")
        )
        prometheus = Prometheus(prometheus_binary, config, directory)
        await prometheus.listening()
        yield prometheus, alertmanager
    finally:
        if prometheus is not None:
            prometheus.stop()
        alertmanager.stop()


def set_immutable(directory: Path, immutable: bool) -> None:
    """chattr +i: nothing can be created in the directory, not even by root (the test may
    run as root, for whom a chmod changes nothing)."""
    chattr = shutil.which("chattr") or "/usr/bin/chattr"
    subprocess.run([chattr, "+i" if immutable else "-i", str(directory)], check=immutable)


async def backfilling(recorder: RecorderProcess) -> bool:
    samples = await recorder.metrics()
    return samples.get(f'recorder_backfill_in_progress{{pair="{PAIR}"}}') == 1.0


async def test_every_alert_fires_on_its_fault_reaches_alertmanager_and_resolves(
    own_pg: EmbeddedPostgres, tmp_path: Path
) -> None:
    started = time.time()
    settings = SimSettings(
        seed=21,
        pairs=(PAIR,),
        rate_per_s=20,
        history_hours=12,
        history_events_per_hour=3600,
        max_page=50,
        book_orders=3000,
    )
    async with run_sim(settings) as sim:
        # A port fixed for the run: the recorder is killed and started again, and Prometheus
        # must find it where it was (one target, one `instance`).
        listen = f"127.0.0.1:{free_port()}"
        config = write_config(
            tmp_path / "recorder.toml",
            base_url=sim.base_url,
            dsn=own_pg.dsn,
            data_dir=tmp_path / "data",
            exchange=EXCHANGE_SETTINGS,
            recorder=RECORDER_SETTINGS,
            metrics_listen=listen,
            log_format="json",
        )
        recorder = RecorderProcess(config)
        async with monitoring(tmp_path, listen) as (prometheus, alertmanager):
            watch = AlertWatch(prometheus, alertmanager)
            try:
                recorder.start()
                await run_faults(sim, own_pg, recorder, prometheus, watch, tmp_path)
                await check_rules_and_dashboard(prometheus, started)
            finally:
                recorder.kill_if_running()
                set_immutable(tmp_path / "data" / "spool", False)
    shipped = alert_names([PROMETHEUS_DIR / "alerts.yml"])
    assert sorted(watch.episodes) == sorted(shipped), "an alert was never made to fire"
    print(f"\nAlerts of deploy/prometheus/alerts.yml, durations divided by {SCALE}:")
    print(watch.table())
    print(f"live run: {time.time() - started:.0f} s")


async def run_faults(
    sim: Simulator,
    pg: EmbeddedPostgres,
    recorder: RecorderProcess,
    prometheus: Prometheus,
    watch: AlertWatch,
    tmp_path: Path,
) -> None:
    # 1. The exchange answers 429 to every REST call while the trade backfill runs.
    await recorder.wait_until(
        lambda: backfilling(recorder), timeout_s=60, what="the trade backfill running"
    )
    # Every call refused: the backfill stalls where it is (and stays in progress).
    sim.faults.update({"rate_429": 1.0})
    watch.fault("REST calls answered 429: all, then three in four",
                "RecorderBackfillStuck", "RecorderExchangeErrors")  # fmt: skip
    await watch.fired("RecorderBackfillStuck")
    # Then three calls in four: the recorder's retries go on at their usual pace (a success
    # resets the backoff), so each scaled rate window holds calls to count.
    sim.faults.update({"rate_429": 0.75})
    await watch.fired("RecorderExchangeErrors")
    sim.faults.update({"rate_429": 0.0})
    watch.fault_over("RecorderBackfillStuck", "RecorderExchangeErrors")
    await watch.resolved("RecorderBackfillStuck", "RecorderExchangeErrors")

    # 2. The database crashes; while it is down, the spool directory stops taking files.
    await asyncio.to_thread(pg.crash)
    watch.fault("PostgreSQL stopped (immediate shutdown)",
                "RecorderDatabaseDown", "RecorderWriteBufferGrowing")  # fmt: skip
    await watch.fired("RecorderDatabaseDown")
    spool = tmp_path / "data" / "spool"
    set_immutable(spool, True)
    watch.fault("spool directory made immutable while the database is down",
                "RecorderSpoolUnwritable")  # fmt: skip
    await watch.fired("RecorderSpoolUnwritable", "RecorderWriteBufferGrowing")
    set_immutable(spool, False)
    watch.fault_over("RecorderSpoolUnwritable")
    # Only a spill clears recorder_spool_writable: with the database back first, the rows
    # would be committed instead and the gauge left at 0 (see the report of this branch).
    await watch.resolved("RecorderSpoolUnwritable")
    await asyncio.to_thread(pg.restart)
    watch.fault_over("RecorderDatabaseDown", "RecorderWriteBufferGrowing")
    await watch.resolved(
        "RecorderSpoolUnwritable", "RecorderDatabaseDown", "RecorderWriteBufferGrowing"
    )

    # 3. The pair's book events withheld from every stream connection (the stream still up).
    for sid in sim.open_sockets():
        await sim.silence(sid, PAIR)
    watch.fault(f"{PAIR}'s book events withheld from every stream connection",
                "RecorderBookDrift")  # fmt: skip
    await watch.fired("RecorderBookDrift")
    # The recorder resubscribes a silent pair by itself (exchange.stream_silence_s).
    await eventually(lambda: resubscribed(sim), timeout_s=60, what="the pair resubscribed")
    watch.fault_over("RecorderBookDrift")

    # 4. The market goes quiet: no book event at all, the stream connected.
    sim.pause()
    watch.fault("the order flow paused (no book event, stream connected)", "RecorderNoEvents")
    await watch.fired("RecorderNoEvents")
    sim.resume()
    watch.fault_over("RecorderNoEvents")

    # 5. An exchange outage: REST answers 502, socket.io refuses every connection.
    sim.start_outage(3600)
    watch.fault("exchange outage (REST 502, socket.io refused)", "RecorderStreamDown")
    await watch.fired("RecorderStreamDown")
    sim.faults.outage_until_s = 0.0
    watch.fault_over("RecorderStreamDown")
    await watch.resolved("RecorderBookDrift", "RecorderNoEvents", "RecorderStreamDown")

    # 6. A table the writer may no longer write (a grant taken back): its rows are held.
    await asyncio.to_thread(
        execute, pg.dsn, "REVOKE INSERT, UPDATE ON candles FROM recorder_writer"
    )
    watch.fault("INSERT and UPDATE on candles revoked from recorder_writer",
                "RecorderRowsHeld", "RecorderTaskRestarting")  # fmt: skip
    await watch.fired("RecorderRowsHeld", "RecorderTaskRestarting")
    await asyncio.to_thread(execute, pg.dsn, "GRANT INSERT, UPDATE ON candles TO recorder_writer")
    watch.fault_over("RecorderTaskRestarting")

    # 7. The recorder is killed; started again, it also offers the held rows again.
    await asyncio.to_thread(recorder.kill)
    watch.fault("recorder SIGKILLed", "RecorderDown")
    await watch.fired("RecorderDown")
    recorder.start()
    watch.fault_over("RecorderDown", "RecorderRowsHeld")
    await watch.resolved("RecorderDown", "RecorderRowsHeld", "RecorderTaskRestarting")
    assert query(pg.dsn, "SELECT count(*) FROM candles")[0][0] > 0

    # 8. A pair only a recorder that died followed: its lease expired and nobody holds it.
    await asyncio.to_thread(
        execute,
        pg.dsn,
        "INSERT INTO leases (resource, slot, owner, acquired_at, renewed_at, expires_at) "
        "VALUES ('GONE_USD', 0, gen_random_uuid(), now() - interval '1 hour', "
        "now() - interval '1 minute', now() - interval '30 seconds')",
    )
    watch.fault("an expired lease of a pair no live recorder follows", "RecorderPairUnowned")
    await watch.fired("RecorderPairUnowned")
    await asyncio.to_thread(execute, pg.dsn, "DELETE FROM leases WHERE resource = 'GONE_USD'")
    watch.fault_over("RecorderPairUnowned")
    await watch.resolved("RecorderPairUnowned")

    # No alert watches malformed input (it is kept and counted, never fatal), but a panel
    # does: the exchange sends some, and Prometheus must have scraped the count.
    await sim.burst(3, 3)
    scraped = "count_over_time(recorder_malformed_messages_total[10s]) >= 3"  # rate() needs 2
    await eventually(
        lambda: prometheus.query(scraped), timeout_s=60, interval_s=POLL_S, what="malformed seen"
    )


async def check_rules_and_dashboard(prometheus: Prometheus, started: float) -> None:
    """Every rule evaluated without error; every panel of the dashboard had data during the
    run (what Grafana shows over the run's time range), with its variable resolved."""
    unhealthy = [(r["name"], r.get("lastError")) for r in await prometheus.rules()]
    assert [(name, error) for name, error in unhealthy if error] == []
    dashboard = json.loads(DASHBOARD.read_text())
    (variable,) = dashboard["templating"]["list"]
    metric = variable["definition"].removeprefix("label_values(").split(",")[0]
    pairs = await prometheus.label_values(variable["name"], metric)
    assert pairs == [PAIR]
    end = time.time()
    empty = []
    for expr in panel_exprs(dashboard):
        promql = expr.replace("$__rate_interval", "4s").replace("$pair", "|".join(pairs))
        if not await prometheus.query_range(promql, started, end):
            empty.append(expr)
    assert empty == [], "dashboard panels without data during the run"


def panel_exprs(node: object) -> list[str]:
    """The PromQL of every panel, rows' panels included."""
    if isinstance(node, dict):
        if isinstance(node.get("expr"), str):
            return [node["expr"]]
        return [expr for value in node.values() for expr in panel_exprs(value)]
    if isinstance(node, list):
        return [expr for item in node for expr in panel_exprs(item)]
    return []


def execute(dsn: str, statement: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(statement.encode())


def resubscribed(sim: Simulator) -> bool:
    sockets = set(sim.open_sockets())
    return bool(sockets) and sockets <= set(sim.subscribers(f"book_{PAIR}"))

"""What bench/ingest.py and bench/footprint.py share: real processes and how to read them.

- `postgres_server()`: an embedded PostgreSQL (pgserver) in a temporary directory;
  `fresh_database()` one database on it per measured run, dropped afterwards.
- `SimProcess`: `recorder sim` as its own process, steered through its admin API.
- `RecorderProcess`: `recorder run --config FILE` as its own process (config written here),
  so its RSS and CPU can be read from /proc, its metrics from its endpoint.
- `/proc` readers (`rss_mb`, `cpu_seconds`, `tree_cpu_seconds`, `machine_busy_seconds`,
  `load_average`), a Prometheus scrape, least squares, and `check_recording()`: the
  database against the simulator's own record, so that no figure comes from a broken run.

The PostgreSQL, the recorder process, its config and the waiting are the test harness's
(tests/harness/), so that a bench measures the same parts the tests check.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import psycopg

# Run as a script, bench/ is on sys.path but the repository is not: the harness is.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from recorder.config import ExchangeConfig
from tests.harness import postgres as _postgres
from tests.harness.config import write_config
from tests.harness.ports import free_port as free_port  # bench/storage.py, bench/catchup.py
from tests.harness.postgres import EmbeddedPostgres, count_rows, embedded_postgres, query
from tests.harness.recorder_process import RecorderProcess as _RecorderProcess
from tests.harness.recorder_process import samples_of
from tests.harness.waiting import eventually

# --- PostgreSQL ---------------------------------------------------------------------------

Postgres = EmbeddedPostgres


@contextmanager
def postgres_server() -> Iterator[EmbeddedPostgres]:
    """An embedded PostgreSQL for the whole bench run, deleted at its end."""
    with embedded_postgres("recorder-bench-pg-") as server:
        yield server


@contextmanager
def fresh_database(server_dsn: str, label: str) -> Iterator[str]:
    with _postgres.fresh_database(server_dsn, label, prefix="bench") as dsn:
        yield dsn


def execute(dsn: str, statement: str) -> None:
    with psycopg.connect(dsn) as conn:
        conn.execute(statement.encode())


# --- the simulator --------------------------------------------------------------------------


class SimProcess:
    """`recorder sim` with no history, the order flow paused until `resume()`."""

    def __init__(self, rate_per_s: float, pairs: list[str], seed: int = 1) -> None:
        command = [
            sys.executable, "-m", "recorder", "sim", "--port", "0", "--seed", str(seed),
            "--history-hours", "0", "--rate", str(rate_per_s), "--pairs", ",".join(pairs),
            "--paused",
        ]  # fmt: skip
        self.pairs = pairs
        self.process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        while "serving" not in line:
            if not line:
                raise RuntimeError("recorder sim did not start")
            line = self.process.stdout.readline()
        self.url = line.split()[3]

    @property
    def pid(self) -> int:
        return self.process.pid

    async def admin(self, http: aiohttp.ClientSession, action: str) -> dict[str, Any]:
        method = http.get if action == "state" or action.startswith("book/") else http.post
        async with method(f"{self.url}/admin/{action}") as response:
            return json.loads(await response.text(), parse_float=Decimal)  # type: ignore[no-any-return]

    async def pause_and_drain(self, http: aiohttp.ClientSession, timeout_s: float = 120) -> None:
        """Stop the flow and wait until every event made has left for the sockets."""
        await self.admin(http, "pause")

        async def drained() -> bool:
            state = await self.admin(http, "state")
            return bool(
                state["outbox"] == 0
                and state["socket_backlog"] == 0
                and state["emitted_count"] == state["event_count"]
            )

        await eventually(
            drained, timeout_s=timeout_s, what="the simulator's outbox and sockets to drain"
        )

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@contextmanager
def sim_process(rate_per_s: float, pairs: list[str]) -> Iterator[SimProcess]:
    sim = SimProcess(rate_per_s, pairs)
    try:
        yield sim
    finally:
        sim.stop()


# --- the recorder ---------------------------------------------------------------------------


class RecorderProcess(_RecorderProcess):
    """`recorder run` against `sim` and `dsn`, with the config's defaults except the pairs
    (and the `[exchange]` settings given, such as `stream_connections`)."""

    def __init__(
        self,
        work_dir: Path,
        sim: SimProcess,
        dsn: str,
        exchange: Mapping[str, Any] | None = None,
        **settings: Any,
    ) -> None:
        self.work_dir = work_dir
        self.pairs = sim.pairs
        exchange = dict(exchange or {})
        self.connections = int(
            exchange.get("stream_connections", ExchangeConfig().stream_connections)
        )
        """How many stream connections it keeps (the config's default unless given)."""
        config = write_config(
            work_dir / "recorder.toml",
            base_url=sim.url,
            dsn=dsn,
            data_dir=work_dir / "data",
            exchange=exchange,
            recorder={"pairs": sim.pairs, **settings},
            log_format="json",
        )
        super().__init__(config)

    def migrate(self) -> None:
        """Apply the migrations before the first start (so the bench can alter a table)."""
        subprocess.run(
            [sys.executable, "-m", "recorder", "migrate", "--config", str(self.config_path)],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    async def wait_recording(self, http: aiohttp.ClientSession, dsn: str) -> None:
        """Until every stream connection is up and every pair has its snapshot after the
        connect: the one the stream followed (`in_sync`), where book_at starts. The start's
        first snapshot goes out before the stream connects and book_at passes over it
        (migration 0019); a run that made its events ahead (--source node) and started them
        before the resync's snapshot was taken would have that snapshot show the engine's
        book after every event, which no cut can match."""

        async def ready() -> bool:
            url = self.metrics_url
            if url is None:
                return False
            samples = await scrape(http, url)
            snapshotted = query(dsn, "SELECT count(DISTINCT pair) FROM book_snapshots "
                                "WHERE in_sync")  # fmt: skip
            return samples.get(
                "recorder_stream_connections_up", 0
            ) == self.connections and snapshotted[0][0] == len(self.pairs)

        await self.wait_until(ready, timeout_s=120, what="the recorder to record",
                              ignoring=(aiohttp.ClientError, psycopg.Error))  # fmt: skip
        # Its subscriptions reach the simulator a moment after the connect; the simulator
        # in its own process says nothing of them to wait on.
        await asyncio.sleep(0.5)


@contextmanager
def recorder_process(
    work_dir: Path,
    sim: SimProcess,
    dsn: str,
    exchange: Mapping[str, Any] | None = None,
    **settings: Any,
) -> Iterator[RecorderProcess]:
    recorder = RecorderProcess(work_dir, sim, dsn, exchange, **settings)
    try:
        yield recorder
    finally:
        recorder.kill_if_running()


# --- reading processes ----------------------------------------------------------------------


def rss_mb(pid: int) -> float:
    """Resident set size of a process (Linux /proc), in MiB."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def _stat_fields(pid: int) -> list[str]:
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().rsplit(")", 1)[1].split()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux /proc)."""
    fields = _stat_fields(pid)
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(parent: int) -> float:
    """CPU time of `parent` and its live children (PostgreSQL's postmaster and backends)."""
    total = cpu_seconds(parent)
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = _stat_fields(int(entry))
            if int(fields[1]) == parent:
                total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, IndexError):
            continue  # the process ended meanwhile
    return total


def cpu_now(pids: dict[str, int], postmaster: int | None = None) -> dict[str, float]:
    """CPU seconds so far of each named process, and of PostgreSQL as "postgres"."""
    now = {name: cpu_seconds(pid) for name, pid in pids.items()}
    if postmaster is not None:
        now["postgres"] = tree_cpu_seconds(postmaster)
    return now


def machine_busy_seconds() -> float:
    """CPU seconds every core of the machine has spent busy so far, whoever's process (Linux
    /proc/stat: user, nice, system, irq, softirq and steal time)."""
    with open("/proc/stat") as stat:
        fields = stat.readline().split()  # the "cpu" line: all cores
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[1:9])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def load_average() -> str:
    """/proc/loadavg: the 1, 5 and 15 minute load averages, runnable/all tasks, last pid."""
    with open("/proc/loadavg") as loadavg:
        return loadavg.read().strip()


def cpu_shares(start: dict[str, float], end: dict[str, float], seconds: float) -> dict[str, float]:
    """CPU seconds per second between two `cpu_now()` readings (1.0 = one core busy)."""
    return {name: (end[name] - start[name]) / seconds for name in start}


async def scrape(http: aiohttp.ClientSession, url: str) -> dict[str, float]:
    """Every sample of a Prometheus endpoint, summed per metric name over its labels,
    plus `name{label="value",...}` keys for each labelled sample."""
    async with http.get(url) as response:
        return samples_of(await response.text())


def least_squares_slope(xs: list[float], ys: list[float]) -> float:
    n = len(xs)
    mean_x, mean_y = sum(xs) / n, sum(ys) / n
    spread = sum((x - mean_x) ** 2 for x in xs)
    if spread == 0:
        return 0.0
    return sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / spread


def percentile(values: list[float], share: float) -> float:
    """The nearest-rank percentile of `values` (need not be sorted)."""
    ordered = sorted(values)
    rank = max(1, round(share * len(ordered) + 0.5)) if share < 1 else len(ordered)
    return ordered[min(rank, len(ordered)) - 1]


# --- is the recording right? ----------------------------------------------------------------


async def check_recording(
    http: aiohttp.ClientSession, sim: SimProcess, dsn: str, timeout_s: float = 120
) -> str:
    """After `sim.pause_and_drain()`: wait until the database holds every book event and
    fill the simulator made (it had no history and the recorder was subscribed before the
    flow started) and the tape caught up, then compare each pair's book rebuilt by book_at
    with the engine's. Returns a one-line verdict; raises if the recording is wrong."""
    state = await sim.admin(http, "state")
    made, trades = state["event_count"], state["trades"]

    async def complete() -> bool:
        return (
            count_rows(dsn, "book_events") >= made
            and count_rows(dsn, "book_fills") >= trades
            and count_rows(dsn, "trades") >= trades
        )

    with suppress(AssertionError):  # reported below with the counts
        await eventually(complete, timeout_s=timeout_s,
                         what="every event, fill and trade in the database")  # fmt: skip
    counts = {table: count_rows(dsn, table) for table in
              ("book_events", "book_fills", "trades", "raw_messages")}  # fmt: skip
    expected = {"book_events": made, "book_fills": trades, "trades": trades, "raw_messages": 0}
    if counts != expected:
        raise RuntimeError(f"recording incomplete: database {counts}, simulator {expected}")
    # The tables grew from empty within a minute, before autovacuum analysed them: planned
    # on an empty table's estimates, book_at's joins become nested loops over every event
    # after the snapshot (at 5,000 events/s the check ran for more than ten minutes).
    with psycopg.connect(dsn) as conn:
        conn.execute("ANALYZE book_events, book_fills, book_snapshots, book_snapshot_orders")
    for pair in sim.pairs:
        truth = await sim.admin(http, f"book/{pair}")
        engine_book = sorted(
            (side, int(o["id"]), Decimal(o["price"]), Decimal(o["amount"]))
            for side in ("buy", "sell")
            for o in truth[side]
        )
        rebuilt = query(dsn, "SELECT side, order_id, price, amount FROM book_at(%s, now()) "
                        "ORDER BY side, order_id", pair)  # fmt: skip
        if sorted(rebuilt) != engine_book:
            raise RuntimeError(f"book_at({pair}) differs from the simulator's book")
    return (
        f"{made} events, {trades} fills and trades stored, none refused, book_at of "
        f"{len(sim.pairs)} pair(s) equal to the engine's"
    )

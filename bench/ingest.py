#!/usr/bin/env python3
"""Ingest benchmark: book events per second the recorder commits, against a bare client,
and what each redundant stream connection costs.

    .venv/bin/python bench/ingest.py [--rates 1000,2000,3000,5000,10000,max] [--seconds 10]
                                     [--pairs BTC_USD,ETH_USD] [--connections 1,2]
                                     [--rounds 2] [--profile DIR] [--work-dir DIR]
                                     [--source sim|node] [--max-events 300000]

For each asked rate of the simulator's order flow, runs side by side, each against a fresh
`recorder sim` process (no history, flow paused until the subscriber is ready):

  bare client   one python-socketio AsyncClient subscribed to every pair's channel that only
                counts events (and notes receipt minus the event's `date`): the ceiling of
                the socket path on this machine. Once per rate.
  recorder      a real `recorder run` process (defaults of the config, the pairs given, and
                `exchange.stream_connections` set to each count of --connections) on a
                fresh database of one embedded PostgreSQL; committed rows/s read from its
                `recorder_rows_written_total{table}` counter over the same window.

The recorder runs go in rounds (--rounds): each round runs every connection count once, and
the order is reversed from one round to the next and from one rate to the next (1,2 then
2,1, ...), so that a drift in the load of a shared machine weighs on every count alike.
CPU is read from /proc for each process apart (user + system time over the window, in
cores): the recorder's own process, the simulator (which pays for every subscriber it
sends to) and PostgreSQL; and the machine's busy time, so that what other processes took
meanwhile shows as "others".

"max" asks for 1,000,000 events/s: the simulator then runs as fast as its one subscriber
takes events (it waits while a socket has 5,000 packets queued), so that step measures each
subscriber's own ceiling.

Event-to-commit latency: before the recorder first starts, the bench adds
`committed_at timestamptz DEFAULT clock_timestamp()` to its `book_events` (the writer names
its columns, so the default fills it when the writer's INSERT ... SELECT from its staging
table runs, inside the flush's transaction, just before its commit). Latency is
committed_at minus the event's `date` (the simulator's wall clock, same host), over the
events dated inside the measured window. Polling the table instead would add the polling
interval to every figure.

Each recorder run ends with the flow paused, the simulator drained and the database checked
against the simulator (every event, fill and trade stored once; book_at equal to the
engine's book), every connection's counter of events received equal to the events made
(each was sent on every connection) and the counters of first copies adding up to them
(each was kept once), and with SIGTERM (exit code 0). A run that fails this check is
reported as FAILED beside its figures, with the stream connections it lost (from its log),
and the bench exits 1, so that a broken recording's figures are never taken for a good
one's.

--source node: the simulator's python-socketio side tops out below what a bare client
takes, so against it the ratio measures the simulator. With this, each run's simulator
(no flow of its own) makes the run's events ahead with its engine (POST /admin/ahead), so
its REST answers, tape and book stay the truth the recording is checked against, and
bench/node_source.js, a Node socket.io 4 server, sends them (the packet texts unparsed, so
every number keeps its digits), flat out as fast as its subscribers take them, or paced at
the asked rate with each event dated when it is due (so latencies mean what they do with
the simulator). Flat out, an event is dated when made: no latency is shown. The events made
ahead: paced, the rate times the warm-up and window plus 2 s; flat out, --max-events for the
bare client (its window ends early when they are all in), and for the recorder what the
bare client took in the warm-up and window (then 1.5 times the fastest recorder run's pace),
so that it does not spend minutes on a backlog after its window. The recorder's periodic
snapshots are off (made ahead, the engine's book is ahead of the stream); its first one is
taken before the events are made. First, the source's own ceiling: what it sends to 1 (and
to as many as --connections' largest) raw WebSocket readers (bench/raw_reader.js), events
cycled. A last table sets each recorder run beside the bare client: rates, CPU per 1,000
events/s, latencies. The machine's load changes within minutes: --bare-each-run runs the
bare client again right after each recorder run, and each run is compared with that one;
with --bare-connections same, that bare client holds as many connections as the recorder
run, each receiving every event (its rate is one connection's, its CPU all of them), so
that the second copy's socket work is on both sides.

--profile DIR samples each recorder run's window with py-spy (`pip install py-spy` into
.venv; 100 Hz, by function), keeps the collapsed stacks in DIR and prints, per rate, the
functions whose CPU grows most from the first connection count to the others. py-spy
takes CPU of its own, so CPU figures of a profiled run are not comparable with an
unprofiled one's. --work-dir DIR keeps each recorder run's config and log.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from statistics import mean

import aiohttp
import socketio

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _profile
from _node_source import MAKE_RATE_FLOOR, NodeSource, node_source, raw_reader
from _recorder_procs import (
    Postgres,
    RecorderProcess,
    SimProcess,
    check_recording,
    cpu_now,
    cpu_shares,
    eventually,
    execute,
    fresh_database,
    load_average,
    machine_busy_seconds,
    percentile,
    postgres_server,
    query,
    recorder_process,
    scrape,
    sim_process,
)

MAX_RATE = 1_000_000.0
WARMUP_S = 2.0
SAMPLE_EVERY_S = 0.25
KEEPS_UP = 0.95
"""The recorder keeps up while it commits at least this share of what the bare client got
(or of what the simulator's flow made while it ran)."""
PROFILE_TOP = 20


@dataclass
class BareResult:
    made_per_s: float
    received_per_s: float
    latency_p50_ms: float
    latency_p99_ms: float
    cpu: dict[str, float]
    """CPU seconds per second: "client" (this process), "sim" and "source" (the simulator
    and, with --source node, the Node server sending)."""
    connections: int = 1


@dataclass
class RecorderResult:
    connections: int
    round: int
    made_per_s: float
    events_per_s: float
    fills_per_s: float
    latency_p50_ms: float
    latency_p99_ms: float
    cpu: dict[str, float]
    """CPU seconds per second: "recorder", "sim", "source" (the simulator and, with
    --source node, the Node server sending), "postgres", "bench" (this process), "machine"
    (every core's busy time) and "others" (the machine less the processes named)."""
    copies_per_s: list[float]
    """Book events received per second by each connection, copies of events another
    connection brought first included (`recorder_stream_events_total{connection}`)."""
    first_shares: list[float]
    """Each connection's share of the events it brought first (the copies recorded)."""
    flushes_per_s: float
    max_socket_backlog: int
    max_buffered_rows: int
    load: tuple[float, float]
    """The 1-minute load average at the window's start and end."""
    verdict: str
    recorded: bool
    """The recording passed every check (every event stored once, book_at equal, ...)."""
    drops: list[str]
    """Stream connections dropped during the run (`connection_drops`)."""
    profile: Path | None = None
    beside: BareResult | None = None
    """With --bare-each-run: the bare client's run right after this one, compared with it."""


@dataclass
class RateRuns:
    rate: float
    bare: BareResult
    recorder: list[RecorderResult] = field(default_factory=list)

    def of(self, connections: int) -> list[RecorderResult]:
        return sorted((r for r in self.recorder if r.connections == connections),
                      key=lambda r: r.round)  # fmt: skip


class Feed:
    """Where a run's book events come from: the simulator's own socket.io side ("sim"), or
    the simulator's engine making them ahead and bench/node_source.js sending them ("node").
    Either way the simulator serves REST and holds the truth the recording is checked
    against."""

    def __init__(self, sim: SimProcess, rate: float, node: NodeSource | None, events: int) -> None:
        self.sim = sim
        self.rate = rate
        self.node = node
        self.events = events
        """node: how many events are made ahead (the run's whole flow)."""
        self.schedule: tuple[float, float] | None = None

    @property
    def socket_url(self) -> str:
        return self.node.url if self.node else self.sim.url

    @property
    def pids(self) -> dict[str, int]:
        return {"sim": self.sim.pid, **({"source": self.node.pid} if self.node else {})}

    @property
    def dated_when_sent(self) -> bool:
        """An event's `date` is when it was sent (latencies mean something): always from the
        simulator; from the node source only when paced (flat out, when it was made)."""
        return self.node is None or self.rate < MAX_RATE

    async def ready(self, http: aiohttp.ClientSession, sockets: int) -> None:
        """After the subscriber(s) asked for every channel: until the source has them."""
        if self.node is not None:
            await self.node.wait_subscribed(http, sockets, [f"book_{p}" for p in self.sim.pairs])
        else:
            # Subscriptions reach the simulator a moment after the connect; the simulator
            # in its own process says nothing of them to wait on.
            await asyncio.sleep(0.5)

    async def begin(self, http: aiohttp.ClientSession) -> None:
        if self.node is None:
            await self.sim.admin(http, "resume")
            return
        if self.rate < MAX_RATE:
            # Dated by their schedule, which begins once the making is sure to be done.
            lead_s = 2.0 + self.events / MAKE_RATE_FLOOR
            self.schedule = (time.time() + lead_s, self.rate)
        await self.node.load(http, self.sim, self.events, self.schedule)
        await self.node.start(http, self.schedule)
        if self.schedule is not None:
            await asyncio.sleep(max(0.0, self.schedule[0] - time.time()))

    async def progress(self, http: aiohttp.ClientSession) -> tuple[int, int]:
        """Events made (sim) or sent (node) so far, and the longest queue to a subscriber."""
        if self.node is None:
            state = await self.sim.admin(http, "state")
            return int(state["event_count"]), int(state["socket_backlog"])
        state = await self.node.state(http)
        return int(state["sent"]), max((s["queued"] for s in state["sockets"]), default=0)

    async def end(self, http: aiohttp.ClientSession) -> int:
        """Stop the flow, wait until every event left for the sockets; how many were sent."""
        if self.node is None:
            await self.sim.pause_and_drain(http)
            return int((await self.sim.admin(http, "state"))["emitted_count"])
        await self.node.wait_done(http)
        state = await self.node.state(http)
        if state["late_ms"] > 50 and self.schedule is not None:
            raise RuntimeError(f"the node source fell {state['late_ms']:.0f} ms behind its pace")
        return int(state["sent"])


@contextmanager
def feed(kind: str, rate: float, pairs: list[str], events: int = 0) -> Iterator[Feed]:
    if kind == "sim":
        with sim_process(rate, pairs) as sim:
            yield Feed(sim, rate, None, 0)
        return
    # The simulator's own flow stays off: the source sends what its engine makes ahead.
    with sim_process(0, pairs) as sim, node_source() as node:
        yield Feed(sim, rate, node, events)


async def bare_client(
    rate: float,
    pairs: list[str],
    seconds: float,
    source: str = "sim",
    events: int = 0,
    connections: int = 1,
) -> BareResult:
    """`connections` python-socketio clients in this process, each subscribed to every
    channel (so each receives every event, as each of the recorder's connections does);
    the rate and latencies are the first client's, the CPU all of them."""
    received = [0] * connections
    window: list[float] | None = None  # receipt minus `date`, seconds, inside the window
    every_event_in = asyncio.Event()

    def counter(index: int) -> Callable[[object], None]:
        def on_event(payload: object) -> None:
            received[index] += 1
            if index == 0 and window is not None and isinstance(payload, dict):
                window.append(time.time() - float(payload["date"]))
            if min(received) == events:
                every_event_in.set()

        return on_event

    with feed(source, rate, pairs, events) as source_:
        clients = [socketio.AsyncClient(reconnection=False) for _ in range(connections)]
        for index, client in enumerate(clients):
            for pair in pairs:
                client.on(f"book_{pair}", counter(index))
            await client.connect(source_.socket_url, transports=["websocket"])
            for pair in pairs:
                await client.call("subscribe", f"book_{pair}")
        pids = {"client": os.getpid(), **source_.pids}
        async with aiohttp.ClientSession() as http:
            await source_.ready(http, connections)
            await source_.begin(http)
            await asyncio.sleep(WARMUP_S)
            start_made, _ = await source_.progress(http)
            start_count, start_s = received[0], time.monotonic()
            start_cpu, window = cpu_now(pids), []
            # The node source has so many events: the window ends early when they are in.
            with suppress(TimeoutError):
                await asyncio.wait_for(every_event_in.wait(), seconds)
            latencies, window = window, None
            count, elapsed_s = received[0] - start_count, time.monotonic() - start_s
            cpu = cpu_shares(start_cpu, cpu_now(pids), elapsed_s)
            end_made, _ = await source_.progress(http)
            sent = await source_.end(http)
            # What left the source may still be in the kernel's socket buffers (megabytes
            # on loopback): wait for it, then for any surplus.
            with suppress(AssertionError):  # reported below with the counts
                await eventually(lambda: min(received) >= sent, timeout_s=60,
                                 what="every event sent at the bare client")  # fmt: skip
            await asyncio.sleep(0.5)
            if received != [sent] * connections:
                raise RuntimeError(f"bare client got {received} of {sent}")
            dated = source_.dated_when_sent
        for client in clients:
            await client.disconnect()
    cpu["source"] = cpu["sim"] + cpu.get("source", 0.0)
    return BareResult(
        made_per_s=(end_made - start_made) / elapsed_s,
        received_per_s=count / elapsed_s,
        latency_p50_ms=percentile(latencies, 0.50) * 1000 if dated else math.nan,
        latency_p99_ms=percentile(latencies, 0.99) * 1000 if dated else math.nan,
        cpu=cpu,
        connections=connections,
    )


CEILING_EVENTS = 50_000
"""Events the simulator makes for measuring the node source; sent over and over."""


async def source_ceiling(pairs: list[str], seconds: float, readers: int) -> tuple[float, float]:
    """Events per second the node source sends each of `readers` raw readers (the slowest
    one's), and the cores the source takes meanwhile: its own ceiling, nobody slow."""
    channels = [f"book_{p}" for p in pairs]
    with sim_process(0, pairs) as sim, node_source() as node:
        async with aiohttp.ClientSession() as http:
            await node.load(http, sim, CEILING_EVENTS)
            with ExitStack() as stack:
                taking = [stack.enter_context(raw_reader(node.url, channels))
                          for _ in range(readers)]  # fmt: skip
                await node.wait_subscribed(http, readers, channels)
                await node.start(http, repeat=True)
                await asyncio.sleep(WARMUP_S)
                start = [await r.events() for r in taking]
                start_s, start_cpu = time.monotonic(), cpu_now({"source": node.pid})
                await asyncio.sleep(seconds)
                end = [await r.events() for r in taking]
                elapsed_s = time.monotonic() - start_s
                cpu = cpu_shares(start_cpu, cpu_now({"source": node.pid}), elapsed_s)
                await node.stop(http)
    return min(b - a for a, b in zip(start, end, strict=True)) / elapsed_s, cpu["source"]


COMMITTED_EVENTS = 'recorder_rows_written_total{table="book_events"}'
COMMIT_LATENCY = """
    SELECT percentile_disc(0.5) WITHIN GROUP (ORDER BY committed_at - ts),
           percentile_disc(0.99) WITHIN GROUP (ORDER BY committed_at - ts)
    FROM book_events WHERE ts >= to_timestamp(%s) AND ts < to_timestamp(%s)
"""


def per_connection(name: str, connection: int) -> str:
    return f'{name}{{connection="{connection}"}}'


async def recorder_run(
    pg: Postgres,
    rate: float,
    pairs: list[str],
    seconds: float,
    work_dir: Path,
    connections: int,
    round_: int,
    profile_dir: Path | None,
    source: str = "sim",
    events: int = 0,
) -> RecorderResult:
    label = f"{'max' if rate >= MAX_RATE else f'{rate:.0f}'}_{connections}c_r{round_}"
    with (
        fresh_database(pg.dsn, f"ingest_{label}") as dsn,
        feed(source, rate, pairs, events) as source_,
        recorder_process(
            work_dir / label,
            source_.sim,
            dsn,
            {"stream_connections": connections, "socket_url": source_.socket_url},
            # Made ahead, the engine's book runs ahead of the node source's stream: a
            # snapshot while it sends would not match the events dated after it.
            **({"snapshot_interval_s": 3600} if source_.node else {}),
        ) as recorder,
    ):
        sim = source_.sim
        recorder.migrate()
        execute(dsn, "ALTER TABLE book_events "
                     "ADD COLUMN committed_at timestamptz DEFAULT clock_timestamp()")  # fmt: skip
        recorder.start()
        pids = {"recorder": recorder.pid, "bench": os.getpid(), **source_.pids}
        async with aiohttp.ClientSession() as http:
            await recorder.wait_recording(http, dsn)
            await source_.ready(http, connections)
            metrics_url = await recorder.serving_metrics()
            await source_.begin(http)
            await asyncio.sleep(WARMUP_S)
            profile = profile_dir / f"recorder_{label}.txt" if profile_dir else None
            profiler = _profile.start(recorder.pid, seconds, profile) if profile else None
            start_made, _ = await source_.progress(http)
            start_metrics = await scrape(http, metrics_url)
            start_s, start_wall_s = time.monotonic(), time.time()
            start_cpu = cpu_now(pids, pg.postmaster_pid())
            start_busy, start_load = machine_busy_seconds(), load_average()
            max_backlog = max_buffered = 0
            made, metrics = start_made, start_metrics
            while time.monotonic() - start_s < seconds:
                await asyncio.sleep(SAMPLE_EVERY_S)
                made, backlog = await source_.progress(http)
                metrics = await scrape(http, metrics_url)
                max_backlog = max(max_backlog, backlog)
                max_buffered = max(max_buffered, int(metrics["recorder_write_buffer_rows"]))
                if source_.node and metrics[COMMITTED_EVENTS] >= events:
                    break  # the node source's events are all in: the window ends with them
            elapsed_s, end_wall_s = time.monotonic() - start_s, time.time()
            cpu = cpu_shares(start_cpu, cpu_now(pids, pg.postmaster_pid()), elapsed_s)
            cpu["machine"] = (machine_busy_seconds() - start_busy) / elapsed_s
            cpu["others"] = cpu["machine"] - sum(
                cpu[name]
                for name in ("recorder", "sim", "postgres", "bench", "source")
                if name in cpu
            )
            cpu["source"] = cpu["sim"] + cpu.get("source", 0.0)
            end_load = load_average()
            if profiler is not None:
                await asyncio.to_thread(profiler.wait)

            def per_s(key: str) -> float:
                return (metrics.get(key, 0.0) - start_metrics.get(key, 0.0)) / elapsed_s

            def committed_per_s(table: str) -> float:
                return per_s(f'recorder_rows_written_total{{table="{table}"}}')

            copies = [
                per_s(per_connection("recorder_stream_events_total", c)) for c in range(connections)
            ]
            firsts = [
                per_s(per_connection("recorder_stream_first_events_total", c))
                for c in range(connections)
            ]
            try:
                await source_.end(http)
                verdict = await check_recording(http, sim, dsn)
                verdict += await check_connections(http, sim, recorder, metrics_url)
                recorded = True
            except (RuntimeError, AssertionError) as exc:
                # Reported with the run's figures, and the bench exits 1 at its end.
                verdict, recorded = f"FAILED: {exc}", False
            p50, p99 = query(dsn, COMMIT_LATENCY, start_wall_s, end_wall_s)[0]
            if not source_.dated_when_sent:
                p50 = p99 = None
            drops = connection_drops(recorder)  # before stopping it, which ends them all
            exit_code = recorder.stop()
            if exit_code != 0:
                verdict, recorded = f"{verdict}; FAILED: exit code {exit_code}", False
    return RecorderResult(
        connections=connections,
        round=round_,
        made_per_s=(made - start_made) / elapsed_s,
        events_per_s=committed_per_s("book_events"),
        fills_per_s=committed_per_s("book_fills"),
        latency_p50_ms=p50.total_seconds() * 1000 if p50 is not None else math.nan,
        latency_p99_ms=p99.total_seconds() * 1000 if p99 is not None else math.nan,
        cpu=cpu,
        copies_per_s=copies,
        first_shares=[f / sum(firsts) if sum(firsts) else 0.0 for f in firsts],
        flushes_per_s=per_s("recorder_db_write_duration_seconds_count"),
        max_socket_backlog=max_backlog,
        max_buffered_rows=max_buffered,
        load=(float(start_load.split()[0]), float(end_load.split()[0])),
        verdict=verdict,
        recorded=recorded,
        drops=drops,
        profile=profile,
    )


def connection_drops(recorder: RecorderProcess) -> list[str]:
    """Each stream connection's drop in the recorder's log, as `connection: reason at +N s`
    (seconds since the first connect): a recorder that falls behind loses its connections."""
    entries = recorder.log_entries(this_start=True)
    connects = [e["ts"] for e in entries if e.get("event") == "socket stream connected"]
    if not connects:
        return []
    first = datetime.fromisoformat(connects[0])
    return [
        f"{e['connection']}: {e['reason']} at "
        f"+{(datetime.fromisoformat(e['ts']) - first).total_seconds():.0f} s"
        for e in entries
        if e.get("event") == "socket stream disconnected"
    ]


async def check_connections(
    http: aiohttp.ClientSession, sim: SimProcess, recorder: RecorderProcess, metrics_url: str
) -> str:
    """After `check_recording`: every connection received every event the simulator made
    (each was sent on each connection) and the first copies add up to them (each was kept
    once, as the database, holding each event once, already showed)."""
    made = int((await sim.admin(http, "state"))["event_count"])
    n = recorder.connections

    def counts(samples: dict[str, float], name: str) -> list[int]:
        return [int(samples.get(per_connection(name, c), 0)) for c in range(n)]

    async def every_copy_in() -> bool:
        samples = await scrape(http, metrics_url)
        return min(counts(samples, "recorder_stream_events_total")) >= made

    with suppress(AssertionError):  # reported below with the counts
        await eventually(every_copy_in, timeout_s=30,
                         what="every connection's copy of every event")  # fmt: skip
    samples = await scrape(http, metrics_url)
    copies = counts(samples, "recorder_stream_events_total")
    firsts = counts(samples, "recorder_stream_first_events_total")
    if copies != [made] * n or sum(firsts) != made:
        raise RuntimeError(
            f"connections: received {copies}, kept first {firsts}; the simulator made {made}"
        )
    return (
        f"; each of {n} connection(s) received all {made} events, kept once "
        f"(first copies by connection: {', '.join(f'{f:,}' for f in firsts)})"
    )


def flow_events(args: argparse.Namespace, rate: float, flat_out: int) -> int:
    """With --source node: how many events to make ahead for a run (0 with the simulator,
    whose flow runs on). Paced: the warm-up and window at that rate and 2 s more; flat
    out: `flat_out`, at most --max-events."""
    if args.source != "node":
        return 0
    if rate < MAX_RATE:
        return math.ceil(rate * (WARMUP_S + args.seconds + 2))
    return min(args.max_events, flat_out)


def parse_rates(text: str) -> list[float]:
    return [MAX_RATE if r.strip() == "max" else float(r) for r in text.split(",") if r.strip()]


def rate_label(rate: float) -> str:
    return "max" if rate >= MAX_RATE else f"{rate:,.0f}"


def run_order(counts: list[int], rate_index: int, round_: int) -> list[int]:
    """The connection counts in the order run: reversed every other round and rate."""
    return counts if (rate_index + round_) % 2 == 0 else counts[::-1]


# --- the report -----------------------------------------------------------------------------


def report(runs: list[RateRuns], counts: list[int]) -> None:
    print("| asked ev/s | connections | round | bare client ev/s | recorder events committed/s "
          "| fills committed/s | rows committed/s | recorder / bare "
          "| flow made ev/s, recorder run | recorder's buffer max rows "
          "| sim's queue to the recorder max | recording | connections dropped |")  # fmt: skip
    print("| ---: " * 11 + "| --- | --- |")
    for rr in runs:
        for rec in rr.recorder:
            bare = rec.beside or rr.bare
            print(
                f"| {rate_label(rr.rate)} | {rec.connections} | {rec.round + 1} "
                f"| {bare.received_per_s:,.0f} | {rec.events_per_s:,.0f} "
                f"| {rec.fills_per_s:,.0f} | {rec.events_per_s + rec.fills_per_s:,.0f} "
                f"| {rec.events_per_s / bare.received_per_s:.2f}x | {rec.made_per_s:,.0f} "
                f"| {rec.max_buffered_rows:,} | {rec.max_socket_backlog:,} "
                f"| {'checked' if rec.recorded else 'FAILED'} | {'; '.join(rec.drops) or '-'} |"
            )
    print()
    print("| asked ev/s | connections | round | event to receipt p50 / p99, bare "
          "| event to commit p50 / p99, recorder | writer commits/s "
          "| copies received/s by connection | first copies by connection "
          "| CPU bare client / source | CPU recorder / source / PostgreSQL "
          "| CPU machine / others | load 1 min, start / end |")  # fmt: skip
    print("| ---: " * 12 + "|")
    for rr in runs:
        bare = rr.bare
        for rec in rr.recorder:
            print(
                f"| {rate_label(rr.rate)} | {rec.connections} | {rec.round + 1} "
                f"| {bare.latency_p50_ms:,.1f} / {bare.latency_p99_ms:,.1f} ms "
                f"| {rec.latency_p50_ms:,.1f} / {rec.latency_p99_ms:,.1f} ms "
                f"| {rec.flushes_per_s:,.0f} "
                f"| {' / '.join(f'{c:,.0f}' for c in rec.copies_per_s)} "
                f"| {' / '.join(f'{s:.0%}' for s in rec.first_shares)} "
                f"| {bare.cpu['client']:.2f} / {bare.cpu['source']:.2f} "
                f"| {rec.cpu['recorder']:.2f} / {rec.cpu['source']:.2f} "
                f"/ {rec.cpu['postgres']:.2f} "
                f"| {rec.cpu['machine']:.2f} / {rec.cpu['others']:.2f} "
                f"| {rec.load[0]:.2f} / {rec.load[1]:.2f} |"
            )
    print()
    if len(counts) > 1:
        report_connections(runs, counts)
    for rr in runs:
        for rec in rr.recorder:
            print(f"checked at {rate_label(rr.rate)}/s, {rec.connections} connection(s), "
                  f"round {rec.round + 1}: {rec.verdict}")  # fmt: skip
    behind = [
        (rr.rate, rec.connections)
        for rr in runs
        for rec in rr.recorder
        if rec.events_per_s < KEEPS_UP * rr.bare.received_per_s
    ]
    if behind:
        rate, n = behind[0]
        print(f"the recorder first committed < {KEEPS_UP:.0%} of the bare client's rate at "
              f"{rate_label(rate)}/s asked ({n} connection(s))")  # fmt: skip
    else:
        print(f"the recorder committed >= {KEEPS_UP:.0%} of the bare client's rate at every step")


def report_per_event(runs: list[RateRuns], ceilings: dict[int, tuple[float, float]]) -> None:
    """Each recorder run beside the bare client: rate, CPU per 1,000 events/s, latency."""
    for readers, (per_s, cores) in sorted(ceilings.items()):
        print(f"the source's ceiling: {per_s:,.0f} ev/s to each of {readers} raw reader(s), "
              f"the source taking {cores:.2f} cores")  # fmt: skip
    print()
    print("| asked ev/s | connections | round | bare client ev/s | recorder ev/s "
          "| recorder / bare | CPU per 1,000 ev/s, bare client | CPU per 1,000 ev/s, recorder "
          "| recorder / bare, CPU per event | event to receipt p50 / p99, bare "
          "| event to commit p50 / p99, recorder | recording |")  # fmt: skip
    print("| ---: " * 11 + "| --- |")
    for rr in runs:
        for rec in rr.recorder:
            bare = rec.beside or rr.bare
            bare_cpu = bare.cpu["client"] / bare.received_per_s * 1000
            rec_cpu = rec.cpu["recorder"] / rec.events_per_s * 1000
            print(
                f"| {rate_label(rr.rate)} | {rec.connections} | {rec.round + 1} "
                f"| {bare.received_per_s:,.0f}{bare_label(bare)} | {rec.events_per_s:,.0f} "
                f"| {rec.events_per_s / bare.received_per_s:.2f}x "
                f"| {bare_cpu:.3f} | {rec_cpu:.3f} | {rec_cpu / bare_cpu:.2f}x "
                f"| {bare.latency_p50_ms:,.1f} / {bare.latency_p99_ms:,.1f} ms "
                f"| {rec.latency_p50_ms:,.1f} / {rec.latency_p99_ms:,.1f} ms "
                f"| {'checked' if rec.recorded else 'FAILED'} |"
            )
    print()


def bare_label(bare: BareResult) -> str:
    return f" ({bare.connections} connections)" if bare.connections > 1 else ""


def report_connections(runs: list[RateRuns], counts: list[int]) -> None:
    """What each connection count costs against the first one: means over the rounds, the
    ratio of the means, and in brackets the ratio within each round."""
    base = counts[0]
    print(f"What each stream connection costs (mean of the rounds; vs {base}: ratio of the "
          "means, in brackets each round's own)")  # fmt: skip
    print()
    print("| asked ev/s | connections | events committed/s | copies received/s "
          "| recorder CPU, cores | recorder CPU per 1,000 ev/s "
          f"| recorder vs {base} | sim CPU, cores | sim vs {base} "
          "| PostgreSQL CPU, cores | others' CPU, cores | recordings checked |")  # fmt: skip
    print("| ---: " * 12 + "|")
    for rr in runs:
        base_runs = rr.of(base)
        for n in counts:
            these = rr.of(n)
            events = mean(r.events_per_s for r in these)
            cpu = mean(r.cpu["recorder"] for r in these)
            print(
                f"| {rate_label(rr.rate)} | {n} | {events:,.0f} "
                f"| {mean(sum(r.copies_per_s) for r in these):,.0f} | {cpu:.3f} "
                f"| {cpu / events * 1000:.3f} "
                f"| {versus(these, base_runs, 'recorder')} "
                f"| {mean(r.cpu['sim'] for r in these):.3f} | {versus(these, base_runs, 'sim')} "
                f"| {mean(r.cpu['postgres'] for r in these):.3f} "
                f"| {mean(r.cpu['others'] for r in these):.2f} "
                f"| {sum(r.recorded for r in these)} of {len(these)} |"
            )
    print()
    for rr in runs:
        base_runs = rr.of(base)
        for n in counts[1:]:
            these = rr.of(n)
            extra_copies = mean(sum(r.copies_per_s) for r in these) - mean(
                sum(r.copies_per_s) for r in base_runs
            )
            behind = [r for r in these + base_runs if r.events_per_s < KEEPS_UP * r.made_per_s]
            if behind:
                # A process that cannot keep up spends what CPU it gets: no cost to read.
                print(f"at {rate_label(rr.rate)}/s: no cost per copy, the recorder fell behind "
                      f"the flow in {len(behind)} of {len(these + base_runs)} runs")  # fmt: skip
                continue
            for process in ("recorder", "sim"):
                extra = mean(r.cpu[process] for r in these) - mean(
                    r.cpu[process] for r in base_runs
                )
                per_copy = (f"{extra / extra_copies * 1e6:,.1f} µs per extra copy received"
                            if extra_copies > 0 else "no extra copies")  # fmt: skip
                print(f"at {rate_label(rr.rate)}/s, {n} connections instead of {base}: "
                      f"{process} {extra:+.3f} cores, {per_copy}")  # fmt: skip
    print()


def versus(these: list[RecorderResult], base: list[RecorderResult], process: str) -> str:
    # A process idle in a run (the simulator with --source node) has no ratio: "-".
    def ratio(value: float, of: float) -> str:
        return f"{value / of:.2f}" if of > 0 else "-"

    overall = ratio(mean(r.cpu[process] for r in these), mean(r.cpu[process] for r in base))
    rounds = [
        ratio(r.cpu[process], b.cpu[process])
        for r, b in zip(these, base, strict=False)
        if r.round == b.round
    ]
    return f"{overall}x ({', '.join(rounds)})"


# --- the profiles ---------------------------------------------------------------------------


def report_profiles(runs: list[RateRuns], counts: list[int], seconds: float) -> None:
    """Per rate, the functions whose CPU grows most from the first connection count to each
    other one (the event loop's trunk left out), with callees and on their own."""
    base = counts[0]
    for rr in runs:
        profiles = {
            n: _profile.mean_profile(
                [_profile.read(r.profile, seconds) for r in rr.of(n) if r.profile is not None]
            )
            for n in counts
            if any(r.profile is not None for r in rr.of(n))
        }
        if base not in profiles:
            continue
        was = profiles[base]
        for n in counts[1:]:
            now = profiles[n]
            events = mean(r.events_per_s for r in rr.of(n))
            trunk = was.trunk() | now.trunk()
            growth = sorted(
                (set(now.inclusive) | set(was.inclusive)) - trunk,
                key=lambda name: now.inclusive[name] - was.inclusive[name],
                reverse=True,
            )[:PROFILE_TOP]
            print(f"profile at {rate_label(rr.rate)}/s, {base} -> {n} connections: the "
                  "functions whose CPU grows most, callees included (own: in the function "
                  "itself); cores, and µs per committed event")  # fmt: skip
            print()
            print(f"| function | cores, {base} | cores, {n} | more, cores | more, µs per event "
                  f"| own cores, {base} / {n} |")  # fmt: skip
            print("| --- | ---: | ---: | ---: | ---: | ---: |")
            print(f"| (all samples) | {was.total:.3f} | {now.total:.3f} "
                  f"| {now.total - was.total:+.3f} "
                  f"| {(now.total - was.total) / events * 1e6:+.1f} | |")  # fmt: skip
            for name in growth:
                more = now.inclusive[name] - was.inclusive[name]
                print(
                    f"| `{name}` | {was.inclusive[name]:.3f} | {now.inclusive[name]:.3f} "
                    f"| {more:+.3f} | {more / events * 1e6:+.1f} "
                    f"| {was.own[name]:.3f} / {now.own[name]:.3f} |"
                )
            print()


async def main_async(args: argparse.Namespace) -> int:
    """Run and report; 1 if a recording failed its check, else 0."""
    pairs = args.pairs.split(",")
    counts = [int(n) for n in args.connections.split(",")]
    profile_dir: Path | None = args.profile
    runs: list[RateRuns] = []
    print(f"load average at the start: {load_average()}", flush=True)
    with (
        postgres_server() as pg,
        tempfile.TemporaryDirectory(prefix="recorder-bench-") as tmp,
    ):
        work_dir = args.work_dir or Path(tmp)
        ceilings: dict[int, tuple[float, float]] = {}
        if args.source == "node":
            for readers in sorted({1, max(counts)}):
                ceilings[readers] = await source_ceiling(pairs, args.seconds, readers)
                print(f"node source to {readers} raw reader(s): "
                      f"{ceilings[readers][0]:,.0f} ev/s each", flush=True)  # fmt: skip
        for i, rate in enumerate(parse_rates(args.rates)):
            events = flow_events(args, rate, args.max_events)
            bare = await bare_client(rate, pairs, args.seconds, args.source, events)
            print(f"asked {rate_label(rate)}/s: bare client {bare.received_per_s:,.0f} ev/s",
                  flush=True)  # fmt: skip
            rr = RateRuns(rate, bare)
            runs.append(rr)
            for round_ in range(args.rounds):
                for n in run_order(counts, i, round_):
                    # Flat out, the recorder takes no more than the bare client: as many
                    # events as it could take in the window, fewer once a run has shown
                    # its pace, so that it does not work through a backlog for minutes.
                    fastest = max((r.events_per_s for r in rr.recorder), default=math.inf)
                    hint = min(bare.received_per_s, 1.5 * fastest)
                    events = flow_events(args, rate, math.ceil(hint * (WARMUP_S + args.seconds)))
                    rec = await recorder_run(
                        pg, rate, pairs, args.seconds, work_dir, n, round_, profile_dir,
                        args.source, events,
                    )  # fmt: skip
                    if args.bare_each_run:
                        # The bare client again, right after: the load of the machine
                        # changes within minutes, so each recorder run gets its own.
                        rec.beside = await bare_client(
                            rate,
                            pairs,
                            args.seconds,
                            args.source,
                            flow_events(args, rate, args.max_events),
                            n if args.bare_connections == "same" else 1,
                        )
                    rr.recorder.append(rec)
                    print(f"asked {rate_label(rate)}/s, {n} connection(s), round {round_ + 1}: "
                          f"recorder committed {rec.events_per_s:,.0f} events/s + "
                          f"{rec.fills_per_s:,.0f} fills/s, its CPU {rec.cpu['recorder']:.3f}, "
                          f"the source's {rec.cpu['source']:.3f}, others' "
                          f"{rec.cpu['others']:.2f} cores", flush=True)  # fmt: skip
    print(f"load average at the end: {load_average()}")
    print()
    report(runs, counts)
    report_per_event(runs, ceilings)
    if profile_dir is not None:
        print()
        report_profiles(runs, counts, math.ceil(args.seconds))
    failed = [rec for rr in runs for rec in rr.recorder if not rec.recorded]
    if failed:
        print(f"{len(failed)} recorder run(s) FAILED their check (see above)")
    return 1 if failed else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rates", default="1000,2000,3000,5000,10000,max")
    parser.add_argument("--seconds", type=float, default=10.0, help="measured window per run")
    parser.add_argument("--pairs", default="BTC_USD,ETH_USD")
    parser.add_argument(
        "--source", choices=("sim", "node"), default="sim",
        help="what sends the events: the simulator's own socket.io side, or a Node "
        "socket.io 4 server sending what the simulator's engine made ahead",
    )  # fmt: skip
    parser.add_argument(
        "--max-events", type=int, default=300_000,
        help="--source node, flat out: the most events made ahead for one run",
    )  # fmt: skip
    parser.add_argument(
        "--connections", default="1,2",
        help="exchange.stream_connections of each recorder run, comma-separated",
    )  # fmt: skip
    parser.add_argument(
        "--rounds", type=int, default=2,
        help="recorder runs per connection count and rate, the order alternating",
    )  # fmt: skip
    parser.add_argument(
        "--bare-each-run", action="store_true",
        help="run the bare client again after each recorder run and compare the two",
    )  # fmt: skip
    parser.add_argument(
        "--bare-connections", choices=("1", "same"), default="1",
        help="with --bare-each-run: the bare client beside a recorder run holds one "
        "connection, or as many as the recorder run (each receiving every event)",
    )  # fmt: skip
    parser.add_argument(
        "--profile", metavar="DIR", type=Path,
        help="sample each recorder run with py-spy, keep the stacks in DIR",
    )  # fmt: skip
    parser.add_argument(
        "--work-dir", metavar="DIR", type=Path,
        help="keep each recorder run's config and log here (default: a temporary directory)",
    )  # fmt: skip
    args = parser.parse_args()
    if args.profile is not None:
        args.profile = args.profile.resolve()
        args.profile.mkdir(parents=True, exist_ok=True)
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Ingest benchmark: book events per second the recorder commits, against a bare client.

    .venv/bin/python bench/ingest.py [--rates 1000,2000,3000,5000,10000,max] [--seconds 10]
                                     [--pairs BTC_USD,ETH_USD]

For each asked rate of the simulator's order flow, two runs side by side, each against a
fresh `recorder sim` process (no history, flow paused until the subscriber is ready):

  bare client   one python-socketio AsyncClient subscribed to every pair's channel that only
                counts events (and notes receipt minus the event's `date`): the ceiling of
                the socket path on this machine.
  recorder      a real `recorder run` process (defaults of the config, the pairs given) on a
                fresh database of one embedded PostgreSQL; committed rows/s read from its
                `recorder_rows_written_total{table}` counter over the same window.

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
against the simulator (every event, fill and trade stored; book_at equal to the engine's
book) and with SIGTERM (exit code 0), so no figure comes from a broken recording.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import socketio

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _recorder_procs import (
    Postgres,
    check_recording,
    cpu_now,
    cpu_shares,
    execute,
    fresh_database,
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
"""The recorder keeps up while it commits at least this share of what the bare client got."""


@dataclass
class BareResult:
    made_per_s: float
    received_per_s: float
    latency_p50_ms: float
    latency_p99_ms: float
    cpu: dict[str, float]
    """CPU seconds per second: "client" (this process) and "sim"."""


@dataclass
class RecorderResult:
    made_per_s: float
    events_per_s: float
    fills_per_s: float
    latency_p50_ms: float
    latency_p99_ms: float
    cpu: dict[str, float]
    """CPU seconds per second: "recorder", "sim" and "postgres"."""
    flushes_per_s: float
    max_socket_backlog: int
    max_buffered_rows: int
    verdict: str


async def bare_client(rate: float, pairs: list[str], seconds: float) -> BareResult:
    received = 0
    window: list[float] | None = None  # receipt minus `date`, seconds, inside the window

    def on_event(payload: object) -> None:
        nonlocal received
        received += 1
        if window is not None and isinstance(payload, dict):
            window.append(time.time() - float(payload["date"]))

    with sim_process(rate, pairs) as sim:
        client = socketio.AsyncClient(reconnection=False)
        for pair in pairs:
            client.on(f"book_{pair}", on_event)
        await client.connect(sim.url, transports=["websocket"])
        for pair in pairs:
            await client.call("subscribe", f"book_{pair}")
        pids = {"client": os.getpid(), "sim": sim.pid}
        async with aiohttp.ClientSession() as http:
            await sim.admin(http, "resume")
            await asyncio.sleep(WARMUP_S)
            start = await sim.admin(http, "state")
            start_count, start_s, start_cpu, window = received, time.monotonic(), cpu_now(pids), []
            await asyncio.sleep(seconds)
            latencies, window = window, None
            count, elapsed_s = received - start_count, time.monotonic() - start_s
            cpu = cpu_shares(start_cpu, cpu_now(pids), elapsed_s)
            end = await sim.admin(http, "state")
            await sim.pause_and_drain(http)
            state = await sim.admin(http, "state")
            await asyncio.sleep(0.5)
            if received != state["emitted_count"]:
                raise RuntimeError(f"bare client got {received} of {state['emitted_count']}")
        await client.disconnect()
    return BareResult(
        made_per_s=(end["event_count"] - start["event_count"]) / elapsed_s,
        received_per_s=count / elapsed_s,
        latency_p50_ms=percentile(latencies, 0.50) * 1000,
        latency_p99_ms=percentile(latencies, 0.99) * 1000,
        cpu=cpu,
    )


COMMIT_LATENCY = """
    SELECT percentile_disc(0.5) WITHIN GROUP (ORDER BY committed_at - ts),
           percentile_disc(0.99) WITHIN GROUP (ORDER BY committed_at - ts)
    FROM book_events WHERE ts >= to_timestamp(%s) AND ts < to_timestamp(%s)
"""


async def recorder_run(
    pg: Postgres, rate: float, pairs: list[str], seconds: float, work_dir: Path
) -> RecorderResult:
    label = "max" if rate >= MAX_RATE else f"{rate:.0f}"
    with (
        fresh_database(pg.dsn, f"ingest_{label}") as dsn,
        sim_process(rate, pairs) as sim,
        recorder_process(work_dir / label, sim, dsn) as recorder,
    ):
        recorder.migrate()
        execute(dsn, "ALTER TABLE book_events "
                     "ADD COLUMN committed_at timestamptz DEFAULT clock_timestamp()")  # fmt: skip
        recorder.start()
        pids = {"recorder": recorder.pid, "sim": sim.pid}
        async with aiohttp.ClientSession() as http:
            await recorder.wait_recording(http, dsn)
            await sim.admin(http, "resume")
            await asyncio.sleep(WARMUP_S)
            start_state = await sim.admin(http, "state")
            start_metrics = await scrape(http, recorder.metrics_url)
            start_s, start_wall_s = time.monotonic(), time.time()
            start_cpu = cpu_now(pids, pg.postmaster_pid())
            max_backlog = max_buffered = 0
            state, metrics = start_state, start_metrics
            while time.monotonic() - start_s < seconds:
                await asyncio.sleep(SAMPLE_EVERY_S)
                state = await sim.admin(http, "state")
                metrics = await scrape(http, recorder.metrics_url)
                max_backlog = max(max_backlog, int(state["socket_backlog"]))
                max_buffered = max(max_buffered, int(metrics["recorder_write_buffer_rows"]))
            elapsed_s, end_wall_s = time.monotonic() - start_s, time.time()
            cpu = cpu_shares(start_cpu, cpu_now(pids, pg.postmaster_pid()), elapsed_s)

            def per_s(key: str) -> float:
                return (metrics.get(key, 0.0) - start_metrics.get(key, 0.0)) / elapsed_s

            def committed_per_s(table: str) -> float:
                return per_s(f'recorder_rows_written_total{{table="{table}"}}')

            await sim.pause_and_drain(http)
            verdict = await check_recording(http, sim, dsn)
            p50, p99 = query(dsn, COMMIT_LATENCY, start_wall_s, end_wall_s)[0]
            exit_code = recorder.stop()
            if exit_code != 0:
                raise RuntimeError(f"recorder exited {exit_code}:\n{recorder.log_tail()}")
    return RecorderResult(
        made_per_s=(state["event_count"] - start_state["event_count"]) / elapsed_s,
        events_per_s=committed_per_s("book_events"),
        fills_per_s=committed_per_s("book_fills"),
        latency_p50_ms=p50.total_seconds() * 1000,
        latency_p99_ms=p99.total_seconds() * 1000,
        cpu=cpu,
        flushes_per_s=per_s("recorder_db_write_duration_seconds_count"),
        max_socket_backlog=max_backlog,
        max_buffered_rows=max_buffered,
        verdict=verdict,
    )


def parse_rates(text: str) -> list[float]:
    return [MAX_RATE if r.strip() == "max" else float(r) for r in text.split(",") if r.strip()]


def rate_label(rate: float) -> str:
    return "max" if rate >= MAX_RATE else f"{rate:,.0f}"


def report(rows: list[tuple[float, BareResult, RecorderResult]]) -> None:
    print("| asked ev/s | bare client ev/s | recorder events committed/s | fills committed/s "
          "| rows committed/s | recorder / bare | flow made ev/s, recorder run "
          "| recorder's buffer max rows | sim's queue to the recorder max |")  # fmt: skip
    print("| ---: " * 9 + "|")
    for rate, bare, rec in rows:
        print(
            f"| {rate_label(rate)} | {bare.received_per_s:,.0f} | {rec.events_per_s:,.0f} "
            f"| {rec.fills_per_s:,.0f} | {rec.events_per_s + rec.fills_per_s:,.0f} "
            f"| {rec.events_per_s / bare.received_per_s:.2f}x | {rec.made_per_s:,.0f} "
            f"| {rec.max_buffered_rows:,} | {rec.max_socket_backlog:,} |"
        )
    print()
    print("| asked ev/s | event to receipt p50 / p99, bare | event to commit p50 / p99, "
          "recorder | writer commits/s | CPU bare client / sim "
          "| CPU recorder / sim / PostgreSQL |")  # fmt: skip
    print("| ---: " * 6 + "|")
    for rate, bare, rec in rows:
        print(
            f"| {rate_label(rate)} | {bare.latency_p50_ms:,.1f} / {bare.latency_p99_ms:,.1f} ms "
            f"| {rec.latency_p50_ms:,.1f} / {rec.latency_p99_ms:,.1f} ms "
            f"| {rec.flushes_per_s:,.0f} "
            f"| {bare.cpu['client']:.2f} / {bare.cpu['sim']:.2f} "
            f"| {rec.cpu['recorder']:.2f} / {rec.cpu['sim']:.2f} / {rec.cpu['postgres']:.2f} |"
        )
    print()
    for rate, _, rec in rows:
        print(f"checked at {rate_label(rate)}/s: {rec.verdict}")
    behind = [rate for rate, bare, rec in rows
              if rec.events_per_s < KEEPS_UP * bare.received_per_s]  # fmt: skip
    if behind:
        print(f"the recorder first committed < {KEEPS_UP:.0%} of the bare client's rate at "
              f"{rate_label(behind[0])}/s asked")  # fmt: skip
    else:
        print(f"the recorder committed >= {KEEPS_UP:.0%} of the bare client's rate at every step")


async def main_async(args: argparse.Namespace) -> None:
    pairs = args.pairs.split(",")
    rows: list[tuple[float, BareResult, RecorderResult]] = []
    with postgres_server() as pg, tempfile.TemporaryDirectory(prefix="recorder-bench-") as tmp:
        for rate in parse_rates(args.rates):
            bare = await bare_client(rate, pairs, args.seconds)
            print(f"asked {rate_label(rate)}/s: bare client {bare.received_per_s:,.0f} ev/s",
                  flush=True)  # fmt: skip
            rec = await recorder_run(pg, rate, pairs, args.seconds, Path(tmp))
            print(f"asked {rate_label(rate)}/s: recorder committed {rec.events_per_s:,.0f} "
                  f"events/s + {rec.fills_per_s:,.0f} fills/s", flush=True)  # fmt: skip
            rows.append((rate, bare, rec))
    print()
    report(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rates", default="1000,2000,3000,5000,10000,max")
    parser.add_argument("--seconds", type=float, default=10.0, help="measured window per run")
    parser.add_argument("--pairs", default="BTC_USD,ETH_USD")
    asyncio.run(main_async(parser.parse_args()))
    return 0


if __name__ == "__main__":
    sys.exit(main())

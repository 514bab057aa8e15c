#!/usr/bin/env python3
"""Footprint benchmark: the recorder process's RSS and CPU by event rate, at 50 pairs, and
its RSS over a soak.

    .venv/bin/python bench/footprint.py [--parts rates,pairs,soak] [--rates 0,1000,2000,4000]
        [--seconds 20] [--pair-count 50] [--per-pair 20] [--pairs-seconds 60]
        [--minutes 10] [--warmup-s 60]

Every measured run is a real `recorder run` process (the config's defaults, the pairs given)
against its own `recorder sim` process (no history, flow paused until the recorder has
subscribed and snapshotted every pair) and a fresh database on one embedded PostgreSQL. RSS
is the recorder's VmRSS and CPU its user + system time, read from /proc; the CPU of
PostgreSQL (postmaster and backends) is shown beside it, as the price of the writes.

  rates  2 pairs at each rate of --rates (0: idle), a --seconds window after a 5 s warm-up;
         the least-squares slope over the rates gives CPU and RSS per 1k events/s.
  pairs  --pair-count pairs at --per-pair events/s each (a realistic exchange), a
         --pairs-seconds window: the per-pair REST work (a snapshot every 60 s, trades every
         2 s, candles of 7 resolutions every 30 s) comes on top of the stream.
  soak   the same 50 pairs for --minutes, RSS sampled every 5 s; the least-squares slope of
         RSS (MiB per minute) over the samples after --warmup-s is the leak check.

Every run ends with the flow paused, the simulator drained and the database compared with
the simulator (every event, fill and trade stored; book_at equal to the engine's book), and
the recorder stopped with SIGTERM (exit code 0): no figure comes from a broken recording.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _recorder_procs import (
    Postgres,
    check_recording,
    cpu_seconds,
    fresh_database,
    least_squares_slope,
    postgres_server,
    recorder_process,
    rss_mb,
    scrape,
    sim_process,
    tree_cpu_seconds,
)

WARMUP_S = 5.0
KNOWN_PAIRS = ["BTC_USD", "ETH_USD", "ETH_BTC", "LTC_USD", "XRP_USD", "BTC_EUR"]


@dataclass
class Run:
    label: str
    pairs: int
    asked_per_s: float
    made_per_s: float = 0.0
    seconds: float = 0.0
    cpu_share: float = 0.0
    """Recorder CPU seconds per second (1.0 = one core)."""
    postgres_cpu_share: float = 0.0
    rss_start_mb: float = 0.0
    rss_end_mb: float = 0.0
    rss_max_mb: float = 0.0
    http_calls_per_s: float = 0.0
    http_429: int = 0
    samples: list[tuple[float, float]] = field(default_factory=list)
    """(seconds since the window started, RSS MiB)."""
    verdict: str = ""


def pair_names(count: int) -> list[str]:
    generated = [f"C{i:02d}_USD" for i in range(count)]
    return (KNOWN_PAIRS + generated)[:count]


async def measure(
    pg: Postgres,
    run: Run,
    work_dir: Path,
    window_s: float,
    *,
    sample_every_s: float = 1.0,
    progress_every_s: float = 0.0,
) -> Run:
    pairs = pair_names(run.pairs)
    with (
        fresh_database(pg.dsn, f"footprint_{run.label}") as dsn,
        sim_process(run.asked_per_s, pairs) as sim,
        recorder_process(work_dir / run.label, sim, dsn) as recorder,
    ):
        recorder.start()
        async with aiohttp.ClientSession() as http:
            await recorder.wait_recording(http, dsn)
            await sim.admin(http, "resume")
            await asyncio.sleep(WARMUP_S)
            postmaster = pg.postmaster_pid()
            first_state = await sim.admin(http, "state")
            first_metrics = await scrape(http, recorder.metrics_url)
            start_s = time.monotonic()
            start_cpu_s, start_pg_cpu_s = cpu_seconds(recorder.pid), tree_cpu_seconds(postmaster)
            run.rss_start_mb = rss_mb(recorder.pid)
            next_progress_s = progress_every_s
            while (elapsed_s := time.monotonic() - start_s) < window_s:
                run.samples.append((elapsed_s, rss_mb(recorder.pid)))
                if progress_every_s and elapsed_s >= next_progress_s:
                    print(f"  {elapsed_s / 60:4.1f} min: RSS {run.samples[-1][1]:.1f} MiB",
                          flush=True)  # fmt: skip
                    next_progress_s += progress_every_s
                await asyncio.sleep(sample_every_s)
            run.seconds = time.monotonic() - start_s
            run.cpu_share = (cpu_seconds(recorder.pid) - start_cpu_s) / run.seconds
            run.postgres_cpu_share = (tree_cpu_seconds(postmaster) - start_pg_cpu_s) / run.seconds
            run.rss_end_mb = rss_mb(recorder.pid)
            run.samples.append((run.seconds, run.rss_end_mb))
            run.rss_max_mb = max(rss for _, rss in run.samples)
            last_state = await sim.admin(http, "state")
            last_metrics = await scrape(http, recorder.metrics_url)
            run.made_per_s = (last_state["event_count"] - first_state["event_count"]) / run.seconds
            calls = "recorder_http_requests_total"
            run.http_calls_per_s = (last_metrics[calls] - first_metrics[calls]) / run.seconds
            run.http_429 = int(
                sum(v for k, v in last_metrics.items() if k.startswith(calls) and '"429"' in k)
            )
            await sim.pause_and_drain(http)
            run.verdict = await check_recording(http, sim, dsn)
            exit_code = recorder.stop()
            if exit_code != 0:
                raise RuntimeError(f"recorder exited {exit_code}:\n{recorder.log_tail()}")
    return run


def print_runs(runs: list[Run]) -> None:
    print(
        "| run | pairs | asked ev/s | made ev/s | recorder CPU (1.0 = a core) "
        "| recorder CPU per 1k ev/s | PostgreSQL CPU | RSS at window start / end / max MiB "
        "| REST calls/s |"
    )
    print("| --- " + "| ---: " * 8 + "|")
    for run in runs:
        print(
            f"| {run.label} | {run.pairs} | {run.asked_per_s:,.0f} | {run.made_per_s:,.0f} "
            f"| {run.cpu_share:.3f} | {per_thousand(run)} | {run.postgres_cpu_share:.3f} "
            f"| {run.rss_start_mb:.1f} / {run.rss_end_mb:.1f} / {run.rss_max_mb:.1f} "
            f"| {run.http_calls_per_s:.1f} |"
        )
    for run in runs:
        print(f"checked {run.label}: {run.verdict}; 429 answers: {run.http_429}")


def per_thousand(run: Run) -> str:
    return f"{run.cpu_share / (run.made_per_s / 1000):.3f}" if run.made_per_s else "-"


async def main_async(args: argparse.Namespace) -> None:
    parts = set(args.parts.split(","))
    with postgres_server() as pg, tempfile.TemporaryDirectory(prefix="recorder-bench-") as tmp:
        work_dir = Path(tmp)
        if "rates" in parts:
            runs = []
            for rate in (float(r) for r in args.rates.split(",")):
                run = Run(f"rate_{rate:.0f}", 2, rate)
                runs.append(await measure(pg, run, work_dir, args.seconds))
                print(f"measured {run.label}: CPU {run.cpu_share:.3f}, RSS {run.rss_end_mb:.1f}"
                      " MiB", flush=True)  # fmt: skip
            print()
            print_runs(runs)
            # The first events cost more than the next ones (see docs/benchmarks.md), so the
            # marginal cost is fitted over the rates above idle only.
            busy = [run for run in runs if run.made_per_s > 0]
            if len(busy) >= 2:
                per_k = [run.made_per_s / 1000 for run in busy]
                cpu_per_k = least_squares_slope(per_k, [run.cpu_share for run in busy])
                pg_per_k = least_squares_slope(per_k, [run.postgres_cpu_share for run in busy])
                rss_per_k = least_squares_slope(per_k, [run.rss_end_mb for run in busy])
                print(
                    f"each further 1k events/s (least squares over the rates above idle): "
                    f"recorder CPU {cpu_per_k:+.3f} of a core, PostgreSQL CPU {pg_per_k:+.3f}, "
                    f"recorder RSS {rss_per_k:+.1f} MiB"
                )
            print()
        if "pairs" in parts:
            asked = args.pair_count * args.per_pair
            run = Run(f"pairs_{args.pair_count}", args.pair_count, asked)
            await measure(pg, run, work_dir, args.pairs_seconds)
            print_runs([run])
            print()
        if "soak" in parts:
            asked = args.pair_count * args.per_pair
            run = Run("soak", args.pair_count, asked)
            print(f"soak: {args.pair_count} pairs at {asked:,.0f} events/s for "
                  f"{args.minutes:g} min", flush=True)  # fmt: skip
            await measure(pg, run, work_dir, args.minutes * 60, sample_every_s=5.0,
                          progress_every_s=60.0)  # fmt: skip
            print_runs([run])
            kept = [(t, rss) for t, rss in run.samples if t >= args.warmup_s]
            slope = least_squares_slope([t / 60 for t, _ in kept], [rss for _, rss in kept])
            print(
                f"RSS slope after the first {args.warmup_s:g} s: {slope:+.3f} MiB/min over "
                f"{len(kept)} samples ({kept[0][1]:.1f} -> {kept[-1][1]:.1f} MiB, "
                f"min {min(r for _, r in kept):.1f}, max {max(r for _, r in kept):.1f})"
            )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--parts", default="rates,pairs,soak")
    parser.add_argument("--rates", default="0,1000,2000,4000", help="events/s, 2 pairs")
    parser.add_argument("--seconds", type=float, default=20.0, help="window per rate")
    parser.add_argument("--pair-count", type=int, default=50)
    parser.add_argument("--per-pair", type=float, default=20.0, help="events/s per pair")
    parser.add_argument("--pairs-seconds", type=float, default=60.0, help="window at 50 pairs")
    parser.add_argument("--minutes", type=float, default=10.0, help="soak length")
    parser.add_argument("--warmup-s", type=float, default=60.0, help="soak samples skipped")
    asyncio.run(main_async(parser.parse_args()))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Several recorders sharing the pairs through leases: what `recorder run --workers N`
commits, and how long a takeover and a rebalance take, with real `recorder run` processes on
one database and the simulator over sockets.

    flock /tmp/bench.lock nice .venv/bin/python bench/scale.py --pairs 50 --recorders 2 \
        --repeat 10 [--throughput-pairs 50,200 --workers 1,2,4 --seconds 20 --rate max]

Throughput (first, `--throughput-pairs` empty skips it): for each pair count and worker
count, a fresh database, a `recorder sim` process of its own (no history, the flow paused)
and `recorder run --workers N`; once every pair is leased to exactly one worker and has its
snapshot, the flow starts at `--rate` ("max": as fast as the slowest subscriber takes it,
the simulator holding its flow while a socket has 5,000 packets queued), and after a warm-up
the bench reads over `--seconds`: book events and fills committed (rows counted in the
database at both ends of the window), the events the simulator made, and the CPU of each
worker, the parent, the simulator and PostgreSQL (/proc/<pid>/stat) and of the machine
(/proc/stat). Each run ends with the flow drained and the database compared with the
simulator (every event, fill and trade once, book_at equal to the engine's book), so that
no figure comes from a broken run.

Takeover and rebalance (`--repeat 0` skips them), each from the moment of the cause to
every pair held by exactly one live recorder (and, where the simulator can tell,
subscribed by exactly one connection):

- start: one recorder alone on an empty database, from its start to holding every pair;
- rebalance: a recorder (re)joining, from its start to the shares differing by one at most;
- kill: a recorder SIGKILLed, until its pairs are held by the others; the others are on the
  same host and see its process gone, so they take over at their next round;
- hang: a recorder SIGSTOPped (as a dead host looks to the others), until its pairs are
  held by the others: the rest of its lease (`lease_ttl_s`) and a round.

Each kill and hang is followed by the recorder's return (restart or SIGCONT), measured as a
rebalance. The figures are wall-clock seconds on this machine; docs/benchmarks.md says
what they depend on (mostly `lease_ttl_s`, not the machine).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from _recorder_procs import (
    SimProcess,
    check_recording,
    cpu_seconds,
    fresh_database,
    load_average,
    machine_busy_seconds,
    postgres_server,
    sim_process,
    tree_cpu_seconds,
)

from recorder.sim.server import SimSettings, Simulator, run_sim
from tests.harness.config import write_config
from tests.harness.leases import (
    WorkersProcess,
    held_by,
    live_leases,
    recorder_process,
    shared_once,
)
from tests.harness.postgres import EmbeddedPostgres, count_rows, query
from tests.harness.recorder_process import RecorderProcess
from tests.harness.waiting import eventually

TIMEOUT_S = 180.0
MAX_RATE = 1_000_000.0
"""--rate max: the simulator then makes events as fast as its subscribers take them."""
WARMUP_S = 3.0


async def timed(what: str, check: Any) -> float:
    started = time.monotonic()
    await eventually(check, timeout_s=TIMEOUT_S, interval_s=0.02, what=what,
                     ignoring=(Exception,))  # fmt: skip
    return time.monotonic() - started


async def measure(args: argparse.Namespace, dsn: str, work: Path) -> dict[str, list[float]]:
    pairs = tuple(f"C{n:03d}_USD" for n in range(args.pairs))
    settings = SimSettings(seed=5, pairs=pairs, rate_per_s=args.takeover_rate, history_hours=0)
    figures: dict[str, list[float]] = {"start": [], "rebalance": [], "kill": [], "hang": []}
    recorders: list[RecorderProcess] = []
    keys = {"lease_ttl_s": args.lease_ttl, "snapshot_interval_s": 60, "candle_types": ["1"]}
    async with run_sim(settings) as sim:
        try:
            for n in range(args.recorders):
                recorder = recorder_process(work, f"r{n + 1}", sim, dsn, **keys)
                recorders.append(recorder)
                recorder.start()
                kind = "start" if n == 0 else "rebalance"
                figures[kind].append(await settle(sim, dsn, pairs, recorders, kind))
            for round_ in range(args.repeat):
                await disrupt(sim, dsn, pairs, recorders, figures, round_)
        finally:
            for recorder in recorders:
                if recorder.running:
                    os.kill(recorder.pid, signal.SIGCONT)
                recorder.kill_if_running()
    return figures


async def settle(
    sim: Simulator, dsn: str, pairs: tuple[str, ...], recorders: list[RecorderProcess], what: str
) -> float:
    return await timed(what, lambda: shared_once(dsn, sim, pairs, recorders))


async def disrupt(
    sim: Simulator,
    dsn: str,
    pairs: tuple[str, ...],
    recorders: list[RecorderProcess],
    figures: dict[str, list[float]],
    round_: int,
) -> None:
    victim = max(recorders, key=lambda r: len(held_by(dsn, r.pid)))
    others = [r for r in recorders if r is not victim]

    def others_hold_all() -> bool:
        leases = live_leases(dsn)
        live = {r.pid for r in others}
        return sorted(leases) == sorted(pairs) and all(
            len(p) == 1 and p[0] in live for p in leases.values()
        )

    if round_ % 2 == 0:
        started = time.monotonic()
        await asyncio.to_thread(victim.kill)
        await eventually(lambda: shared_once(dsn, sim, pairs, others), timeout_s=TIMEOUT_S,
                         interval_s=0.02, what="kill takeover", ignoring=(Exception,))  # fmt: skip
        figures["kill"].append(time.monotonic() - started)
        victim.start()
    else:
        started = time.monotonic()
        os.kill(victim.pid, signal.SIGSTOP)
        try:
            await eventually(others_hold_all, timeout_s=TIMEOUT_S, interval_s=0.02,
                             what="hang takeover", ignoring=(Exception,))  # fmt: skip
            figures["hang"].append(time.monotonic() - started)
        finally:
            os.kill(victim.pid, signal.SIGCONT)
    figures["rebalance"].append(await settle(sim, dsn, pairs, recorders, "rebalance"))


@dataclass
class Throughput:
    pairs: int
    workers: int
    made_per_s: float
    events_per_s: float
    fills_per_s: float
    worker_cpu: list[float]
    """Cores each worker used over the window, busiest first."""
    parent_cpu: float
    sim_cpu: float
    postgres_cpu: float
    machine_cpu: float
    load: str
    verdict: str


async def throughput(
    server: EmbeddedPostgres, args: argparse.Namespace, pair_count: int, workers: int, work: Path
) -> Throughput:
    pairs = [f"C{n:03d}_USD" for n in range(pair_count)]
    label = f"{pair_count}p_{workers}w"
    with (
        fresh_database(server.dsn, f"scale_{label}") as dsn,
        sim_process(args.rate, pairs) as sim,
    ):
        config = write_config(
            work / label / "recorder.toml",
            base_url=sim.url,
            dsn=dsn,
            data_dir=work / label / "data",
            exchange={"stream_connections": 1},
            recorder={"pairs": pairs, "lease_ttl_s": args.lease_ttl, "candle_types": ["1"]},
            log_format="json",
        )
        parent = WorkersProcess(config, workers)
        parent.start()
        try:
            return await _throughput_window(server, args, sim, dsn, parent, pairs)
        finally:
            if parent.running and parent.stop() != 0:
                print(f"{label}: recorder run --workers did not end with 0", file=sys.stderr)
            parent.kill_if_running()


async def _throughput_window(
    server: EmbeddedPostgres,
    args: argparse.Namespace,
    sim: SimProcess,
    dsn: str,
    parent: WorkersProcess,
    pairs: list[str],
) -> Throughput:
    def shared_and_snapshotted() -> bool:
        workers = parent.worker_pids()
        leases = live_leases(dsn)
        owners = [pids[0] for pids in leases.values() if len(pids) == 1]
        counts = Counter(owners)
        return (
            len(workers) == parent.workers
            and sorted(leases) == sorted(pairs)
            and len(owners) == len(pairs)
            and set(counts) == workers
            and max(counts.values()) - min(counts.values()) <= 1
            and query(dsn, "SELECT count(DISTINCT pair) FROM book_snapshots")[0][0] == len(pairs)
        )

    await parent.wait_until(shared_and_snapshotted, timeout_s=TIMEOUT_S, what="pairs shared",
                            ignoring=(Exception,))  # fmt: skip
    # The subscriptions reach the simulator a moment after the leases; the simulator in its
    # own process says nothing of them to wait on.
    await asyncio.sleep(1.0)
    workers = sorted(parent.worker_pids())
    async with aiohttp.ClientSession() as http:
        await sim.admin(http, "resume")
        await asyncio.sleep(WARMUP_S)
        pids = {**{f"w{w}": w for w in workers}, "parent": parent.pid, "sim": sim.pid}

        def reading() -> tuple[float, dict[str, float], int, int]:
            cpu = {name: cpu_seconds(pid) for name, pid in pids.items()}
            cpu["postgres"] = tree_cpu_seconds(server.postmaster_pid())
            cpu["machine"] = machine_busy_seconds()
            return (
                time.monotonic(),
                cpu,
                count_rows(dsn, "book_events"),
                count_rows(dsn, "book_fills"),
            )

        made_start = int((await sim.admin(http, "state"))["event_count"])
        start, load_start = reading(), load_average()
        await asyncio.sleep(args.seconds)
        end = reading()
        made_end = int((await sim.admin(http, "state"))["event_count"])
        load = f"{load_start.split()[0]}-{load_average().split()[0]}"
        if sorted(parent.worker_pids()) != workers:
            raise RuntimeError("a worker ended during the window")
        seconds = end[0] - start[0]
        cpu = {name: (end[1][name] - start[1][name]) / seconds for name in start[1]}
        await sim.pause_and_drain(http)
        verdict = await check_recording(http, sim, dsn, timeout_s=TIMEOUT_S)
    return Throughput(
        pairs=len(pairs),
        workers=parent.workers,
        made_per_s=(made_end - made_start) / seconds,
        events_per_s=(end[2] - start[2]) / seconds,
        fills_per_s=(end[3] - start[3]) / seconds,
        worker_cpu=sorted((cpu[f"w{w}"] for w in workers), reverse=True),
        parent_cpu=cpu["parent"],
        sim_cpu=cpu["sim"],
        postgres_cpu=cpu["postgres"],
        machine_cpu=cpu["machine"],
        load=load,
        verdict=verdict,
    )


def throughput_table(runs: list[Throughput]) -> str:
    lines = [
        "| pairs | workers | made ev/s | committed events/s | fills/s | CPU per worker "
        "| all workers | workers' CPU per 1,000 events/s | parent / sim / PostgreSQL | machine "
        "| load 1 min |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for run in runs:
        per_worker = " / ".join(f"{c:.2f}" for c in run.worker_cpu)
        lines.append(
            f"| {run.pairs} | {run.workers} | {run.made_per_s:,.0f} | {run.events_per_s:,.0f} "
            f"| {run.fills_per_s:,.0f} | {per_worker} | {sum(run.worker_cpu):.2f} "
            f"| {1000 * sum(run.worker_cpu) / max(run.events_per_s, 1):.3f} "
            f"| {run.parent_cpu:.2f} / {run.sim_cpu:.2f} / {run.postgres_cpu:.2f} "
            f"| {run.machine_cpu:.2f} | {run.load} |"
        )
    return "\n".join(lines)


def summary(figures: dict[str, list[float]]) -> str:
    lines = []
    for kind, values in figures.items():
        if values:
            lines.append(
                f"{kind:<10} n={len(values):<3} median {statistics.median(values):6.2f} s"
                f"   max {max(values):6.2f} s"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", type=int, default=50)
    parser.add_argument("--recorders", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=10, help="kills and hangs, alternating")
    parser.add_argument("--lease-ttl", type=float, default=12.0)
    parser.add_argument("--takeover-rate", type=float, default=50.0,
                        help="book events/s, all pairs, while timing takeovers")  # fmt: skip
    parser.add_argument("--throughput-pairs", type=int_list, default=[50, 200])
    parser.add_argument("--workers", type=int_list, default=[1, 2, 4])
    parser.add_argument("--rate", type=rate, default=MAX_RATE,
                        help='book events/s of the simulator, all pairs, or "max"')  # fmt: skip
    parser.add_argument("--seconds", type=float, default=20.0, help="throughput window")
    args = parser.parse_args()
    if args.repeat and args.recorders < 2:
        sys.exit("--recorders: 2 or more (a takeover needs another recorder)")
    with (
        tempfile.TemporaryDirectory(prefix="recorder-bench-scale-") as work_dir,
        postgres_server() as server,
    ):
        work = Path(work_dir)
        if args.throughput_pairs:
            print(f"throughput: rate {rate_label(args.rate)}, {args.seconds:g} s window, "
                  f"load {load_average()}", flush=True)  # fmt: skip
            runs = []
            for pair_count in args.throughput_pairs:
                for workers in args.workers:
                    run = asyncio.run(throughput(server, args, pair_count, workers, work))
                    print(f"{pair_count} pairs, {workers} workers: {run.verdict}", flush=True)
                    runs.append(run)
            print(throughput_table(runs), flush=True)
        if args.repeat:
            with fresh_database(server.dsn, "scale") as dsn:
                figures = asyncio.run(measure(args, dsn, work))
            print(
                f"{args.pairs} pairs, {args.recorders} recorders, lease_ttl_s "
                f"{args.lease_ttl:g}, load {load_average()}"
            )
            print(summary(figures))


def int_list(text: str) -> list[int]:
    return [int(n) for n in text.split(",") if n]


def rate(text: str) -> float:
    return MAX_RATE if text == "max" else float(text)


def rate_label(value: float) -> str:
    return "max" if value >= MAX_RATE else f"{value:g} events/s"


if __name__ == "__main__":
    main()

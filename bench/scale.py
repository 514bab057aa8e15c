"""Several recorders sharing the pairs through leases: how long a takeover and a rebalance
take, with real `recorder run` processes on one database and the simulator over sockets.

    flock /tmp/bench.lock nice .venv/bin/python bench/scale.py --pairs 50 --recorders 2 \
        --repeat 10

Measured, each from the moment of the cause to every pair held by exactly one live recorder
(and, where the simulator can tell, subscribed by exactly one connection):

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
from pathlib import Path
from typing import Any

from _recorder_procs import fresh_database, load_average, postgres_server

from recorder.sim.server import SimSettings, Simulator, run_sim
from tests.harness.leases import held_by, live_leases, recorder_process, shared_once
from tests.harness.recorder_process import RecorderProcess
from tests.harness.waiting import eventually

TIMEOUT_S = 180.0


async def timed(what: str, check: Any) -> float:
    started = time.monotonic()
    await eventually(check, timeout_s=TIMEOUT_S, interval_s=0.02, what=what,
                     ignoring=(Exception,))  # fmt: skip
    return time.monotonic() - started


async def measure(args: argparse.Namespace, dsn: str, work: Path) -> dict[str, list[float]]:
    pairs = tuple(f"C{n:03d}_USD" for n in range(args.pairs))
    settings = SimSettings(seed=5, pairs=pairs, rate_per_s=args.rate, history_hours=0)
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
    parser.add_argument("--rate", type=float, default=50.0, help="book events/s, all pairs")
    args = parser.parse_args()
    if args.recorders < 2:
        sys.exit("--recorders: 2 or more (a takeover needs another recorder)")
    with postgres_server() as server, fresh_database(server.dsn, "scale") as dsn:
        work = Path(tempfile.mkdtemp(prefix="recorder-bench-scale-"))
        figures = asyncio.run(measure(args, dsn, work))
    print(
        f"{args.pairs} pairs, {args.recorders} recorders, lease_ttl_s {args.lease_ttl:g}, "
        f"load {load_average()}"
    )
    print(summary(figures))


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Chaos run: record a busy simulated exchange through random faults, then prove what was kept.

    .venv/bin/python bench/chaos.py --minutes 10 --seed 1 [--rate 30] [--json out.json]
    .venv/bin/python bench/chaos.py --seconds 40 --seed 3 --pace quick --cancel-id cancel_order_id
                                                                        # as CI runs it

Starts the simulator in this process (with its per-connection delivery record on), a
PostgreSQL of its own (pgserver, so it can be crashed and started again) and the recorder as
a real `recorder run` process with a config file. For the given time it injects faults at
random, one after another, from a plan drawn from the seed (the same seed replays the same
plan; the recorder's own retry jitter is not seeded):

    socket_drop     the simulator drops every socket.io connection
    connection_drop the simulator drops one connection, the oldest open (a recorder with
                    redundant connections keeps the others)
    outage          REST answers 502 and socket.io refuses connections, for a while
    rest_storm      a share of REST calls answer 429, 500/502 or a truncated body
    socket_garbage  malformed book payloads on every channel and unknown events
    db_restart      PostgreSQL stopped the way a crash stops it (immediate), later started
    recorder_kill   SIGKILL of the recorder, restarted a little later

Then it stops injecting, waits until the recorder is subscribed again, pauses the order flow,
lets the recorder catch up, stops it with SIGTERM and compares the database with the
simulator's own record:

    trades          the engine's whole tape, exact (the recorder backfills it all)
    book events     every event the simulator sent to a recorder connection, exactly once,
                    under the stream session of one of the connections it was sent to
    book fills      every trade inside those events
    candles         the simulator's charts, every bucket, for the recorded resolutions
    book at end     book_at(pair, now()) against the engine's resting orders
    raw (socket)    every malformed or unknown socket payload sent, kept in raw_messages
    raw (rest)      truncated REST answers kept; nothing refused from the writer or spool

`--cancel-id` says which field of the simulator's cancel events names the cancelled order
(the other carries the cancel's own id); the recorder is not told, and events are compared
by the ids the wire carried.

A SIGKILL loses what the killed process had received but not yet committed (socket.io has no
replay and the recorder commits every 250 ms): events sent only to connections of the killed
process, each after the last event stored under that connection's session. Those are counted
apart ("lost to SIGKILL"), as are events made while no recorder connection was subscribed,
reported by why: during an exchange outage, while the recorder process was down or starting,
and the rest (a live recorder, the exchange up, no connection subscribed), and per fault
(during it and 5 s after). Both kinds are covered by the snapshot taken after the next
connect (which the book-at-end check proves). Everything else lost, extra, different or
duplicated, and an event stored under a session whose connection was not sent it, is a
failure. Exit code 0 when nothing was.

The driver and the comparison live in tests/harness/chaos.py, where tests/test_chaos.py runs
the same run for under a minute with every fault kind once.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from pathlib import Path

# Run as a script, this folder is on sys.path but the repository is not: the harness is.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from recorder.book import READINGS
from tests.harness.chaos import LONG, QUICK, ChaosSettings, run_chaos


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="of faults")
    parser.add_argument("--seconds", type=float, help="of faults, instead of --minutes")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--rate", type=float, default=30.0, help="book events per second")
    parser.add_argument("--pairs", default="BTC_USD,ETH_USD")
    parser.add_argument(
        "--pace",
        choices=("long", "quick"),
        default="long",
        help="fault durations and gaps: long (3-20 s) or quick (as in CI)",
    )
    parser.add_argument(
        "--overlap", action="store_true", help="faults of different kinds may overlap"
    )
    parser.add_argument(
        "--cancel-id",
        choices=READINGS,
        default="oid",
        help="the field of the simulator's cancel events that names the cancelled order",
    )
    parser.add_argument("--json", type=Path, help="also write the report as JSON here")
    parser.add_argument("--workdir", type=Path, help="keep config, log and spool here")
    args = parser.parse_args()
    settings = ChaosSettings(
        seconds=args.seconds if args.seconds is not None else args.minutes * 60,
        seed=args.seed,
        pairs=tuple(args.pairs.split(",")),
        rate_per_s=args.rate,
        pace=LONG if args.pace == "long" else QUICK,
        overlap=args.overlap,
        cancel_id=args.cancel_id,
    )
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="recorder-chaos-"))
    report = asyncio.run(run_chaos(settings, workdir))
    print(report.text())
    print(f"\nrecorder log: {workdir / 'recorder.log'}")
    if args.json:
        args.json.write_text(json.dumps(report.to_json(), indent=2, default=str) + "\n")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Catch-up benchmark: 100,000 historical trades backfilled by `recorder run`, as a fraction
of the ceiling the exchange's public rate limit allows at each page cap, and the 429s.

    .venv/bin/python bench/catchup.py [--trades 100000] [--pairs BTC_USD] [--max-pages 100,1000]

The exchange's docs give `/exchanges/` a default `limit` of 100 and no maximum; the
recorder asks for 1,000 a page and takes what comes back. Each page cap of `--max-pages`
is one run, side by side: the simulator serving at most that many trades a page
(`--max-page`), the ceiling being calls/s limit x cap.

Setup of each run: the simulator runs inside this script (so that its matching engine's
tape is at hand for the final comparison) with a generated history of at least `--trades`
trades on the given pairs (the same seed, so the same tape, in every run), no live order
flow, and the public rate limit at `--calls-per-s` (100, as the exchange's). A hook on its
HTTP server notes the time, status and trade count of every public REST answer. Each run
gets an empty database, on an embedded PostgreSQL unless --dsn names a server to create
them on. The recorder is started as its own process (`recorder run`, `trades_backfill =
"all"`, the other settings at their defaults), and the script polls the `trades` table
until it holds the whole tape, then stops the recorder with SIGTERM (exit 0 expected).

Reported per run: the time from the first `/exchanges/` request to the last trade
committed, trades per second, REST calls per second, the same as a fraction of the ceiling,
the largest page served, the 429s counted by the simulator and by the recorder's own
`recorder_http_requests_total`, and a check that the stored tape equals the engine's, trade
by trade and exactly. Then a table of the runs side by side.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import psycopg
from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _recorder_procs import cpu_seconds, free_port, fresh_database, postgres_server

from recorder.exchange.paging import ASK
from recorder.sim.server import SimSettings, Simulator

TRADES_PER_EVENT = 0.25
"""Trades the simulator's order flow makes per book event (about 0.29): sizes the history."""
HISTORY_HOURS = 24.0
TRADES_PATH = "/api/v1/exchanges/"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MICROSECOND = timedelta(microseconds=1)


class RestLog:
    """Every public REST answer the simulator gave: (monotonic time, path, status), and the
    number of trades in each `/exchanges/` page."""

    def __init__(self) -> None:
        self.answers: list[tuple[float, str, int]] = []
        self.page_sizes: Counter[int] = Counter()

    async def on_response_prepare(self, request: web.Request, response: web.StreamResponse) -> None:
        if request.path.startswith("/api/"):
            self.answers.append((time.monotonic(), request.path, response.status))
        if request.path == TRADES_PATH and isinstance(response, web.Response):
            body = response.body
            if response.status == 200 and isinstance(body, bytes):
                self.page_sizes[body.count(b'"id":')] += 1  # one per trade: cheaper than JSON

    def statuses(self, path: str, until: float) -> Counter[int]:
        return Counter(status for t, p, status in self.answers if p == path and t <= until)

    def answers_to(self, path: str) -> int:
        return sum(1 for _, p, _ in self.answers if p == path)

    def first(self, path: str) -> float:
        return min(t for t, p, _ in self.answers if p == path)


def endpoint(path: str) -> str:
    """`orderbook`, `chart`, ...: a REST path without its pair."""
    return "chart" if path.startswith("/api/charts/") else path.split("/")[3]


def write_config(
    workdir: Path, sim_url: str, dsn: str, pairs: list[str], metrics_port: int
) -> Path:
    path = workdir / "recorder.toml"
    path.write_text(
        f"""[exchange]
base_url = "{sim_url}"
socket_url = "{sim_url}"
[database]
dsn = "{dsn}"
[recorder]
data_dir = "{workdir / "data"}"
pairs = [{", ".join(f'"{p}"' for p in pairs)}]
trades_backfill = "all"
[metrics]
listen = "127.0.0.1:{metrics_port}"
"""
    )
    return path


def count_trades(dsn: str) -> int:
    try:
        with psycopg.connect(dsn) as conn:
            row = conn.execute("SELECT count(*) FROM trades").fetchone()
    except psycopg.errors.UndefinedTable:  # not migrated yet
        return 0
    assert row is not None
    return int(row[0])


async def recorder_requests(metrics_url: str) -> dict[tuple[str, str], float]:
    """recorder_http_requests_total by (endpoint, status), read from the recorder's /metrics."""
    async with aiohttp.ClientSession() as http, http.get(metrics_url) as response:
        text = await response.text()
    found: dict[tuple[str, str], float] = {}
    pattern = r'^recorder_http_requests_total\{endpoint="([^"]+)",status="([^"]+)"\} (\S+)$'
    for match in re.finditer(pattern, text, re.MULTILINE):
        found[(match[1], match[2])] = float(match[3])
    return found


def check_tape(dsn: str, sim: Simulator) -> None:
    with psycopg.connect(dsn) as conn:
        stored = conn.execute(
            "SELECT tid, pair, ts, type, price, amount FROM trades ORDER BY tid"
        ).fetchall()
    truth = [(t.tid, t.pair, t.timestamp, t.type, t.price, t.amount) for t in sim.engine.trades]
    assert len(stored) == len(truth), (len(stored), len(truth))
    for row, (tid, pair, ts, side, price, amount) in zip(stored, truth, strict=True):
        assert row[:2] == (tid, pair), (row, tid)
        assert row[3:] == (side, price, amount), (row, tid)
        assert (str(row[4]), str(row[5])) == (str(price), str(amount)), (row, tid)  # scale too
        assert (row[2] - EPOCH) // MICROSECOND == ts * 10**6, (row, tid)  # exact to the µs


@dataclass(frozen=True)
class Outcome:
    """One run's figures, for the table of runs side by side."""

    max_page: int
    trades: int
    seconds: float
    calls: int
    ceiling: int
    largest_page: int
    sim_429: int
    recorder_429: float
    exit_code: int

    @property
    def rate(self) -> float:
        return self.trades / self.seconds

    @property
    def share(self) -> float:
        return self.rate / self.ceiling


async def run(args: argparse.Namespace, max_page: int, dsn: str, workdir: Path) -> Outcome | None:
    pairs = [p.strip() for p in args.pairs.split(",") if p.strip()]
    events_per_hour = args.trades / TRADES_PER_EVENT / HISTORY_HOURS
    settings = SimSettings(
        pairs=tuple(pairs),
        seed=args.seed,
        rate_per_s=0,
        history_hours=HISTORY_HOURS,
        history_events_per_hour=events_per_hour,
        public_calls_per_s=args.calls_per_s,
        max_page=max_page,
    )
    sim = Simulator(settings)
    rest_log = RestLog()
    sim.app.on_response_prepare.append(rest_log.on_response_prepare)
    made = time.monotonic()
    await sim.start()
    trades = len(sim.engine.trades)
    print(f"\n== page cap {max_page:,} (recorder sim --max-page {max_page})")
    print(f"simulator: {trades:,} trades in {HISTORY_HOURS:.0f} h of history "
          f"({', '.join(f'{p} {len(sim.engine.trades_by_pair[p]):,}' for p in pairs)}), "
          f"made in {time.monotonic() - made:.0f} s; public limit {args.calls_per_s} calls/s",
          flush=True)  # fmt: skip
    if trades < args.trades:
        print(f"fewer trades than --trades {args.trades}: raise TRADES_PER_EVENT's margin")
        await sim.stop()
        return None

    metrics_port = free_port()
    config = write_config(workdir, sim.base_url, dsn, pairs, metrics_port)
    stderr = (workdir / "recorder.log").open("wb")
    recorder = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "recorder", "run", "--config", str(config),
        stdout=asyncio.subprocess.DEVNULL, stderr=stderr,
    )  # fmt: skip
    try:
        stored, deadline = 0, time.monotonic() + args.timeout_s
        cpu_start: tuple[float, float] | None = None
        while stored < trades:
            if cpu_start is None and rest_log.answers_to(TRADES_PATH):
                cpu_start = (cpu_seconds(recorder.pid), time.process_time())
            if recorder.returncode is not None:
                print(f"the recorder exited with {recorder.returncode}; see its log:")
                print((workdir / "recorder.log").read_text()[-3000:])
                return None
            if time.monotonic() > deadline:
                print(f"timed out with {stored:,} of {trades:,} trades stored")
                return None
            await asyncio.sleep(0.05)
            stored = await asyncio.to_thread(count_trades, dsn)
        done = time.monotonic()
        assert cpu_start is not None
        cpu = (cpu_seconds(recorder.pid) - cpu_start[0], time.process_time() - cpu_start[1])
        requests = await recorder_requests(f"http://127.0.0.1:{metrics_port}/metrics")
    finally:
        if recorder.returncode is None:
            recorder.send_signal(signal.SIGTERM)
        code = await recorder.wait()
        stderr.close()
        await sim.stop()

    start = rest_log.first(TRADES_PATH)
    seconds = done - start
    sim_statuses = rest_log.statuses(TRADES_PATH, done)
    calls = sum(sim_statuses.values())
    all_429 = sum(1 for _, _, status in rest_log.answers if status == 429)
    recorder_calls = sum(n for (endpoint, _), n in requests.items() if endpoint == "exchanges")
    recorder_429 = sum(n for (_, status), n in requests.items() if status == "429")
    ceiling = args.calls_per_s * max_page
    rate = trades / seconds
    print(f"recorder exit code after SIGTERM: {code}")
    await asyncio.to_thread(check_tape, dsn, sim)
    print(f"the stored tape equals the engine's: {trades:,} trades, exact")
    print(f"\n{trades:,} trades caught up in {seconds:.2f} s (first /exchanges/ request to the "
          f"last trade committed)")  # fmt: skip
    print(
        f"  {rate:,.0f} trades/s = {rate / ceiling:.1%} of the ceiling "
        f"({args.calls_per_s} calls/s x {max_page:,} trades per call = {ceiling:,}/s)"
    )
    print(
        f"  /exchanges/ calls: {calls:,} answered by the simulator "
        f"({calls / seconds:.1f}/s = {calls / seconds / args.calls_per_s:.1%} of the limit), "
        f"{recorder_calls:,.0f} counted by the recorder; "
        f"{trades / max(calls, 1):.1f} trades per call"
    )
    largest = max(rest_log.page_sizes, default=0)
    print(f"  pages: the recorder asked for {ASK:,}; the largest served held {largest:,} trades "
          f"({rest_log.page_sizes[largest]:,} such pages)")  # fmt: skip
    paging_s = max(t for t, p, _ in rest_log.answers if p == TRADES_PATH and t <= done) - start
    print(f"  paging (first to last /exchanges/ answer) took {paging_s:.2f} s: "
          f"{calls / paging_s:.1f} calls/s; the rest is the last batch's commit")  # fmt: skip
    print(f"  statuses of /exchanges/ answers: {dict(sorted(sim_statuses.items()))}")
    others = Counter(
        endpoint(p) for t, p, _ in rest_log.answers if start <= t <= done and p != TRADES_PATH
    )
    print(f"  other public calls meanwhile: {sum(others.values())} {dict(others)}")
    print(f"  CPU meanwhile: the recorder's process {cpu[0] / seconds:.0%} of one core, "
          f"the simulator (this script) {cpu[1] / seconds:.0%}")  # fmt: skip
    print(
        f"  429s: {all_429} sent by the simulator (all public REST), "
        f"{recorder_429:.0f} received by the recorder"
    )
    return Outcome(max_page, trades, seconds, calls, ceiling, largest, all_429, recorder_429,
                   code)  # fmt: skip


def print_table(outcomes: list[Outcome]) -> None:
    print("\n| page cap | trades | seconds | trades/s | ceiling (calls/s x cap) | share | "
          "/exchanges/ calls | largest page | 429s (sim / recorder) | tape |")  # fmt: skip
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for o in outcomes:
        print(f"| {o.max_page:,} | {o.trades:,} | {o.seconds:.2f} | {o.rate:,.0f} | "
              f"{o.ceiling:,}/s | {o.share:.1%} | {o.calls:,} | {o.largest_page:,} | "
              f"{o.sim_429} / {o.recorder_429:.0f} | exact |")  # fmt: skip


async def run_all(args: argparse.Namespace, server_dsn: str, workdir: Path) -> int:
    outcomes = []
    for max_page in args.max_pages:
        run_dir = workdir / f"cap-{max_page}"
        run_dir.mkdir()
        with fresh_database(server_dsn, f"catchup_{max_page}") as dsn:
            outcome = await run(args, max_page, dsn, run_dir)
        if args.keep_log:
            shutil.copyfile(run_dir / "recorder.log", f"{args.keep_log}.{max_page}")
        if outcome is None:
            return 1
        outcomes.append(outcome)
    print_table(outcomes)
    return 0 if all(o.exit_code == 0 for o in outcomes) else 1


def page_caps(text: str) -> list[int]:
    caps = [int(part) for part in text.split(",") if part.strip()]
    if not caps or min(caps) < 1:
        raise argparse.ArgumentTypeError(f"page caps of at least 1, comma-separated: {text!r}")
    return caps


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trades", type=int, default=100_000)
    parser.add_argument("--pairs", default="BTC_USD", help="comma-separated; the tape is shared")
    parser.add_argument(
        "--max-pages",
        type=page_caps,
        default=[100, 1000],
        help="the simulator's page caps, one run each (default 100,1000)",
    )
    parser.add_argument(
        "--calls-per-s",
        type=int,
        default=100,
        help="the simulator's public rate limit (the recorder keeps to the published 100/s)",
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--timeout-s", type=float, default=600.0)
    parser.add_argument(
        "--dsn", default="", help="a server to create the empty databases on (default: embedded)"
    )
    parser.add_argument(
        "--keep-log", type=Path, help="copy each run's recorder log (JSON) to this path.<cap>"
    )
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="recorder-bench-catchup-"))
    try:
        with ExitStack() as stack:
            server_dsn = args.dsn or stack.enter_context(postgres_server()).dsn
            return asyncio.run(run_all(args, server_dsn, workdir))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

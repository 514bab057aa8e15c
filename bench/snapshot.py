#!/usr/bin/env python3
"""Snapshot benchmark: a 10,000-order book fetched, parsed and stored by the recorder, against
a bare httpx GET + json.loads + binary COPY of the same rows.

    .venv/bin/python bench/snapshot.py [--orders 10000] [--rounds 15] [--dsn DSN]
                                       [--baseline CHECKOUT]

Starts `recorder sim --book-orders N --rate 0 --history-hours 0` as its own process (one
pair, a book of N resting orders that does not change) and, without --dsn, an embedded
PostgreSQL in a temporary directory. Then, round after round (which path goes first
alternates), each path takes one ungrouped snapshot of the book into an emptied
`book_snapshots` / `book_snapshot_orders`:

  recorder   ExchangeClient.request (rate limit token, httpx, status checks, metrics)
             -> parse.parse_orderbook (exact Decimals, every field checked, records)
             -> Writer.put + put_many, until committed (batches of 5,000 rows: binary
             COPY straight into the table in a savepoint; through staging + INSERT ...
             ON CONFLICT only when a key is already stored)
             The first two are the two calls `ExchangeClient.orderbook` makes, called one
             after the other here so that each can be timed.
  bare       httpx.Client.get -> json.loads(parse_float=Decimal) -> one transaction:
             INSERT the header, binary COPY every order straight into the table (no
             staging, no idempotency, no checks)
  bare+staging  the same, but COPY into a temporary table and INSERT ... ON CONFLICT DO
             NOTHING from there: the writer's technique without the writer

With --baseline (a checkout of an earlier commit, e.g. made by `git worktree add`), the
recorder path also parses every answer with that checkout's `parse.parse_orderbook`, in
turn before or after its own, checks that both read the same levels, and reports the row
"recorder@baseline": the recorder's fetch and store with the earlier parse, side by side.

Each part is timed (fetch / parse / store) and the median of the rounds reported, with the
recorder's in-memory L3 book rebuilt from the snapshot (its drift check) timed apart. Every
round checks that every path stored exactly the same rows, equal to the simulator's book.
The writer here commits as soon as it has rows (`flush_interval_s=0`); the daemon's 0.25 s
lets a short tail wait for company, which delays a snapshot's last rows but costs no work.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recorder.book import Book
from recorder.exchange import parse
from recorder.exchange.rest import ExchangeClient
from recorder.records import utc_now
from recorder.storage.migrate import migrate
from recorder.storage.writer import Writer

PAIR = "BTC_USD"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
ORDER_TYPES = ["uuid", "text", "int4", "int8", "numeric", "numeric", "timestamptz", "timestamptz"]
ORDER_COLUMNS = "snapshot_id, side, pos, order_id, price, amount, order_ts, taken_at"
PARTS = ("fetch", "parse", "store")
PATHS = ("recorder", "bare", "bare+staging")

Row = tuple[str, int, int, Decimal, Decimal, datetime]
"""What both paths must store per order: side, pos, order_id, price, amount, order_ts."""


class Timer:
    """Named durations of one round, in seconds."""

    def __init__(self) -> None:
        self.parts: dict[str, float] = {}

    @contextmanager
    def part(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        yield
        self.parts[name] = time.perf_counter() - started


# --- the recorder's path --------------------------------------------------------------------


def load_baseline_parse(checkout: Path) -> ModuleType:
    """`recorder.exchange.parse` of another checkout, imported beside ours: the `recorder`
    modules loaded so far are set aside while it imports, then put back."""

    def ours() -> dict[str, ModuleType]:
        return {
            n: m for n, m in sys.modules.items() if n == "recorder" or n.startswith("recorder.")
        }

    saved = ours()
    for name in saved:
        del sys.modules[name]
    sys.path.insert(0, str(checkout))
    try:
        module = importlib.import_module("recorder.exchange.parse")
    finally:
        sys.path.remove(str(checkout))
        for name in ours():
            del sys.modules[name]
        sys.modules.update(saved)
    assert module.__file__ is not None
    assert Path(module.__file__).is_relative_to(checkout), "the baseline is our own parse"
    return module


def levels(orders: list[Any]) -> list[tuple[Any, ...]]:
    return [(o.side, o.pos, o.order_id, o.price, o.amount, o.order_ts) for o in orders]


async def recorder_snapshot(
    client: ExchangeClient, writer: Writer, baseline: ModuleType | None, baseline_first: bool
) -> tuple[uuid.UUID, Timer]:
    timer = Timer()
    with timer.part("fetch"):
        answer = await client.request(
            "orderbook", "GET", f"/api/v1/orderbook/{PAIR}/", params={"group": "0"}
        )
    options: dict[str, Any] = {
        "pair": PAIR,
        "grouped": False,
        "taken_at": answer.sent_at,
        "received_at": answer.received_at,
        "reason": "bench",
    }

    earlier = None
    if baseline is not None and baseline_first:
        with timer.part("parse@baseline"):
            earlier = baseline.parse_orderbook(answer.content, **options)
    with timer.part("parse"):
        book = parse.parse_orderbook(answer.content, **options)
    if baseline is not None and not baseline_first:
        with timer.part("parse@baseline"):
            earlier = baseline.parse_orderbook(answer.content, **options)
    if earlier is not None:
        assert levels(earlier.orders) == levels(book.orders), "the baseline read other levels"
    with timer.part("store"):
        writer.put(book.snapshot)
        writer.put_many(book.orders)
        while writer.buffered_rows:  # noqa: ASYNC110 - the writer has no "committed" event
            await asyncio.sleep(0.0005)
    with timer.part("book"):
        Book.from_snapshot(book.orders)
    return book.snapshot.snapshot_id, timer


# --- the bare path --------------------------------------------------------------------------


def bare_snapshot(
    http: httpx.Client, conn: psycopg.Connection, *, idempotent: bool
) -> tuple[uuid.UUID, Timer]:
    timer = Timer()
    snapshot_id = uuid.uuid4()
    taken_at = datetime.now(UTC)
    with timer.part("fetch"):
        response = http.get(f"/api/v1/orderbook/{PAIR}/", params={"group": "0"})
        response.raise_for_status()
        received_at = datetime.now(UTC)
    with timer.part("parse"):
        body = json.loads(response.content, parse_float=Decimal)
        rows = [
            (snapshot_id, side, pos, o["id"], Decimal(o["price"]), Decimal(o["amount"]),
             EPOCH + timedelta(microseconds=int(o["timestamp"] * 1_000_000)), taken_at)
            for side in ("sell", "buy")
            for pos, o in enumerate(body[side])
        ]  # fmt: skip
    table = "bare_stage" if idempotent else "book_snapshot_orders"
    with timer.part("store"), conn.transaction(), conn.cursor() as cur:
        cur.execute(
            "INSERT INTO book_snapshots VALUES (%s, %s, %s, %s, false, 'bench-bare') "
            "ON CONFLICT DO NOTHING",
            (snapshot_id, PAIR, taken_at, received_at),
        )
        with cur.copy(f"COPY {table} ({ORDER_COLUMNS}) FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(ORDER_TYPES)
            for row in rows:
                copy.write_row(row)
        if idempotent:
            cur.execute(
                "INSERT INTO book_snapshot_orders SELECT * FROM bare_stage ON CONFLICT DO NOTHING"
            )
    return snapshot_id, timer


# --- checks ---------------------------------------------------------------------------------


def engine_book(url: str) -> list[Row]:
    """The simulator's own book (`/admin/book`), in the order a snapshot lists it."""
    body = json.loads(httpx.get(f"{url}/admin/book/{PAIR}").content, parse_float=Decimal)
    return [
        (side, pos, o["id"], o["price"], o["amount"],
         EPOCH + timedelta(microseconds=int(o["timestamp"] * 1_000_000)))
        for side in ("sell", "buy")
        for pos, o in enumerate(body[side])
    ]  # fmt: skip


def stored(conn: psycopg.Connection, snapshot_id: uuid.UUID) -> list[Row]:
    return conn.execute(
        "SELECT side, pos, order_id, price, amount, order_ts FROM book_snapshot_orders "
        "WHERE snapshot_id = %s ORDER BY side DESC, pos",  # sell first, as listed
        (snapshot_id,),
    ).fetchall()


# --- the run --------------------------------------------------------------------------------


async def run_rounds(
    url: str, dsn: str, rounds: int, spool: Path, baseline: ModuleType | None
) -> list[dict[str, Timer]]:
    truth = engine_book(url)
    print(f"the simulator's {PAIR} book: {len(truth):,} resting orders", flush=True)
    results: list[dict[str, Timer]] = []
    async with (
        ExchangeClient(url) as client,
        Writer(dsn, spool, flush_interval_s=0.0) as writer,
    ):
        with httpx.Client(base_url=url, timeout=30) as http, psycopg.connect(dsn) as conn:
            conn.autocommit = True
            conn.execute(
                "CREATE TEMP TABLE bare_stage (LIKE book_snapshot_orders) ON COMMIT DELETE ROWS"
            )
            for round_no in range(rounds + 1):  # round 0 warms up and is not counted
                conn.execute("TRUNCATE book_snapshots, book_snapshot_orders")
                conn.execute("CHECKPOINT")
                timers: dict[str, Timer] = {}
                ids = {}
                turn = round_no % len(PATHS)  # each path goes first as often as the others
                for path in PATHS[turn:] + PATHS[:turn]:
                    if path == "recorder":
                        ids[path], timers[path] = await recorder_snapshot(
                            client, writer, baseline, baseline_first=round_no % 2 == 1
                        )
                    else:
                        idempotent = path == "bare+staging"
                        ids[path], timers[path] = bare_snapshot(http, conn, idempotent=idempotent)
                for path, snapshot_id in ids.items():
                    rows = stored(conn, snapshot_id)
                    assert rows == truth, f"round {round_no}: {path} stored other rows"
                if round_no:
                    results.append(timers)
    print(f"all paths stored the same {len(truth):,} rows as the engine's book, every round")
    return results


BASELINE = "recorder@baseline"
"""The recorder path's own fetch and store with the baseline checkout's parse."""


def report(results: list[dict[str, Timer]], orders: int) -> None:
    paths = PATHS
    if "parse@baseline" in results[0]["recorder"].parts:
        paths = (*PATHS, BASELINE)
        for r in results:
            own = r["recorder"].parts
            r[BASELINE] = Timer()
            r[BASELINE].parts = {**own, "parse": own["parse@baseline"]}

    def median_ms(path: str, part: str) -> float:
        return 1000 * statistics.median(r[path].parts[part] for r in results)

    def total_ms(path: str) -> float:
        return 1000 * statistics.median(sum(r[path].parts[p] for p in PARTS) for r in results)

    print(f"\nmedian of {len(results)} rounds, milliseconds ({orders:,} orders per snapshot)")
    print(f"{'path':<24}" + "".join(f"{p:>9}" for p in (*PARTS, "total")) + f"{'orders/s':>11}")
    for path in paths:
        cells = "".join(f"{median_ms(path, p):>9.1f}" for p in PARTS)
        total = total_ms(path)
        print(f"{path:<24}{cells}{total:>9.1f}{orders / total * 1000:>11,.0f}")
    for path, other in [("recorder", o) for o in PATHS[1:]] + [
        (BASELINE, o) for o in PATHS[1:] if BASELINE in paths
    ]:  # how many times the other path's time the recorder takes
        ratios = "".join(f"{median_ms(path, p) / median_ms(other, p):>8.2f}x" for p in PARTS)
        total = total_ms(path) / total_ms(other)
        name = ("rec@baseline/" if path == BASELINE else "rec/") + other
        print(f"{name:<24}{ratios}{total:>8.2f}x")
    print(
        f"the recorder's L3 book rebuilt from the snapshot: {median_ms('recorder', 'book'):.1f} ms"
    )


def start_sim(orders: int) -> tuple[subprocess.Popen[str], str]:
    command = [
        sys.executable, "-m", "recorder", "sim", "--port", "0", "--pairs", PAIR,
        "--rate", "0", "--history-hours", "0", "--book-orders", str(orders),
    ]  # fmt: skip
    sim = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert sim.stdout is not None
    for line in sim.stdout:
        if "serving" in line:
            return sim, line.split()[3]
    sim.wait()
    raise SystemExit("recorder sim did not start")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--dsn", default="")
    parser.add_argument("--baseline", type=Path, help="a checkout whose parse to compare")
    args = parser.parse_args()
    baseline = load_baseline_parse(args.baseline.resolve()) if args.baseline else None

    workdir = Path(tempfile.mkdtemp(prefix="recorder-bench-snapshot-"))
    server: Any = None
    sim, url = start_sim(args.orders)
    try:
        dsn = args.dsn
        if not dsn:
            import pgserver

            server = pgserver.get_server(workdir / "pg", cleanup_mode="delete")
            dsn = server.get_uri()
        migrate(dsn)
        started = utc_now()
        results = asyncio.run(run_rounds(url, dsn, args.rounds, workdir / "spool", baseline))
        report(results, args.orders)
        print(f"(run took {(utc_now() - started).total_seconds():.0f} s)")
    finally:
        sim.terminate()
        sim.wait(timeout=20)
        if server is not None:
            server.cleanup()
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

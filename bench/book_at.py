#!/usr/bin/env python3
"""book_at's cost: reading each cancel from the data against 0002's "the oid is the order".

    .venv/bin/python bench/book_at.py [--book-orders 10000] [--events 3000] [--instants 100]
                                      [--cancel-id oid|cancel_order_id] [--dsn DSN]

The simulator's matching engine (in this process, no sockets) runs its seeded order flow on
one pair with a book of `--book-orders` resting orders; a snapshot is taken, then `--events`
book events are made (one snapshot window, as the recorder's 60 s interval at 50 events/s
gives), then the next snapshot. Every record takes the real path into an embedded
PostgreSQL (or `--dsn`): the exact JSON the simulator sends with `--cancel-id`, the
client's parser and classifier, the writer. Then at `--instants` instants spread over the
window, alternately:

  book_at       migrations/0007: a cancel removes whichever of its ids names a resting
                order, ambiguous ones decided by the window's evidence (book_cancels)
  book_at_0002  0002's body, installed here under that name: a cancel removes its `oid`

Each call's rows are checked against the engine's book at that instant (0002's only under
`--cancel-id oid`, the one reading it knows), and the median and 95th percentile of the
call times are reported. The engine's cancel ids trail its order ids, so in a deep book
nearly every cancel names two resting orders: the case that costs book_at the most.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import re
import statistics
import sys
import tempfile
import time
import uuid
from contextlib import ExitStack
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _recorder_procs import fresh_database, postgres_server

from recorder.book import READINGS, Reading
from recorder.exchange.classify import BookUpdate, classify
from recorder.exchange.parse import load_json, parse_orderbook, to_timestamp
from recorder.records import Record
from recorder.sim import wire
from recorder.sim.engine import Engine, Event
from recorder.sim.flow import OrderFlow, pair_spec, wall_clock
from recorder.storage.migrate import migrate, migrations_dir
from recorder.storage.writer import Writer

PAIR = "BTC_USD"
Rows = list[tuple[str, int, Decimal, Decimal]]


def engine_book(engine: Engine) -> Rows:
    return sorted(
        (side, o.oid, o.price, o.amount)
        for side in ("buy", "sell")
        for o in engine.books[PAIR].orders(side)  # type: ignore[arg-type]
    )


def snapshot_records(engine: Engine, taken_at: datetime) -> list[Record]:
    text = wire.dumps(
        {
            side: [
                {"price": o.price, "id": o.oid, "amount": o.amount, "timestamp": o.timestamp}
                for o in engine.books[PAIR].orders(side)  # type: ignore[arg-type]
            ]
            for side in ("sell", "buy")
        }
    )
    answer = parse_orderbook(text, pair=PAIR, grouped=False, taken_at=taken_at,
                             received_at=taken_at, reason="interval")  # fmt: skip
    return [answer.snapshot, *answer.orders]


def event_records(event: Event, cancel_id: Reading) -> list[Record]:
    text = wire.dumps(wire.book_payload(event, cancel_id))
    update = classify(f"book_{PAIR}", [load_json(text)], payload_text=text,
                      received_at=datetime.now(UTC), session_id=uuid.UUID(int=1))  # fmt: skip
    assert isinstance(update, BookUpdate), update
    return [update.event, *update.fills]


def market(args: argparse.Namespace) -> tuple[list[Record], list[tuple[datetime, Rows]]]:
    """The records of one snapshot window, and (instant, engine book) along it."""
    microseconds = itertools.count(1_700_000_000_000_000, 1000)
    engine = Engine([pair_spec(PAIR)], wall_clock(lambda: next(microseconds) * 1000))
    flow = OrderFlow(engine, seed=1)
    for _ in range(300):
        flow.step()
    flow.fill_book(PAIR, args.book_orders)
    records = snapshot_records(engine, to_timestamp(engine.clock()))
    engine.subscribe(lambda event: records.extend(event_records(event, args.cancel_id)))
    every = max(1, args.events // args.instants)
    instants = []
    for step in range(1, args.events + 1):
        flow.step()
        if step % every == 0:
            instants.append((to_timestamp(engine.clock()), engine_book(engine)))
    records.extend(snapshot_records(engine, to_timestamp(engine.clock())))
    return records, instants


def install_0002(dsn: str) -> None:
    text = (migrations_dir() / "0002_book_at.sql").read_text()
    body = text[text.index("CREATE FUNCTION") : text.index("COMMENT ON")]
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(re.sub(r"\bbook_at\(", "book_at_0002(", body, count=1).encode())


def timed(conn: psycopg.Connection[Any], function: str, instant: datetime) -> tuple[float, Rows]:
    started = time.perf_counter()
    statement = sql.SQL("SELECT side, order_id, price, amount FROM {}(%s, %s)").format(
        sql.Identifier(function)
    )
    rows = conn.execute(statement, (PAIR, instant)).fetchall()
    return time.perf_counter() - started, sorted(rows)


def summary(seconds: list[float]) -> str:
    ms = sorted(s * 1000 for s in seconds)
    p95 = ms[min(len(ms) - 1, round(0.95 * (len(ms) - 1)))]
    return f"median {statistics.median(ms):7.2f} ms   p95 {p95:7.2f} ms"


def run(args: argparse.Namespace, dsn: str) -> None:
    migrate(dsn)
    install_0002(dsn)
    records, instants = market(args)

    async def write() -> None:
        with tempfile.TemporaryDirectory(prefix="bench-book-at-") as spool:
            async with Writer(dsn, Path(spool)) as writer:
                writer.put_many(records)
                assert await writer.flush(300)

    asyncio.run(write())
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")
        counts = dict(conn.execute(
            "SELECT reading, count(*) FROM book_cancels(%s, %s) GROUP BY reading",
            (PAIR, instants[-1][0]),
        ).fetchall())  # fmt: skip
        times: dict[str, list[float]] = {"book_at": [], "book_at_0002": []}
        for index, (instant, truth) in enumerate(instants):
            order = ("book_at", "book_at_0002") if index % 2 else ("book_at_0002", "book_at")
            for function in order:
                seconds, rows = timed(conn, function, instant)
                times[function].append(seconds)
                if function == "book_at" or args.cancel_id == "oid":
                    assert rows == truth, f"{function} differs from the engine at {instant}"
    print(f"window: {len(records)} rows, book of {len(instants[-1][1])} orders at its end, "
          f"cancels read as {counts}")  # fmt: skip
    for function, seconds in times.items():
        print(f"{function:13} {summary(seconds)}   ({len(seconds)} instants)")
    ratio = statistics.median(times["book_at"]) / statistics.median(times["book_at_0002"])
    print(f"book_at / book_at_0002 (medians): {ratio:.2f}; every book_at equal to the engine's")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--book-orders", type=int, default=10_000)
    parser.add_argument("--events", type=int, default=3000)
    parser.add_argument("--instants", type=int, default=100)
    parser.add_argument("--cancel-id", choices=READINGS, default="cancel_order_id")
    parser.add_argument("--dsn", help="a PostgreSQL server to create a database on")
    args = parser.parse_args()
    with ExitStack() as stack:
        server = args.dsn or stack.enter_context(postgres_server()).dsn
        run(args, stack.enter_context(fresh_database(server, "book_at")))


if __name__ == "__main__":
    main()

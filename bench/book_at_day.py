#!/usr/bin/env python3
"""The book at many instants of a recorded day: book_at one call each against book_at_many.

    .venv/bin/python bench/book_at_day.py [--events 1000000] [--depth 600] [--instants 1000]
        [--spacing 86.4] [--cache DIR] [--explain] [--dsn DSN]

A day as the recorder stores it, made by the simulator's matching engine in this process
(no sockets) and copied straight into an embedded PostgreSQL (or `--dsn`): one pair,
`--events` book events at 5 million a day (57.9 a second, exponential gaps), the flow
keeping some `--depth` resting orders, an ungrouped snapshot every 60 s whose request
(`taken_at`) precedes the last event it contains (`events_through`) by up to half a second,
as on the exchange. Cancels name their order by `cancel_order_id`; the engine's cancel ids
trail its order ids, so many cancels are ambiguous and every window needs its evidence.

Instants fall every `--spacing` seconds (86.4: 1,000 over a whole day, so each snapshot
window holds at most one or two, as in a research loop over a day), `--instants` at most;
at each the engine's own book is noted. Then, side by side in one run:

  book_at_many_0014  one call for all of them: migrations/0014's book_at_many, installed
                     here under this name (every window's cancels read on every call)
  book_at_many       one call, the first: each closed window's cancels read and stored
                     (migrations/0016, book_window_readings)
  book_at_many       one call again: the stored readings used
  book_at            one call per instant, the readings stored

Every result is checked against the engine's book at its instant. `--explain` prints
EXPLAIN (ANALYZE, BUFFERS) of the book_at_many calls. `--cache DIR` keeps the generated rows
(a pickle per parameter set) so that a second run only copies.
"""

from __future__ import annotations

import argparse
import hashlib
import pickle
import random
import sys
import time
import uuid
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _recorder_procs import fresh_database, postgres_server

from recorder.sim import wire
from recorder.sim.engine import Cancel, Engine, Event
from recorder.sim.flow import MICROSECOND, FlowSettings, OrderFlow, pair_spec
from recorder.storage.migrate import migrate, migrations_dir

PAIR = "BTC_USD"
EVENTS_PER_SECOND = 5_000_000 / 86_400
SNAPSHOT_EVERY_US = 60_000_000
START_US = 1_764_547_200_000_000  # 2025-12-01 00:00 UTC
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
SESSION = uuid.UUID(int=1)
Book = list[tuple[str, int, Decimal, Decimal]]


def at_us(us: int) -> datetime:
    return EPOCH + timedelta(microseconds=us)


@dataclass
class Day:
    events: list[tuple[Any, ...]] = field(default_factory=list)
    fills: list[tuple[Any, ...]] = field(default_factory=list)
    snapshots: list[tuple[Any, ...]] = field(default_factory=list)
    snapshot_orders: list[tuple[Any, ...]] = field(default_factory=list)
    instants: list[tuple[datetime, Book]] = field(default_factory=list)


def engine_book(engine: Engine) -> Book:
    return sorted(
        (side, o.oid, o.price, o.amount)
        for side in ("buy", "sell")
        for o in engine.books[PAIR].orders(side)  # type: ignore[arg-type]
    )


def event_rows(day: Day, event: Event, us: int) -> None:
    ts = at_us(us)
    if isinstance(event, Cancel):
        oid, cancel_order_id = wire.cancel_ids(event, "cancel_order_id")
        day.events.append((PAIR, oid, "cancel", ts, event.type, event.price, event.amount,
                           cancel_order_id, ts, SESSION))  # fmt: skip
        return
    day.events.append((PAIR, event.oid, "new", ts, event.type, event.price, event.amount,
                       None, ts, SESSION))  # fmt: skip
    for f in event.trades:
        day.fills.append((PAIR, f.tid, f.oid, f.o_id, f.type, f.price, f.amount, ts, ts))


def snapshot_rows(day: Day, engine: Engine, taken_us: int, through_us: int) -> None:
    snapshot_id = uuid.uuid4()
    taken_at = at_us(taken_us)
    day.snapshots.append((snapshot_id, PAIR, taken_at, at_us(through_us + 100_000), False,
                          "interval", at_us(through_us)))  # fmt: skip
    for side in ("sell", "buy"):
        for pos, o in enumerate(engine.books[PAIR].orders(side)):  # type: ignore[arg-type]
            order_ts = EPOCH + timedelta(microseconds=int(o.timestamp / MICROSECOND))
            day.snapshot_orders.append((snapshot_id, side, pos, o.oid, o.price, o.amount,
                                        order_ts, taken_at))  # fmt: skip


def generate(args: argparse.Namespace) -> Day:
    rng = random.Random(7)
    now_us = START_US
    engine = Engine([pair_spec(PAIR)], lambda: Decimal(now_us) * MICROSECOND)
    flow = OrderFlow(engine, seed=1, settings=FlowSettings(target_orders_per_side=args.depth // 2))
    flow.fill_book(PAIR, args.depth)
    day = Day()
    snapshot_rows(day, engine, now_us, now_us)
    mean_gap_us = 1e6 / EVENTS_PER_SECOND
    spacing_us = int(args.spacing * 1e6)
    next_instant = START_US + spacing_us // 2
    next_snapshot = START_US + SNAPSHOT_EVERY_US
    last_event_us = now_us
    started = time.perf_counter()
    for made in range(args.events):
        now_us += max(1, int(rng.expovariate(1 / mean_gap_us)))
        while next_instant < now_us and len(day.instants) < args.instants:
            day.instants.append((at_us(next_instant), engine_book(engine)))
            next_instant += spacing_us
        if now_us >= next_snapshot:
            # asked up to half a second before the last event the answer holds
            taken_us = max(last_event_us - rng.randrange(500_000), next_snapshot - 1_000_000)
            snapshot_rows(day, engine, min(taken_us, last_event_us), last_event_us)
            next_snapshot += SNAPSHOT_EVERY_US
        event_rows(day, flow.step(), now_us)
        last_event_us = now_us
        if made % 200_000 == 199_999:
            print(f"  {made + 1} events, {time.perf_counter() - started:.0f} s", flush=True)
    return day


def cached(args: argparse.Namespace) -> Day:
    if not args.cache:
        return generate(args)
    key = hashlib.sha256(repr((args.events, args.depth, args.instants, args.spacing, 2)).encode())
    path = Path(args.cache) / f"book_at_day-{key.hexdigest()[:16]}.pickle"
    if path.exists():
        return pickle.loads(path.read_bytes())  # noqa: S301 - our own cache file
    day = generate(args)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(day, protocol=pickle.HIGHEST_PROTOCOL))
    return day


COLUMNS = {
    "book_events": "pair, oid, kind, ts, type, price, amount, cancel_order_id, received_at, "
    "session_id",
    "book_fills": "pair, tid, oid, o_id, type, price, amount, ts, received_at",
    "book_snapshots": "snapshot_id, pair, taken_at, received_at, grouped, reason, events_through",
    "book_snapshot_orders": "snapshot_id, side, pos, order_id, price, amount, order_ts, taken_at",
}


def load(dsn: str, day: Day) -> None:
    tables = {
        "book_snapshots": day.snapshots,
        "book_snapshot_orders": day.snapshot_orders,
        "book_events": day.events,
        "book_fills": day.fills,
    }
    with psycopg.connect(dsn, autocommit=True) as conn:
        for table, rows in tables.items():
            with conn.cursor().copy(f"COPY {table} ({COLUMNS[table]}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
        conn.execute("VACUUM ANALYZE")


def install_0014(dsn: str) -> None:
    text = (migrations_dir() / "0014_book_at_many.sql").read_text()
    body = text[text.index("CREATE FUNCTION book_at_many") : text.index("COMMENT ON")]
    body = body.replace("book_at_many(", "book_at_many_0014(")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(body.encode())


def explain(conn: psycopg.Connection[Any], statement: str, params: tuple[Any, ...]) -> None:
    plan = conn.execute(f"EXPLAIN (ANALYZE, BUFFERS) {statement}", params).fetchall()
    print("\n".join(row[0] for row in plan))


def summary(seconds: list[float]) -> str:
    ms = sorted(s * 1000 for s in seconds)
    p95 = ms[min(len(ms) - 1, round(0.95 * (len(ms) - 1)))]
    return f"median {sorted(ms)[len(ms) // 2]:7.2f} ms   p95 {p95:7.2f} ms"


def many(
    conn: psycopg.Connection[Any],
    function: str,
    instants: list[datetime],
    truth: dict[datetime, Book],
) -> tuple[float, int]:
    """One call of `function` at every instant, checked against the engine: seconds, rows."""
    started = time.perf_counter()
    rows = conn.execute(
        f"SELECT at, side, order_id, price, amount FROM {function}(%s, %s)",  # noqa: S608
        (PAIR, instants),
    ).fetchall()
    seconds = time.perf_counter() - started
    books: dict[datetime, Book] = {instant: [] for instant in instants}
    for at, *order in rows:
        books[at].append(tuple(order))  # type: ignore[arg-type]
    for instant in instants:
        assert sorted(books[instant]) == truth[instant], f"{function} differs at {instant}"
    return seconds, len(rows)


def measure(dsn: str, day: Day, args: argparse.Namespace) -> None:
    instants = [instant for instant, _ in day.instants]
    truth = dict(day.instants)
    with psycopg.connect(dsn, autocommit=True) as conn:
        if args.explain:
            for function in ("book_at_many_0014", "book_at_many"):
                print(f"-- {function} at every instant")
                explain(conn, f"SELECT * FROM {function}(%s, %s)", (PAIR, instants))  # noqa: S608
            conn.execute("TRUNCATE book_window_readings")
        old, rows = many(conn, "book_at_many_0014", instants, truth)
        first, _ = many(conn, "book_at_many", instants, truth)
        stored = conn.execute("SELECT count(*) FROM book_window_readings").fetchone()
        again, _ = many(conn, "book_at_many", instants, truth)
        seconds: list[float] = []
        started = time.perf_counter()
        for instant in instants:
            t = time.perf_counter()
            got = conn.execute(
                "SELECT side, order_id, price, amount FROM book_at(%s, %s)", (PAIR, instant)
            ).fetchall()
            seconds.append(time.perf_counter() - t)
            assert sorted(got) == truth[instant], f"book_at differs from the engine at {instant}"
        each = time.perf_counter() - started
    n = len(instants)
    for name, total in (("book_at_many_0014", old), ("book_at_many first", first),
                        ("book_at_many again", again)):  # fmt: skip
        print(f"{name:19} 1 call   {total:7.2f} s   ({total / n * 1000:6.2f} ms an instant)")
    print(f"{'book_at':19} {n} calls {each:7.2f} s   {summary(seconds)}")
    print(f"{rows} rows; {stored[0] if stored else 0} window readings stored by the first call")
    print(
        f"book_at_many_0014 / book_at_many again: {old / again:.1f}; "
        f"book_at_many_0014 / book_at_many first: {old / first:.2f}; "
        "every result equal to the engine's book"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--depth", type=int, default=600)
    parser.add_argument("--instants", type=int, default=1000)
    parser.add_argument("--spacing", type=float, default=86.4)
    parser.add_argument("--cache", help="a directory to keep the generated day in")
    parser.add_argument("--explain", action="store_true")
    parser.add_argument("--dsn", help="a PostgreSQL server to create a database on")
    args = parser.parse_args()
    started = time.perf_counter()
    day = cached(args)
    if not day.instants:
        parser.error("no instant falls within the events: lower --spacing or raise --events")
    span_h = (len(day.snapshots) - 1) / 60
    print(f"day: {len(day.events)} events, {len(day.fills)} fills, {len(day.snapshots)} snapshots "
          f"({len(day.snapshot_orders)} orders), {span_h:.1f} h, {len(day.instants)} instants, "
          f"book of {len(day.instants[-1][1])} orders at the last "
          f"({time.perf_counter() - started:.0f} s)", flush=True)  # fmt: skip
    with ExitStack() as stack:
        server = args.dsn or stack.enter_context(postgres_server()).dsn
        dsn = stack.enter_context(fresh_database(server, "book_at_day"))
        migrate(dsn)
        install_0014(dsn)
        started = time.perf_counter()
        load(dsn, day)
        print(f"copied and analysed in {time.perf_counter() - started:.0f} s", flush=True)
        with open("/proc/loadavg") as loadavg:
            print(f"loadavg before: {loadavg.read().strip()}")
        measure(dsn, day, args)
        with open("/proc/loadavg") as loadavg:
            print(f"loadavg after:  {loadavg.read().strip()}")


if __name__ == "__main__":
    main()

"""Writer benchmark: the recorder's writer against the usual ways of putting rows in Postgres.

    .venv/bin/python bench/writer.py [--rows 100000] [--batch 5000] [--repeat 3] [--dsn DSN]
    .venv/bin/python bench/writer.py --profile     # where the writer's time goes (cProfile)
    .venv/bin/python bench/writer.py --only recorder,raw,multi   # some methods (label prefixes)

Every method writes the same trades (exact decimals) into an emptied `trades_stored` table
(what the `trades` view reads: price and amount as scaled integers, 11 columns,
migrations/0020_scaled_prices.sql), batch by batch as a recorder would, and commits each
batch. Each starts from the same `Trade` records and builds its rows (`TableSpec.rows`: the
scaled values split in C where the package has its C module) inside the time measured
(until 2026-11-30 only the writer did; the others were handed ready tuples). Reported: the median
rows/s of `--repeat` rounds (the methods take turns within each round, so a load that comes
and goes hits them alike) and the ratio to the recorder's writer, measured side by side in
one run, then the writer against the two marks it is held to: raw COPY and the multi-row
INSERT. Without --dsn an embedded PostgreSQL is started in a temporary directory. Methods:

  recorder writer        Writer.put() + flush: binary COPY straight into the table (the
                         table is empty, so no key is there: the usual case)
  writer, replay         the same rows again into the full table: every COPY is refused
                         and the writer merges (binary COPY to staging, INSERT ON CONFLICT)
  unnest statement       INSERT ... SELECT * FROM unnest(arrays) ON CONFLICT: one round trip
  COPY staging + INSERT  binary COPY into a temp table, INSERT ... ON CONFLICT DO NOTHING
  raw COPY               binary COPY straight into the table (no idempotency: the ceiling),
                         psycopg's own encoders: what a feed handler gets from psycopg
  raw COPY, C numerics   the same with the writer's numeric encoder (recorder/storage/
                         numeric.py): the ceiling for the writer's own encoding
  executemany            psycopg executemany of a one-row INSERT ... ON CONFLICT
  multi-row INSERT       one INSERT ... VALUES (...),(...),... string per batch
  multi-row INSERT, numeric table
                         the same into a feed handler's own table: the trade's 7 columns,
                         price and amount `numeric` (the layout `trades` had before 0020, a
                         hypertable like it on TimescaleDB): fewer, shorter literals to
                         write and parse, so the fairest mark for the writer after 0020
  multi-row INSERT, numeric table keyed in time order
                         the same into that table keyed (pair, ts, tid) with no other index
                         (as trades_stored is on TimescaleDB since 0022): a feed handler that
                         spared its table the (pair, ts) index too
  INSERT per event       one INSERT and commit per row (measured on fewer rows)
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recorder.records import Trade
from recorder.storage.embedded import embedded_postgres
from recorder.storage.migrate import migrate
from recorder.storage.numeric import ENCODER, use_c_numerics
from recorder.storage.tables import SPECS
from recorder.storage.writer import Writer

SPEC = SPECS[Trade]
TABLE = SPEC.stored
COLUMNS = SPEC.stored_column_names
ONE_ROW_INSERT = (
    f"INSERT INTO {TABLE} ({COLUMNS}) "  # noqa: S608
    f"VALUES ({', '.join(['%s'] * len(SPEC.stored_columns))}) ON CONFLICT DO NOTHING"
)


@contextmanager
def bench_database(dsn: str, name: str) -> Iterator[tuple[str, Path]]:
    """`dsn` migrated, or without one an embedded PostgreSQL in a scratch directory; yields
    the DSN and that directory, which is removed afterwards."""
    workdir = Path(tempfile.mkdtemp(prefix=f"recorder-bench-{name}-"))
    try:
        with ExitStack() as databases:
            dsn = dsn or databases.enter_context(embedded_postgres(workdir))
            migrate(dsn)
            yield dsn, workdir
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def make_trades(count: int) -> list[Trade]:
    start = datetime(2024, 1, 1, tzinfo=UTC)
    return [
        Trade(
            pair=("BTC_USD", "ETH_USD", "ETH_BTC")[i % 3],
            tid=i,
            ts=start + timedelta(milliseconds=i),
            type="buy" if i % 2 else "sell",
            price=Decimal(f"{900 + i % 97}.{i % 1000:03d}"),
            amount=Decimal(f"0.{i % 99_999_999:08d}"),
            received_at=start + timedelta(milliseconds=i, microseconds=300),
        )
        for i in range(1, count + 1)
    ]


# A feed handler's own table for its trades: 0001's columns, price and amount `numeric`.
NUMERIC_TABLE = "trades_numeric"
NUMERIC_KEYED_TABLE = "trades_numeric_time_key"  # the same, keyed (pair, ts, tid) alone
NUMERIC_LAYOUT = (
    "pair text NOT NULL, tid bigint NOT NULL, ts timestamptz NOT NULL, type text NOT NULL, "
    "price numeric NOT NULL, amount numeric NOT NULL, received_at timestamptz NOT NULL"
)


def rows_of(trades: list[Trade]) -> list[tuple[object, ...]]:
    return SPEC.rows(trades)


def numeric_rows_of(trades: list[Trade]) -> list[tuple[object, ...]]:
    return [SPEC.to_row(trade) for trade in trades]


def make_numeric_table(dsn: str) -> None:
    """`NUMERIC_TABLE` with the keys `trades` had, `NUMERIC_KEYED_TABLE` keyed in time order,
    and on TimescaleDB both with the same chunking."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        timescale = conn.execute(
            "SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'"
        ).fetchone()
        key = "pair, tid, ts" if timescale else "pair, tid"
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS {NUMERIC_TABLE} ({NUMERIC_LAYOUT}, PRIMARY KEY ({key}))"
        )
        conn.execute(
            f"CREATE INDEX IF NOT EXISTS {NUMERIC_TABLE}_pair_ts ON {NUMERIC_TABLE} (pair, ts)"
        )
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS {NUMERIC_KEYED_TABLE} "
            f"({NUMERIC_LAYOUT}, PRIMARY KEY (pair, ts, tid))"
        )
        if timescale:
            for table in (NUMERIC_TABLE, NUMERIC_KEYED_TABLE):
                conn.execute(
                    f"SELECT create_hypertable('{table}', by_range('ts', INTERVAL '1 day'), "
                    "if_not_exists => true)"
                )


def batches(rows: list[tuple[object, ...]], size: int) -> list[list[tuple[object, ...]]]:
    return [rows[i : i + size] for i in range(0, len(rows), size)]


def unnest_statement(conn: psycopg.Connection, rows: list[tuple[object, ...]], size: int) -> None:
    sql = SPEC.insert_sql()
    for batch in batches(rows, size):
        with conn.transaction():
            conn.execute(sql, [list(column) for column in zip(*batch, strict=True)])


def copy_staging(conn: psycopg.Connection, rows: list[tuple[object, ...]], size: int) -> None:
    conn.execute(f"CREATE TEMP TABLE IF NOT EXISTS stage (LIKE {TABLE}) ON COMMIT DELETE ROWS")
    types = SPEC.types
    for batch in batches(rows, size):
        with conn.transaction(), conn.cursor() as cur:
            with cur.copy(f"COPY stage ({COLUMNS}) FROM STDIN (FORMAT BINARY)") as copy:
                copy.set_types(types)
                for row in batch:
                    copy.write_row(row)
            cur.execute(f"INSERT INTO {TABLE} SELECT * FROM stage ON CONFLICT DO NOTHING")  # noqa: S608


def raw_copy_c_numerics(
    conn: psycopg.Connection, rows: list[tuple[object, ...]], size: int
) -> None:
    assert use_c_numerics(conn), "built without recorder/storage/_numeric.c"
    raw_copy(conn, rows, size)


def raw_copy(conn: psycopg.Connection, rows: list[tuple[object, ...]], size: int) -> None:
    copy_into(conn, TABLE, COLUMNS, SPEC.types, rows, size)


def copy_into(conn: psycopg.Connection, table: str, columns: str, types: list[str],
              rows: list[tuple[object, ...]], size: int) -> None:  # fmt: skip
    """Binary COPY of `rows` into `table`, a batch of `size` per transaction."""
    for batch in batches(rows, size):
        with (
            conn.transaction(),
            conn.cursor() as cur,
            cur.copy(f"COPY {table} ({columns}) FROM STDIN (FORMAT BINARY)") as copy,
        ):
            copy.set_types(types)
            for row in batch:
                copy.write_row(row)


def executemany(conn: psycopg.Connection, rows: list[tuple[object, ...]], size: int) -> None:
    for batch in batches(rows, size):
        with conn.transaction(), conn.cursor() as cur:
            cur.executemany(ONE_ROW_INSERT, batch)


def multirow_string(conn: psycopg.Connection, rows: list[tuple[object, ...]], size: int) -> None:
    """The way many feed handlers write: format the values into one big statement."""
    multirow_into(conn, rows, size, f"{TABLE} ({COLUMNS})")


def multirow_numeric(conn: psycopg.Connection, rows: list[tuple[object, ...]], size: int) -> None:
    multirow_into(conn, rows, size, f"{NUMERIC_TABLE} ({SPEC.column_names})")


def multirow_numeric_keyed(
    conn: psycopg.Connection, rows: list[tuple[object, ...]], size: int
) -> None:
    multirow_into(conn, rows, size, f"{NUMERIC_KEYED_TABLE} ({SPEC.column_names})")


def multirow_into(
    conn: psycopg.Connection, rows: list[tuple[object, ...]], size: int, into: str
) -> None:
    for batch in batches(rows, size):
        values = ",".join(f"({','.join(map(literal, row))})" for row in batch)
        with conn.transaction():
            conn.execute(f"INSERT INTO {into} VALUES {values} ON CONFLICT DO NOTHING".encode())  # noqa: S608


def literal(value: object) -> str:
    """A value of a trade row as SQL text (our own values: no quoting needed)."""
    if value is None:
        return "NULL"
    if isinstance(value, datetime):
        return f"'{value.isoformat()}'"
    return f"'{value}'" if isinstance(value, str) else str(value)


def insert_per_event(conn: psycopg.Connection, rows: list[tuple[object, ...]], size: int) -> None:
    for row in rows:
        with conn.transaction():
            conn.execute(ONE_ROW_INSERT, row)


def recorder_writer(dsn: str, trades: list[Trade], size: int, spool: Path) -> None:
    async def run() -> None:
        async with Writer(dsn, spool, batch_rows=size, max_buffer_rows=len(trades) + 1) as writer:
            for trade in trades:
                writer.put(trade)
            assert await writer.flush(600)

    asyncio.run(run())


def measure(
    dsn: str, label: str, write: Callable[[], None], expected: int, *, keep: bool = False
) -> float:
    """Rows/s of `write`; `keep` leaves the table as it is (a replay onto stored rows)."""
    table = {NUMERIC_LABEL: NUMERIC_TABLE, NUMERIC_KEYED_LABEL: NUMERIC_KEYED_TABLE}.get(label)
    table, readable = (table, table) if table else (TABLE, "trades")
    with psycopg.connect(dsn, autocommit=True) as conn:
        if not keep:
            conn.execute(f"TRUNCATE {table}")
        conn.execute("CHECKPOINT")
    started = time.perf_counter()
    write()
    elapsed = time.perf_counter() - started
    with psycopg.connect(dsn) as conn:
        row = conn.execute(f"SELECT count(*), sum(price * amount) FROM {readable}").fetchone()  # noqa: S608
    assert row is not None, label
    assert row[0] == expected, (label, row)
    return expected / elapsed


NUMERIC_LABEL = "multi-row INSERT, numeric table"
NUMERIC_KEYED_LABEL = "multi-row INSERT, numeric table keyed in time order"


def profile_writer(dsn: str, trades: list[Trade], size: int, spool: Path) -> None:
    """Split the writer's time between PostgreSQL (the loop waiting on its socket) and
    Python (records to rows, de-dup, encoding, the writer's own bookkeeping)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"TRUNCATE {TABLE}")
    profiler = cProfile.Profile()
    started = time.perf_counter()
    profiler.enable()
    recorder_writer(dsn, trades, size, spool)
    profiler.disable()
    elapsed = time.perf_counter() - started
    stats = pstats.Stats(profiler)
    entries = stats.stats  # type: ignore[attr-defined]
    waiting = sum(tt for (_, _, name), (_, _, tt, _, _) in entries.items() if "poll" in name)
    encoding = sum(
        ct for (path, _, name), (_, _, _, ct, _) in entries.items()
        if name == "write_row" and path.endswith("_copy_base.py")
    )  # fmt: skip
    print(f"{len(trades)} trades through the writer under cProfile: {elapsed:.2f} s")
    print(f"  waiting for PostgreSQL (COPY, commit)   {waiting:6.2f} s")
    print(f"  encoding rows (psycopg binary COPY, C)  {encoding:6.2f} s")
    print(f"  the rest of Python (put, grouping, ...) {elapsed - waiting - encoding:6.2f} s")
    stats.sort_stats("tottime").print_stats(12)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=5000)
    parser.add_argument("--per-event-rows", type=int, default=5000)
    parser.add_argument("--dsn", default="")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--profile", action="store_true", help="profile the writer instead")
    parser.add_argument(
        "--only", default="", help="comma-separated label prefixes: run only these methods"
    )
    args = parser.parse_args()

    with bench_database(args.dsn, "writer") as (dsn, workdir):
        trades = make_trades(args.rows)
        if args.profile:
            profile_writer(dsn, trades, args.batch, workdir / "spool")
            return
        few = trades[: args.per_event_rows]

        # Every method starts from the same records and builds its rows (tuples for COPY and
        # parameters, text for the string INSERT) inside the time measured, as the writer
        # and any feed handler must.
        make_numeric_table(dsn)

        def sync(method: Callable[[psycopg.Connection, list[tuple[object, ...]], int], None],
                 records: list[Trade], rows: Callable[[list[Trade]], list[tuple[object, ...]]]
                 = rows_of) -> Callable[[], None]:  # fmt: skip
            def go() -> None:
                with psycopg.connect(dsn, autocommit=True) as conn:
                    method(conn, rows(records), args.batch)

            return go

        def writer() -> None:
            recorder_writer(dsn, trades, args.batch, workdir / "spool")

        # (label, write, rows expected afterwards, onto the rows already stored)
        methods: list[tuple[str, Callable[[], None], int, bool]] = [
            ("recorder writer", writer, len(trades), False),
            ("writer, replay", writer, len(trades), True),  # right after the writer's run
            ("unnest statement", sync(unnest_statement, trades), len(trades), False),
            ("COPY staging + INSERT", sync(copy_staging, trades), len(trades), False),
            ("raw COPY (no idempotency)", sync(raw_copy, trades), len(trades), False),
            ("raw COPY, C numerics", sync(raw_copy_c_numerics, trades), len(trades), False),
            ("executemany", sync(executemany, trades), len(trades), False),
            ("multi-row string INSERT", sync(multirow_string, trades), len(trades), False),
            (NUMERIC_LABEL, sync(multirow_numeric, trades, numeric_rows_of), len(trades), False),
            (NUMERIC_KEYED_LABEL, sync(multirow_numeric_keyed, trades, numeric_rows_of),
             len(trades), False),
            ("INSERT per event", sync(insert_per_event, few), len(few), False),
        ]  # fmt: skip
        if args.only:
            wanted = [prefix.strip() for prefix in args.only.split(",")]
            methods = [m for m in methods if any(m[0].startswith(w) for w in wanted)]
        rates: dict[str, list[float]] = {label: [] for label, *_ in methods}
        for _ in range(args.repeat):
            for label, write, expected, keep in methods:
                rates[label].append(measure(dsn, label, write, expected, keep=keep))
        results = [(label, statistics.median(rates[label])) for label, *_ in methods]
        baseline = results[0][1]
        print(
            f"{args.rows} trades, batches of {args.batch} (INSERT per event: {len(few)} rows), "
            f"median of {args.repeat} rounds; the writer's numeric encoder: {ENCODER}"
        )
        print(f"{'method':<52} {'rows/s':>10} {'vs writer':>10}   rounds")
        for label, rate in results:
            runs = " ".join(f"{r:,.0f}" for r in rates[label])
            print(f"{label:<52} {rate:>10,.0f} {rate / baseline:>9.2f}x   {runs}")
        median = dict(results)
        marks = ("raw COPY (no idempotency)", "multi-row string INSERT", NUMERIC_LABEL,
                 NUMERIC_KEYED_LABEL)  # fmt: skip
        for mark in marks:
            if mark in median:
                print(f"writer / {mark}: {baseline / median[mark]:.2f}x")


if __name__ == "__main__":
    main()

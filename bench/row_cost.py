"""Where a row of `trades_stored` costs PostgreSQL its time: raw binary COPY of the same
prepared trades into copies of the table, each without one part.

    .venv/bin/python bench/row_cost.py [--rows 100000] [--repeat 3] [--dsn DSN]

The rows are built before the clock starts, so only the server's work differs between the
variants. Each variant is a fresh table made `LIKE trades_stored` (on TimescaleDB a
hypertable with the same chunking); the methods take turns round after round and the median
is reported. Without --dsn an embedded PostgreSQL is started in a temporary directory.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.writer import (
    NUMERIC_LAYOUT,
    SPEC,
    bench_database,
    copy_into,
    make_trades,
    numeric_rows_of,
    rows_of,
)

HYPERTABLE = "SELECT create_hypertable('{t}', by_range('ts', INTERVAL '1 day'))"

COLLATE_C = 'ALTER TABLE {t} ALTER pair TYPE text COLLATE "C", ALTER type TYPE text COLLATE "C"'

# (name, what it is, its DDL after `CREATE TABLE name (LIKE trades_stored ...)`)
PLAIN = [
    ("v_as_is", "trades_stored's columns, checks and indexes", "INCLUDING ALL", []),
    ("v_no_checks", "without its CHECK constraints", "INCLUDING INDEXES", []),
    ("v_collate_c", 'with `pair` and `type` in the "C" collation', "INCLUDING ALL",
     [COLLATE_C]),
    ("v_key_only", "the key alone, no (pair, ts) index", "INCLUDING CONSTRAINTS",
     ["ALTER TABLE {t} ADD PRIMARY KEY (pair, tid)"]),
    ("v_heap", "the heap alone: no index", "INCLUDING CONSTRAINTS", []),
]  # fmt: skip
BEFORE_0022 = [
    "ALTER TABLE {t} ADD PRIMARY KEY (pair, tid, ts)",
    "CREATE INDEX ON {t} (pair, ts)",
    HYPERTABLE,
]
TIMESCALE = [
    ("h_as_is", "a hypertable with trades_stored's indexes, no continuous aggregates",
     "INCLUDING ALL", [HYPERTABLE]),
    ("h_before_0022", "keyed (pair, tid, ts), a (pair, ts) index, the time index (before 0022)",
     "INCLUDING CONSTRAINTS", BEFORE_0022),
    ("h_collate_c", 'the same with `pair` and `type` in the "C" collation',
     "INCLUDING CONSTRAINTS", [COLLATE_C, *BEFORE_0022]),
]  # fmt: skip


def copy_rows(dsn: str, table: str, columns: str, types: list[str], rows: list[tuple[object, ...]],
              size: int) -> None:  # fmt: skip
    with psycopg.connect(dsn, autocommit=True) as conn:
        copy_into(conn, table, columns, types, rows, size)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--dsn", default="")
    args = parser.parse_args()

    with bench_database(args.dsn, "row-cost") as (dsn, _):
        trades = make_trades(args.rows)
        rows, numeric_rows = rows_of(trades), numeric_rows_of(trades)
        with psycopg.connect(dsn, autocommit=True) as conn:
            timescale = bool(
                conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'").rowcount
            )
            variants = TIMESCALE if timescale else PLAIN
            for table, _, like, ddl in variants:
                conn.execute(f"DROP TABLE IF EXISTS {table}")
                conn.execute(f"CREATE TABLE {table} (LIKE {SPEC.stored} {like})")
                for statement in ddl:
                    conn.execute(statement.format(t=table))
            conn.execute("DROP TABLE IF EXISTS v_numeric")
            key = "pair, tid, ts" if timescale else "pair, tid"
            conn.execute(f"CREATE TABLE v_numeric ({NUMERIC_LAYOUT}, PRIMARY KEY ({key}))")
            conn.execute("CREATE INDEX ON v_numeric (pair, ts)")
            if timescale:
                conn.execute(HYPERTABLE.format(t="v_numeric"))

        numeric_types = ["text", "bigint", "timestamptz", "text", "numeric", "numeric",
                         "timestamptz"]  # fmt: skip
        methods = [
            (SPEC.stored, f"{SPEC.stored} itself (on TimescaleDB with its continuous aggregates)",
             SPEC.stored_column_names, SPEC.types, rows),
            *((table, what, SPEC.stored_column_names, SPEC.types, rows)
              for table, what, _, _ in variants),
            ("v_numeric", "a feed handler's 7 columns, price and amount numeric, (pair, ts) index",
             SPEC.column_names, numeric_types, numeric_rows),
        ]  # fmt: skip
        rates: dict[str, list[float]] = {table: [] for table, *_ in methods}
        for _ in range(args.repeat):
            for table, _, columns, types, prepared in methods:
                with psycopg.connect(dsn, autocommit=True) as conn:
                    conn.execute(f"TRUNCATE {table}")
                    conn.execute("CHECKPOINT")
                started = time.perf_counter()
                copy_rows(dsn, table, columns, types, prepared, args.batch)
                rates[table].append(args.rows / (time.perf_counter() - started))
                with psycopg.connect(dsn) as conn:
                    count = conn.execute(f"SELECT count(*) FROM {table}").fetchone()  # noqa: S608
                assert count == (args.rows,), (table, count)
        backend = "TimescaleDB" if timescale else "PostgreSQL"
        print(f"{args.rows} prepared trades by binary COPY, batches of {args.batch}, {backend}, "
              f"median of {args.repeat} rounds")  # fmt: skip
        for table, what, *_ in methods:
            runs = " ".join(f"{rate:,.0f}" for rate in rates[table])
            print(f"{statistics.median(rates[table]):>10,.0f} rows/s  {what}   ({runs})")


if __name__ == "__main__":
    main()

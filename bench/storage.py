#!/usr/bin/env python3
"""Bytes on disk per trade, book event, fill, snapshot order and candle, plain and Timescale.

    .venv/bin/python bench/storage.py [--seconds 60] [--rate 500] [--book-orders 2000]
                                      [--history-per-hour 3600] [--no-timescaledb]
                                      [--tsdb ../shared/timescaledb/tsdb.py]
                                      [--alternative TABLE:SEGMENTBY:ORDERBY ...]
                                      [--per-column] [--numeric] [--breakdown TABLE ...]

One simulated exchange (in this process) is recorded by two recorders at once, one into a
plain PostgreSQL and one into a PostgreSQL with TimescaleDB (`../shared/timescaledb`), so
both databases hold the same market data. The simulator starts with a day of trade history
(`--history-per-hour` book events an hour, whose fills are the trades both recorders
backfill), then makes `--rate` book events per second for
`--seconds`, with a REST snapshot of each book (filled to `--book-orders` resting orders at
the start: a deep book) every 5 seconds. The recorders are stopped
cleanly (everything committed), then each table is measured after VACUUM ANALYZE:

  heap    pg_table_size: the rows, their TOAST and free-space/visibility maps
  index   pg_indexes_size: the primary key and the other indexes
  total   heap + index, divided by the table's row count: bytes per row

On TimescaleDB the hypertables (trades, book_events, book_fills, book_snapshot_orders,
candles) are measured with
`hypertable_detailed_size` twice: as written (row store, as during the first 7 days) and
after converting every chunk to the columnstore (`convert_to_columnstore`, what the
migration's columnstore policy does to older chunks). The last table puts the three side by
side with the ratio plain / columnstore.

`trades` and `book_fills` are views over `trades_stored` and `book_fills_stored`, which keep
price and amount as exact scaled integers (migrations/0020_scaled_prices.sql): their sizes
are the stored tables', shown under the views' names.

`--breakdown TABLE` shows where a hypertable's bytes go after conversion: each relation
(the hypertable, each chunk's emptied row store and its columnstore) by fork (main,
free-space map, visibility map), TOAST and index. `--per-column` shows, for each
hypertable, what each column's compressed values cost per row. `--numeric` measures, on
the same rows, `trades` and `book_fills` also as they were stored before migration 0020
(price and amount `numeric`, 0001's columns): copies of both in that layout, plain and in
the columnstore with 0003's settings, so that one run shows the layouts side by side.
"""

from __future__ import annotations

import argparse
import asyncio
import runpy
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _recorder_procs import free_port

from recorder.config import load_config
from recorder.daemon import Daemon
from recorder.sim.server import SimSettings, Simulator, run_sim
from recorder.storage.embedded import embedded_postgres

ROOT = Path(__file__).resolve().parents[1]
TSDB_SCRIPT = ROOT.parent / "shared" / "timescaledb" / "tsdb.py"
TABLES = ("trades", "book_events", "book_fills", "book_snapshot_orders", "book_snapshots")
HYPERTABLES = ("trades", "book_events", "book_fills", "book_snapshot_orders", "candles")
STORED_IN = {"trades": "trades_stored", "book_fills": "book_fills_stored"}


def stored(table: str) -> str:
    """The table that holds `table`'s rows (itself, or the one under its view)."""
    return STORED_IN.get(table, table)


def write_config(directory: Path, sim: Simulator, dsn: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "recorder.toml"
    path.write_text(
        f"""
[exchange]
base_url = "{sim.base_url}"
socket_url = "{sim.base_url}"
[database]
dsn = "{dsn}"
[recorder]
data_dir = "{directory / "data"}"
snapshot_interval_s = 5
trades_poll_interval_s = 1
candles_poll_interval_s = 5
candle_types = ["1", "5", "60"]
trades_backfill = "all"
[metrics]
listen = "127.0.0.1:{free_port()}"
[logging]
level = "warning"
"""
    )
    return path


async def record(settings: SimSettings, dsns: dict[str, str], work: Path, seconds: float) -> None:
    async with run_sim(settings) as sim:
        sim.pause()
        await record_live(sim, dsns, work, seconds)


async def record_live(sim: Simulator, dsns: dict[str, str], work: Path, seconds: float) -> None:
    daemons = {
        name: Daemon(load_config(write_config(work / name, sim, dsn))) for name, dsn in dsns.items()
    }
    runs = [asyncio.create_task(daemon.run()) for daemon in daemons.values()]
    for name, daemon in daemons.items():
        await asyncio.wait_for(daemon.ready.wait(), 120)
        # `ready` comes before the socket is subscribed; the first snapshot of each book is
        # taken once it is, so from then on both recorders see every event.
        while snapshotted_pairs(dsns[name]) < len(sim.settings.pairs):  # noqa: ASYNC110 - polls the database
            await asyncio.sleep(0.2)
        print(f"{name}: recording", flush=True)
    sim.resume()
    await asyncio.sleep(seconds)
    sim.pause()
    await asyncio.sleep(3)  # the last events and trades reach both recorders
    for daemon in daemons.values():
        daemon.request_stop("SIGTERM")
    codes = await asyncio.gather(*runs)
    if any(codes):
        sys.exit(f"a recorder exited with {codes}")


def snapshotted_pairs(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT count(DISTINCT pair) FROM book_snapshots").fetchone()
        return int(row[0]) if row else 0


def table_sizes(
    dsn: str, tables: tuple[str, ...] = (*TABLES, "candles")
) -> dict[str, tuple[int, int, int]]:
    """{table: (rows, heap bytes, index bytes)} on plain PostgreSQL tables."""
    sizes = {}
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")
        for table in tables:
            row = conn.execute(
                f"SELECT count(*), pg_table_size('{stored(table)}'), "  # noqa: S608
                f"pg_indexes_size('{stored(table)}') FROM {stored(table)}"
            ).fetchone()
            assert row is not None
            sizes[table] = (int(row[0]), int(row[1]), int(row[2]))
    return sizes


def hypertable_sizes(
    dsn: str, tables: tuple[str, ...] = HYPERTABLES
) -> dict[str, tuple[int, int, int]]:
    """{hypertable: (rows, heap + toast bytes, index bytes)} from TimescaleDB's own sizes."""
    sizes = {}
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")
        for table in tables:
            row = conn.execute(
                f"SELECT (SELECT count(*) FROM {stored(table)}), "  # noqa: S608
                "table_bytes + toast_bytes, index_bytes FROM hypertable_detailed_size(%s)",
                (stored(table),),
            ).fetchone()
            assert row is not None
            sizes[table] = (int(row[0]), int(row[1]), int(row[2]))
    return sizes


def to_columnstore(dsn: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        chunks = 0
        for table in HYPERTABLES:
            for (chunk,) in conn.execute("SELECT show_chunks(%s)", (stored(table),)).fetchall():
                conn.execute(
                    "CALL convert_to_columnstore(%s, if_not_columnstore => true)", (chunk,)
                )
                chunks += 1
        return chunks


def columnstore_data_bytes(dsn: str) -> dict[str, int]:
    """{hypertable: bytes of its compressed values}: each column's stored (compressed) size
    summed over the columnstore's batches, without the pages, maps and indexes every chunk
    has however few rows it holds. What one more row costs once chunks are full."""
    return {table: sum(column_bytes(dsn, table).values()) for table in HYPERTABLES}


def column_bytes(dsn: str, table: str) -> dict[str, int]:
    """{column: bytes of its compressed values} of a hypertable's columnstore, summed over
    its chunks' batches (`_ts_meta_*` are TimescaleDB's per-batch count and min/max)."""
    totals: dict[str, int] = {}
    with psycopg.connect(dsn, autocommit=True) as conn:
        compressed = conn.execute(
            "SELECT format('%%I.%%I', cc.schema_name, cc.table_name) "
            "FROM _timescaledb_catalog.chunk c "
            "JOIN _timescaledb_catalog.chunk cc ON cc.id = c.compressed_chunk_id "
            "JOIN _timescaledb_catalog.hypertable h ON h.id = c.hypertable_id "
            "WHERE h.table_name = %s",
            (stored(table),),
        ).fetchall()
        for (chunk,) in compressed:
            columns = [
                str(c)
                for (c,) in conn.execute(
                    "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass "
                    "AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
                    (chunk,),
                ).fetchall()
            ]
            sums = ", ".join(f'coalesce(sum(pg_column_size("{c}")), 0)' for c in columns)
            row = conn.execute(f"SELECT {sums} FROM {chunk}").fetchone()  # noqa: S608
            assert row is not None
            for column, size in zip(columns, row, strict=True):
                totals[column] = totals.get(column, 0) + int(size)
    return totals


def print_per_column(dsn: str, tables: tuple[str, ...]) -> None:
    print("\ncolumnstore values per row, by column (bytes per row; largest first)")
    for table in tables:
        with psycopg.connect(dsn) as conn:
            row = conn.execute(f"SELECT count(*) FROM {stored(table)}").fetchone()  # noqa: S608
        rows = max(int(row[0]) if row else 0, 1)
        sizes = column_bytes(dsn, table)
        shown = ", ".join(
            f"{column} {size / rows:.2f}"
            for column, size in sorted(sizes.items(), key=lambda item: -item[1])
            if size / rows >= 0.05
        )
        print(f"- {table} ({sum(sizes.values()) / rows:.2f} in all): {shown}")


def relation_parts(conn: psycopg.Connection[Any], relation: str) -> list[tuple[str, int]]:
    """[(part, bytes)] of one table: its forks, its TOAST table's forks and index, each of
    its indexes."""
    parts = []
    toast_row = conn.execute(
        "SELECT reltoastrelid::regclass::text FROM pg_class "
        "WHERE oid = %s::regclass AND reltoastrelid <> 0",
        (relation,),
    ).fetchone()
    for label, rel in (("", relation), ("toast ", toast_row[0] if toast_row else None)):
        if rel is None:
            continue
        for fork in ("main", "fsm", "vm"):
            row = conn.execute("SELECT pg_relation_size(%s::regclass, %s)", (rel, fork)).fetchone()
            parts.append((f"{label}{fork}", int(row[0]) if row else 0))
        for index, size in conn.execute(
            "SELECT indexrelid::regclass::text, pg_relation_size(indexrelid) FROM pg_index "
            "WHERE indrelid = %s::regclass ORDER BY 1",
            (rel,),
        ).fetchall():
            name = "toast index" if label else f"index {str(index).split('.')[-1]}"
            parts.append((name, int(size)))
    return [(part, size) for part, size in parts if size]


def print_breakdown(dsn: str, table: str) -> None:
    """Where a hypertable's bytes go: the hypertable itself (empty, but its indexes and
    TOAST index take a page each), each chunk (after conversion, its emptied row store)
    and each chunk's columnstore, by fork, TOAST and index, against the compressed values."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(f"SELECT count(*) FROM {stored(table)}").fetchone()  # noqa: S608
        rows = max(int(row[0]) if row else 0, 1)
        relations = [("hypertable", stored(table))]
        for chunk, compressed in conn.execute(
            "SELECT format('%%I.%%I', c.schema_name, c.table_name), "
            "format('%%I.%%I', cc.schema_name, cc.table_name) "
            "FROM _timescaledb_catalog.chunk c "
            "JOIN _timescaledb_catalog.hypertable h ON h.id = c.hypertable_id "
            "LEFT JOIN _timescaledb_catalog.chunk cc ON cc.id = c.compressed_chunk_id "
            "WHERE h.table_name = %s AND NOT c.dropped ORDER BY c.id",
            (stored(table),),
        ).fetchall():
            relations.append(("chunk, row store", chunk))
            if compressed and compressed != "NULL":
                relations.append(("chunk, columnstore", compressed))
        print(f"\n{table}: where the bytes go ({rows:,} rows; bytes, bytes per row)")
        print("| relation | part | bytes | per row |")
        print("| --- | --- | ---: | ---: |")
        total = 0
        for kind, relation in relations:
            for part, size in relation_parts(conn, relation):
                total += size
                print(f"| {kind} | {part} | {size:,} | {size / rows:.2f} |")
        values = sum(column_bytes(dsn, table).values())
        print(f"| all | | {total:,} | {total / rows:.2f} |")
        print(f"| (compressed values, in the columnstore's TOAST and rows) | | {values:,} "
              f"| {values / rows:.2f} |")  # fmt: skip


# `--numeric`: the layout of trades and fills before migration 0020 (0001's columns).
NUMERIC_COLUMNS = {
    "trades": "pair text NOT NULL, tid bigint NOT NULL, ts timestamptz NOT NULL, "
    "type text NOT NULL, price numeric NOT NULL, amount numeric NOT NULL, "
    "received_at timestamptz NOT NULL",
    "book_fills": "pair text NOT NULL, tid bigint NOT NULL, oid bigint NOT NULL, "
    "o_id bigint NOT NULL, type text NOT NULL, price numeric NOT NULL, "
    "amount numeric NOT NULL, ts timestamptz NOT NULL, received_at timestamptz NOT NULL",
}


def make_numeric(dsn: str, table: str, hypertable: bool) -> tuple[int, int, int]:
    """Copy the view `table` into `<table>_numeric`, laid out as before 0020 (a hypertable
    with 0003's chunking and columnstore settings, converted, if `hypertable`); return its
    (rows, heap + toast bytes, index bytes)."""
    copy = f"{table}_numeric"
    key = "pair, tid, ts" if hypertable else "pair, tid"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {copy} ({NUMERIC_COLUMNS[table]}, PRIMARY KEY ({key}))")
        conn.execute(f"CREATE INDEX ON {copy} (pair, ts)")
        if hypertable:
            conn.execute(f"SELECT create_hypertable('{copy}', by_range('ts', INTERVAL '1 day'))")
            conn.execute(
                f"ALTER TABLE {copy} SET (timescaledb.enable_columnstore, "
                "timescaledb.segmentby = 'pair', timescaledb.orderby = 'ts, tid')"
            )
        conn.execute(f"INSERT INTO {copy} SELECT * FROM {table} ORDER BY ts")  # noqa: S608
        conn.execute(f"VACUUM ANALYZE {copy}")
    if hypertable:
        with psycopg.connect(dsn, autocommit=True) as conn:
            for (chunk,) in conn.execute("SELECT show_chunks(%s)", (copy,)).fetchall():
                conn.execute("CALL convert_to_columnstore(%s)", (chunk,))
        return hypertable_sizes(dsn, (copy,))[copy]
    return table_sizes(dsn, (copy,))[copy]


def print_numeric(
    plain: dict[str, tuple[int, int, int]],
    columnstore: dict[str, tuple[int, int, int]],
    plain_dsn: str,
    tsdb_dsn: str,
) -> None:
    print("\nthe same rows laid out as before migration 0020 (--numeric; bytes per row)")
    print(
        "| table | plain numeric | plain scaled | columnstore numeric | columnstore scaled "
        "| plain numeric / columnstore scaled | plain scaled / columnstore scaled |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")

    def per_row(sizes: tuple[int, int, int]) -> float:
        return (sizes[1] + sizes[2]) / max(sizes[0], 1)

    for table in NUMERIC_COLUMNS:
        plain_numeric = per_row(make_numeric(plain_dsn, table, hypertable=False))
        columnstore_numeric = per_row(make_numeric(tsdb_dsn, table, hypertable=True))
        scaled = per_row(columnstore[table])
        print(
            f"| {table} | {plain_numeric:.0f} | {per_row(plain[table]):.0f} "
            f"| {columnstore_numeric:.1f} | {scaled:.1f} | {plain_numeric / scaled:.1f}x "
            f"| {per_row(plain[table]) / scaled:.1f}x |",
            flush=True,
        )
    print_per_column(tsdb_dsn, tuple(f"{table}_numeric" for table in NUMERIC_COLUMNS))


def alternative_sizes(dsn: str, table: str, segmentby: str, orderby: str) -> tuple[int, int, int]:
    """Recompress `table` with other columnstore settings, on the same rows: its (rows, heap
    + toast bytes, index bytes). TimescaleDB keeps the settings per chunk, taken when the
    chunk is converted, so each chunk goes back to the row store and is converted again."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        chunks = [c for (c,) in conn.execute("SELECT show_chunks(%s)", (stored(table),)).fetchall()]
        for chunk in chunks:
            conn.execute("CALL convert_to_rowstore(%s, if_columnstore => true)", (chunk,))
        conn.execute(
            sql.SQL(
                "ALTER TABLE {} SET (timescaledb.segmentby = {}, timescaledb.orderby = {})"
            ).format(sql.Identifier(stored(table)), sql.Literal(segmentby), sql.Literal(orderby))
        )
        for chunk in chunks:
            conn.execute("CALL convert_to_columnstore(%s)", (chunk,))
    return hypertable_sizes(dsn, (table,))[table]


def parse_alternative(text: str) -> tuple[str, str, str]:
    table, segmentby, orderby = text.split(":")
    if table not in HYPERTABLES:
        raise argparse.ArgumentTypeError(f"{table}: not one of {', '.join(HYPERTABLES)}")
    return table, segmentby, orderby


def print_table(title: str, sizes: dict[str, tuple[int, int, int]]) -> None:
    print(f"\n{title}")
    print("| table | rows | heap bytes/row | index bytes/row | total bytes/row |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for table, (rows, heap, index) in sizes.items():
        if rows == 0:
            print(f"| {table} | 0 | - | - | - |")
            continue
        print(
            f"| {table} | {rows:,} | {heap / rows:.0f} | {index / rows:.0f} | "
            f"{(heap + index) / rows:.0f} |"
        )


def print_comparison(
    plain: dict[str, tuple[int, int, int]],
    written: dict[str, tuple[int, int, int]],
    columnstore: dict[str, tuple[int, int, int]],
    data: dict[str, int],
) -> None:
    print("\nbytes per row side by side (values: the columnstore's compressed values only)")
    print(
        "| table | rows | plain | row store | columnstore | plain / columnstore "
        "| values | plain / values |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for table in HYPERTABLES:
        rows = plain[table][0]
        if rows == 0 or table not in columnstore:
            continue
        # each database's own count: the two recorders' snapshots differ by a few
        per_row = [
            (heap + index) / max(n, 1)
            for n, heap, index in (plain[table], written[table], columnstore[table])
        ]
        values = data[table] / max(columnstore[table][0], 1)
        print(
            f"| {table} | {rows:,} | {per_row[0]:.0f} | {per_row[1]:.0f} | {per_row[2]:.1f} | "
            f"{per_row[0] / per_row[2]:.1f}x | {values:.1f} | {per_row[0] / values:.1f}x |"
        )


def same_data(dsns: dict[str, str]) -> None:
    """Both recorders saw one exchange: say where their recordings differ, if they do."""
    keys: dict[str, set[tuple[Any, ...]]] = {}
    for name, dsn in dsns.items():
        with psycopg.connect(dsn) as conn:
            keys[name] = (
                {("trade", *row) for row in conn.execute("SELECT pair, tid, ts FROM trades")}
                | {
                    ("event", *row)
                    for row in conn.execute("SELECT pair, oid, kind, ts FROM book_events")
                }
                | {("fill", *row) for row in conn.execute("SELECT pair, tid, ts FROM book_fills")}
            )
    if len(keys) < 2:
        return
    (first, first_keys), (second, second_keys) = keys.items()
    print(f"\n{first}: {len(first_keys):,} trades+events+fills, {second}: {len(second_keys):,}")
    for name, missing in ((first, second_keys - first_keys), (second, first_keys - second_keys)):
        if missing:
            print(f"missing in {name}: {len(missing)}, e.g. {sorted(missing, key=str)[:5]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="live recording time")
    parser.add_argument("--rate", type=float, default=500.0, help="book events per second")
    parser.add_argument(
        "--book-orders", type=int, default=2000, help="resting orders per book at the start"
    )
    parser.add_argument(
        "--history-per-hour", type=int, default=3600, help="book events an hour of the day before"
    )
    parser.add_argument(
        "--alternative",
        type=parse_alternative,
        action="append",
        default=[],
        metavar="TABLE:SEGMENTBY:ORDERBY",
        help="after the measurements, recompress TABLE so and measure it again (repeatable)",
    )
    parser.add_argument(
        "--per-column", action="store_true", help="columnstore bytes per row of each column"
    )
    parser.add_argument(
        "--numeric",
        action="store_true",
        help="measure trades and book_fills also as stored before migration 0020",
    )
    parser.add_argument(
        "--breakdown",
        choices=HYPERTABLES,
        action="append",
        default=[],
        help="after conversion, TABLE's bytes by relation, fork, TOAST and index (repeatable)",
    )
    parser.add_argument("--no-timescaledb", action="store_true", help="plain PostgreSQL only")
    parser.add_argument(
        "--tsdb", type=Path, default=TSDB_SCRIPT, help="tsdb.py of the TimescaleDB build"
    )
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-storage-"))
    work.chmod(0o755)  # pgserver runs the server as its own user when we are root
    tsdb: dict[str, Any] | None = None
    try:
        with embedded_postgres(work / "plain") as plain_dsn:
            dsns = {"postgresql": plain_dsn}
            if not args.no_timescaledb:
                if not args.tsdb.exists():
                    sys.exit(f"{args.tsdb} not found; use --no-timescaledb or --tsdb")
                tsdb = runpy.run_path(str(args.tsdb))
                dsns["timescaledb"] = tsdb["start"](str(work / "tsdb"))
            settings = SimSettings(
                pairs=("BTC_USD", "ETH_USD"),
                rate_per_s=args.rate,
                history_hours=24,
                history_events_per_hour=args.history_per_hour,
                book_orders=args.book_orders,
            )
            asyncio.run(record(settings, dsns, work, args.seconds))
            same_data(dsns)
            plain = table_sizes(plain_dsn)
            print_table("plain PostgreSQL 16", plain)
            if "timescaledb" in dsns:
                written = hypertable_sizes(dsns["timescaledb"])
                print_table("TimescaleDB, hypertables as written", written)
                chunks = to_columnstore(dsns["timescaledb"])
                columnstore = hypertable_sizes(dsns["timescaledb"])
                print_table(f"TimescaleDB, after convert_to_columnstore ({chunks} chunks)",
                            columnstore)  # fmt: skip
                data = columnstore_data_bytes(dsns["timescaledb"])
                print_comparison(plain, written, columnstore, data)
                if args.per_column:
                    print_per_column(dsns["timescaledb"], HYPERTABLES)
                for table in args.breakdown:
                    print_breakdown(dsns["timescaledb"], table)
                if args.numeric:
                    print_numeric(plain, columnstore, plain_dsn, dsns["timescaledb"])
                if args.alternative:
                    print("\nother columnstore settings, the same rows (bytes per row)")
                    print("| table | segmentby | orderby | columnstore | plain / columnstore |")
                    print("| --- | --- | --- | ---: | ---: |")
                for table, segmentby, orderby in args.alternative:
                    rows, heap, index = alternative_sizes(
                        dsns["timescaledb"], table, segmentby, orderby
                    )
                    plain_per_row = sum(plain[table][1:]) / max(plain[table][0], 1)
                    per_row = (heap + index) / max(rows, 1)
                    print(f"| {table} | {segmentby} | {orderby} | {per_row:.1f} | "
                          f"{plain_per_row / per_row:.1f}x |", flush=True)  # fmt: skip
    finally:
        if tsdb is not None:
            tsdb["stop"](str(work / "tsdb"))
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

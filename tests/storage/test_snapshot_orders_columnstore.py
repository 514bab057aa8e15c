"""book_snapshot_orders with its time column: a hypertable with a columnstore on TimescaleDB.

Migration 0012 gives every stored order its snapshot's taken_at and, on TimescaleDB, makes
the table a hypertable with a columnstore policy; book_at must give the engine's book, order
by order, whether the chunks are in the row store or in the columnstore, and read only the
chunk that holds its snapshot.
"""

from __future__ import annotations

import asyncio
import itertools
import shutil
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest

from recorder.records import Record
from recorder.sim.engine import Engine
from recorder.sim.flow import OrderFlow, pair_spec, wall_clock
from recorder.storage.migrate import load_migrations, migrate, migrations_dir
from recorder.storage.writer import Writer
from tests.harness.postgres import is_timescaledb, pause_columnstore_policies
from tests.storage.test_book_at_sim import at_s, engine_book, event_records, snapshot_records

PAIRS = ("BTC_USD", "ETH_BTC")
# trades and book_fills are views over these two (migrations/0020_scaled_prices.sql)
HYPERTABLES = (
    "trades_stored", "book_events", "book_fills_stored", "book_snapshot_orders", "candles",
)  # fmt: skip
Book = list[tuple[str, int, Decimal, Decimal]]
Instants = list[tuple[datetime, dict[str, Book]]]


def to_columnstore(conn: psycopg.Connection[Any], table: str) -> int:
    chunks = conn.execute("SELECT show_chunks(%s)", (table,)).fetchall()
    for (chunk,) in chunks:
        conn.execute("CALL convert_to_columnstore(%s)", (chunk,))
    return len(chunks)


def book_at(conn: psycopg.Connection[Any], pair: str, instant: datetime) -> Book:
    return sorted(
        conn.execute(
            "SELECT side, order_id, price, amount FROM book_at(%s, %s)", (pair, instant)
        ).fetchall()
    )


@pytest.fixture(scope="module")
def recorded(db_dsn: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Instants]:
    """A flow over two days (a clock reading every 5 minutes) with a snapshot of each book every
    120 steps, so that snapshots, events and fills fall into many chunks; the engine's books
    at instants along it."""
    migrate(db_dsn)
    if is_timescaledb(db_dsn):
        # the recording is in the row store until the test converts it
        with psycopg.connect(db_dsn, autocommit=True) as conn:
            pause_columnstore_policies(conn)
    microseconds = itertools.count(1_700_000_000_000_000, 300_000_000)
    engine = Engine([pair_spec(p) for p in PAIRS], wall_clock(lambda: next(microseconds) * 1000))
    flow = OrderFlow(engine, seed=19)
    for _ in range(300):
        flow.step()
    records: list[Record] = []
    instants: Instants = []
    engine.subscribe(lambda event: records.extend(event_records(event, "oid")))
    for step in range(601):
        if step % 120 == 0:
            taken_at = at_s(engine.clock())
            for pair in PAIRS:
                records.extend(snapshot_records(engine, pair, taken_at))
        if step % 20 == 10:
            now = at_s(engine.clock())
            instants.append((now, {pair: engine_book(engine, pair) for pair in PAIRS}))
        flow.step()

    async def write(spool: Path) -> None:
        async with Writer(db_dsn, spool) as writer:
            writer.put_many(records)
            assert await writer.flush(60)

    asyncio.run(write(tmp_path_factory.mktemp("spool")))
    return db_dsn, instants


def test_every_order_carries_its_snapshots_time(recorded: tuple[str, Instants]) -> None:
    dsn, _ = recorded
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT count(*), count(*) FILTER (WHERE o.taken_at = s.taken_at), "
            "count(DISTINCT s.snapshot_id) "
            "FROM book_snapshot_orders o JOIN book_snapshots s USING (snapshot_id)"
        ).fetchone()
        assert rows is not None
        total, matching, snapshots = rows
        assert total > 0
        assert matching == total
        assert snapshots == 12


def test_book_at_equals_the_engine_in_row_store_and_in_columnstore(
    recorded: tuple[str, Instants],
) -> None:
    dsn, instants = recorded
    timescale = is_timescaledb(dsn)
    with psycopg.connect(dsn, autocommit=True) as conn:
        before = {(i, p): book_at(conn, p, i) for i, _ in instants for p in PAIRS}
        for instant, books in instants:
            for pair in PAIRS:
                assert before[instant, pair] == books[pair], (pair, instant)
        if not timescale:
            return
        converted = {table: to_columnstore(conn, table) for table in HYPERTABLES}
        assert converted["book_snapshot_orders"] >= 4, converted  # 6-hour chunks over days
        assert converted["book_events"] >= 2, converted
        assert converted["book_fills_stored"] >= 1, converted  # book_at reads fills too
        (left,) = conn.execute(
            "SELECT count(*) FROM timescaledb_information.chunks "
            "WHERE hypertable_name = 'book_snapshot_orders' AND NOT is_compressed"
        ).fetchone() or (None,)
        assert left == 0
        for instant, books in instants:
            for pair in PAIRS:
                assert book_at(conn, pair, instant) == books[pair], (pair, instant)
    assert len({str(books["BTC_USD"]) for _, books in instants}) > 10  # the book moved


def test_book_at_reads_only_the_chunk_of_its_snapshot(recorded: tuple[str, Instants]) -> None:
    dsn, instants = recorded
    if not is_timescaledb(dsn):
        pytest.skip("chunks exist only on TimescaleDB")
    with psycopg.connect(dsn) as conn:
        chunks = {
            row[0]
            for row in conn.execute(
                "SELECT c.table_name FROM _timescaledb_catalog.chunk c "
                "JOIN _timescaledb_catalog.hypertable h ON h.id = c.hypertable_id "
                "WHERE h.table_name = 'book_snapshot_orders' "
                "   OR h.id = (SELECT compressed_hypertable_id "
                "              FROM _timescaledb_catalog.hypertable "
                "              WHERE table_name = 'book_snapshot_orders')"
            )
        }
        assert len(chunks) >= 8  # each chunk and its compressed chunk
        instant = instants[-1][0]
        # book_at runs its statements inside PL/pgSQL, out of EXPLAIN's sight: the scans this
        # transaction made, per table, say which chunks it read.
        conn.execute("SELECT * FROM book_at(%s, %s)", (PAIRS[0], instant)).fetchall()
        scanned = {
            row[0]
            for row in conn.execute(
                "SELECT relname FROM pg_stat_xact_user_tables "
                "WHERE relname = ANY(%s) AND seq_scan + coalesce(idx_scan, 0) > 0",
                (list(chunks),),
            )
        }
        # the snapshot's chunk and, once converted, its compressed chunk: nothing else
        assert 1 <= len(scanned) <= 2, scanned


def before_0012(tmp_path: Path) -> Path:
    """The migrations as a database had them before this one."""
    directory = tmp_path / "migrations"
    directory.mkdir()
    for source in sorted(migrations_dir().glob("*.sql")):
        if source.name < "0012":
            shutil.copy(source, directory / source.name)
    return directory


def test_the_migration_dates_stored_orders_and_keeps_compressed_chunks(
    db_dsn: str, tmp_path: Path
) -> None:
    """0012 on a database with orders and trades already stored (and, on TimescaleDB,
    trades already in the columnstore): every order gets its snapshot's taken_at, an order
    without a snapshot is kept, and the trades read the same."""
    from tests.harness.postgres import fresh_database

    with psycopg.connect(db_dsn) as conn:
        server = conn.info.dsn
    with fresh_database(server, "before_0012") as dsn:
        migrate(dsn, before_0012(tmp_path))
        snapshot, orphan = uuid.uuid4(), uuid.uuid4()
        taken = datetime(2024, 3, 1, 12, 0, 0, 654321, tzinfo=UTC)
        timescale = is_timescaledb(dsn)
        with psycopg.connect(dsn, autocommit=True) as conn:
            if timescale:
                pause_columnstore_policies(conn)  # the test converts the trades itself
            conn.execute(
                "INSERT INTO book_snapshots VALUES (%s, 'BTC_USD', %s, %s, false, 'interval')",
                (snapshot, taken, taken),
            )
            for snap, pos in ((snapshot, 0), (snapshot, 1), (orphan, 0)):
                conn.execute(
                    "INSERT INTO book_snapshot_orders VALUES (%s, 'sell', %s, %s, 100.5, 0.25, %s)",
                    (snap, pos, 10 + pos, taken),
                )
            conn.execute(
                "INSERT INTO trades SELECT 'BTC_USD', g, %s + g * interval '1 hour', 'buy', "
                "100 + g / 7.0, g / 3.0, now() FROM generate_series(1, 50) g",
                (taken,),
            )
            trades_before = conn.execute("SELECT * FROM trades ORDER BY tid").fetchall()
            book_before = book_at(conn, "BTC_USD", taken)
            if timescale:
                assert to_columnstore(conn, "trades") >= 2
        assert migrate(dsn) == [m.version for m in load_migrations() if m.version >= "0012"]
        with psycopg.connect(dsn) as conn:
            dated = conn.execute(
                "SELECT snapshot_id, pos, taken_at FROM book_snapshot_orders ORDER BY 1, 2"
            ).fetchall()
            epoch = datetime(1970, 1, 1, tzinfo=UTC)
            assert sorted(dated) == sorted(
                [(snapshot, 0, taken), (snapshot, 1, taken), (orphan, 0, epoch)]
            )
            assert conn.execute("SELECT * FROM trades ORDER BY tid").fetchall() == trades_before
            assert book_at(conn, "BTC_USD", taken) == book_before
            assert len(book_before) == 2


def test_book_snapshot_orders_is_a_hypertable_with_a_columnstore_policy(db_dsn: str) -> None:
    migrate(db_dsn)
    with psycopg.connect(db_dsn) as conn:
        (nullable,) = conn.execute(
            "SELECT is_nullable FROM information_schema.columns "
            "WHERE table_name = 'book_snapshot_orders' AND column_name = 'taken_at'"
        ).fetchone() or (None,)
        assert nullable == "NO"
        if not is_timescaledb(db_dsn):
            (kind,) = conn.execute(
                "SELECT relkind FROM pg_class WHERE relname = 'book_snapshot_orders'"
            ).fetchone() or (None,)
            assert kind == "r"
            return
        settings = conn.execute(
            "SELECT attname, segmentby_column_index, orderby_column_index "
            "FROM timescaledb_information.compression_settings "
            "WHERE hypertable_name = 'book_snapshot_orders' ORDER BY attname"
        ).fetchall()
        assert ("snapshot_id", 1, None) in settings
        assert {name for name, _, order in settings if order is not None} >= {"side", "pos"}
        policy = conn.execute(
            "SELECT config->>'compress_after' FROM timescaledb_information.jobs "
            "WHERE proc_name = 'policy_compression' AND hypertable_name = 'book_snapshot_orders'"
        ).fetchall()
        assert policy == [("1 day",)]
        dimension = conn.execute(
            "SELECT column_name, time_interval FROM timescaledb_information.dimensions "
            "WHERE hypertable_name = 'book_snapshot_orders'"
        ).fetchall()
        assert [(name, str(interval)) for name, interval in dimension] == [("taken_at", "6:00:00")]

"""On TimescaleDB the hypertables keep only the indexes their readers use, and the keys of
book_fills and trades are (pair, ts, tid) (migrations/0021_hypertable_indexes.sql,
0022_trades_key_in_time_order.sql); plain PostgreSQL keeps its indexes. Fills and trades
stored before the migrations, in the columnstore already, read back exactly, and one written
again is still stored once."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest

from recorder import records as r
from recorder.storage.committer import Committer
from recorder.storage.migrate import migrate, migrations_dir
from tests.harness.postgres import fresh_database, is_timescaledb, pause_columnstore_policies

START = datetime(2024, 3, 1, 12, tzinfo=UTC)

# {table: {index: its columns}} as pg_indexes shows them
PLAIN_INDEXES = {
    "trades_stored": {"trades_stored_pkey": "(pair, tid)", "trades_stored_pair_ts": "(pair, ts)"},
    "book_events": {
        "book_events_pkey": "(pair, oid, kind)",
        "book_events_pair_ts": "(pair, ts)",
    },
    "book_fills_stored": {
        "book_fills_stored_pkey": "(pair, tid)",
        "book_fills_stored_pair_ts": "(pair, ts)",
    },
}
TIMESCALEDB_INDEXES = {
    "trades_stored": {
        "trades_stored_pkey": "(pair, ts, tid)",
        "trades_stored_ts_idx": "(ts DESC)",  # coverage's first trade, over all pairs
    },
    "book_events": {
        "book_events_pkey": "(pair, oid, kind, ts)",
        "book_events_pair_ts": "(pair, ts)",
    },
    "book_fills_stored": {"book_fills_stored_pkey": "(pair, ts, tid)"},
}

FILLS_SQL = (
    "SELECT pair, tid, oid, o_id, type, price::text, amount::text, ts, received_at "
    "FROM book_fills ORDER BY pair, tid"
)
TRADES_SQL = (
    "SELECT pair, tid, type, price::text, amount::text, ts, received_at "
    "FROM trades ORDER BY pair, tid"
)


def indexes(conn: psycopg.Connection[Any], table: str) -> dict[str, str]:
    return {
        name: definition[definition.rindex("(") :]
        for name, definition in conn.execute(
            "SELECT indexname, indexdef FROM pg_indexes "
            "WHERE schemaname = 'public' AND tablename = %s",
            (table,),
        ).fetchall()
    }


def before_0021(tmp_path: Path) -> Path:
    """The migrations as a database had them before 0021."""
    directory = tmp_path / "migrations"
    directory.mkdir()
    for source in sorted(migrations_dir().glob("*.sql")):
        if source.name < "0021":
            shutil.copy(source, directory / source.name)
    return directory


def fill(tid: int) -> r.BookFill:
    ts = START + timedelta(hours=tid // 3)  # five days: several chunks
    return r.BookFill(
        pair="BTC_USD" if tid % 4 else "ETH_USD", tid=tid, oid=1000 + tid // 2,
        o_id=5000 - tid * 7, type="buy" if tid % 3 else "sell",
        price=Decimal(f"{60000 + tid}.{tid % 100:02d}"), amount=Decimal(f"0.{tid:06d}"), ts=ts,
        received_at=ts + timedelta(microseconds=tid),
    )  # fmt: skip


def trade(tid: int) -> r.Trade:
    ts = START + timedelta(hours=tid // 3)
    return r.Trade(
        pair="BTC_USD" if tid % 4 else "ETH_USD", tid=tid, type="buy" if tid % 3 else "sell",
        price=Decimal(f"{60000 - tid}.{tid % 1000:03d}"), amount=Decimal(f"0.{tid:08d}"), ts=ts,
        received_at=ts + timedelta(microseconds=tid),
    )  # fmt: skip


def commit(dsn: str, batch: list[r.Record]) -> dict[str, int]:
    async def run() -> dict[str, int]:
        committer = Committer(dsn, statement_timeout_s=30)
        try:
            return (await committer.commit(batch)).rows
        finally:
            await committer.close()

    return asyncio.run(run())


@pytest.fixture(scope="module")
def migrated(db_dsn: str) -> str:
    migrate(db_dsn)
    return db_dsn


def test_only_the_indexes_readers_use(migrated: str) -> None:
    with psycopg.connect(migrated) as conn:
        expected = TIMESCALEDB_INDEXES if is_timescaledb(conn) else PLAIN_INDEXES
        assert {table: indexes(conn, table) for table in expected} == expected


@pytest.mark.parametrize(
    ("view", "table", "record"),
    [("book_fills", "book_fills_stored", fill), ("trades", "trades_stored", trade)],
)
def test_a_pairs_rows_over_a_time_range_are_read_through_an_index(
    migrated: str, view: str, table: str, record: Callable[[int], r.Record]
) -> None:
    """book_at's read of the fills (migrations/0016_book_window_readings.sql), a researcher's
    read of a pair's trades: on TimescaleDB the key serves them, in the row store, without a
    (pair, ts) index."""
    with psycopg.connect(migrated) as conn:
        index = f"{table}_pkey" if is_timescaledb(conn) else f"{table}_pair_ts"
        commit(migrated, [record(tid) for tid in range(1, 31)])
        conn.execute("SET enable_seqscan = off")  # a few rows: the plan shows what can serve it
        plan = "\n".join(
            line
            for (line,) in conn.execute(
                f"EXPLAIN SELECT tid, amount FROM {view} "  # noqa: S608
                "WHERE pair = 'BTC_USD' AND ts > %s AND ts <= %s ORDER BY ts",
                (START, START + timedelta(hours=2)),
            ).fetchall()
        )
        assert index in plan, plan
        assert "Sort" not in plan, plan  # read in time order


def test_the_migrations_keep_fills_and_trades_in_the_columnstore_exactly(
    db_dsn: str, tmp_path: Path
) -> None:
    """Fills and trades stored before 0021, on TimescaleDB partly in the columnstore, read the
    same after 0021 and 0022; written again (a replay), in either store, each is still stored
    once."""
    with psycopg.connect(db_dsn) as conn:
        server = conn.info.dsn
    tids = range(1, 361)  # five days: several chunks
    records: list[r.Record] = [*map(fill, tids), *map(trade, tids)]
    stored = {"book_fills": len(tids), "trades": len(tids)}
    with fresh_database(server, "before_0021") as dsn:
        migrate(dsn, before_0021(tmp_path))
        with psycopg.connect(dsn, autocommit=True) as conn:
            timescale = is_timescaledb(conn)
            if timescale:
                pause_columnstore_policies(conn)  # the test converts three chunks of each
            for pair in ("BTC_USD", "ETH_USD"):
                conn.execute(
                    "INSERT INTO pairs VALUES (%s, 'BTC', 'USD', 2, 0.001, 1000, %s, %s)",
                    (pair, START, START),
                )
        assert commit(dsn, records) == stored
        with psycopg.connect(dsn, autocommit=True) as conn:
            if timescale:
                for table in ("book_fills_stored", "trades_stored"):
                    chunks = conn.execute("SELECT show_chunks(%s)", (table,)).fetchall()
                    assert len(chunks) >= 5
                    for (chunk,) in chunks[:3]:
                        conn.execute("CALL convert_to_columnstore(%s)", (chunk,))
            before = [conn.execute(query).fetchall() for query in (FILLS_SQL, TRADES_SQL)]
        assert migrate(dsn) == ["0021", "0022"]
        with psycopg.connect(dsn, autocommit=True) as conn:
            assert [conn.execute(query).fetchall() for query in (FILLS_SQL, TRADES_SQL)] == before
            expected = TIMESCALEDB_INDEXES if timescale else PLAIN_INDEXES
            assert {table: indexes(conn, table) for table in expected} == expected
            if timescale:
                converted = conn.execute(
                    "SELECT hypertable_name, count(*) FROM timescaledb_information.chunks "
                    "WHERE is_compressed GROUP BY 1 ORDER BY 1"
                ).fetchall()
                assert converted == [("book_fills_stored", 3), ("trades_stored", 3)]
        # the first and last of each: in the columnstore and in the row store on TimescaleDB
        ends = [tids[0], tids[1], tids[-2], tids[-1]]
        again: list[r.Record] = [*map(fill, ends), *map(trade, ends)]
        assert commit(dsn, again) == {"book_fills": 0, "trades": 0}
        assert commit(dsn, [*again, fill(361), trade(361)]) == {"book_fills": 1, "trades": 1}
        with psycopg.connect(dsn) as conn:
            after = [conn.execute(query).fetchall() for query in (FILLS_SQL, TRADES_SQL)]
        for rows_after, rows_before in zip(after, before, strict=True):
            assert [row for row in rows_after if row[1] != 361] == rows_before
            assert len(rows_after) == len(rows_before) + 1

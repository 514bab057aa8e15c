"""book_at's work does not depend on planner statistics.

On tables that grew from empty and were never analysed, the planner guesses about one row
for every step of book_at; 0013's book_at then joined the window's cancels to its orders
with nested loops that rescanned book_events once per cancel (a bench spent over ten minutes
on 110,000 events). Since migration 0014 book_at reads each table by an index range and
joins by hashing whatever the statistics say. Checked by the buffers a call touches, on
plain PostgreSQL and on TimescaleDB: a bounded multiple of the tables' size, and growing
with the window's events, not with their square. Never by the clock.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import psycopg

from recorder import records as r
from recorder.storage.migrate import migrate
from tests.harness.postgres import is_timescaledb, pause_columnstore_policies
from tests.storage import book_history as h


def one_busy_window(orders: int) -> list[r.Record]:
    """A snapshot, then `orders` new orders, each cancelled by an event whose own id names
    the order placed just before it: every cancel ambiguous, as the simulator makes them."""
    records = h.snapshot(0, [("buy", 1, "100", "1"), ("sell", 2, "101", "1")])
    for i in range(orders):
        oid = 10 + i
        records += h.new(1 + i * 0.01, oid, "buy", "99", "0.5")
    for i in range(1, orders):
        records += h.cancel(1 + orders * 0.01 + i * 0.01, 10 + i, "buy", "99", "0.5",
                            cancel_order_id=9 + i)  # fmt: skip
    return records


def shared_buffers_touched(conn: psycopg.Connection[Any], statement: str) -> int:
    (plan,) = conn.execute(f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {statement}").fetchone()
    top = (plan if isinstance(plan, list) else json.loads(plan))[0]["Plan"]
    return int(top["Shared Hit Blocks"]) + int(top["Shared Read Blocks"])


def table_pages(conn: psycopg.Connection[Any], tables: tuple[str, ...]) -> int:
    """The tables' pages with their indexes; a hypertable's are in its chunks."""
    timescale = is_timescaledb(conn)
    size = (
        "coalesce(hypertable_size(t), pg_total_relation_size(t))"
        if timescale
        else ("pg_total_relation_size(t)")
    )
    row = conn.execute(
        f"SELECT sum({size} / current_setting('block_size')::int)::int "  # noqa: S608 - ours
        "FROM unnest(%s::regclass[]) t",
        (list(tables),),
    ).fetchone()
    assert row is not None
    return int(row[0])


# The tables book_at reads (book_fills is a view over book_fills_stored: migration 0020).
STORED = ("book_events", "book_fills_stored", "book_snapshot_orders", "book_snapshots")


def test_book_at_reads_a_never_analysed_table_in_bounded_work(db_dsn: str, tmp_path: Path) -> None:
    """On tables that grew from empty and were never analysed the planner guesses one row
    per step; book_at must still read each table by index ranges and join by hashing, not
    rescan the window for every cancel. Counted in buffers, not timed."""
    migrate(db_dsn)  # the tables empty when their indexes are made, as on a new install
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        for table in STORED:
            conn.execute(f"ALTER TABLE {table} SET (autovacuum_enabled = false)")
        if is_timescaledb(conn):
            # nor a columnstore policy (the events are from 2024) converting chunks midway
            pause_columnstore_policies(conn)
    sizes = {}
    for orders in (1000, 4000):
        with psycopg.connect(db_dsn, autocommit=True) as conn:
            conn.execute(f"TRUNCATE {', '.join(STORED)}")
        h.write(db_dsn, one_busy_window(orders), tmp_path / str(orders))
        with psycopg.connect(db_dsn, autocommit=True) as conn:
            never = conn.execute(
                "SELECT count(*) FROM pg_stat_user_tables WHERE relname = 'book_events' "
                "AND last_analyze IS NULL AND last_autoanalyze IS NULL"
            ).fetchone()
            assert never == (1,)
            pages = table_pages(conn, STORED)
            at = h.at(1000).isoformat()
            call = f"SELECT * FROM book_at('{h.PAIR}', '{at}')"  # noqa: S608 - our constants
            conn.execute(call)  # once first: the catalog reads of planning are not the work
            touched = shared_buffers_touched(conn, call)
            rows = conn.execute("SELECT count(*) FROM book_at(%s, %s)", (h.PAIR, h.at(1000)))
            assert rows.fetchone() == (3,)  # the snapshot's two and the last order placed
            # each table's window read a few times over, not once per cancel
            assert touched < 8 * pages, (orders, touched, pages)
            sizes[orders] = touched
    # and four times the events cost about four times the buffers, not sixteen
    assert sizes[4000] < 6 * sizes[1000], sizes

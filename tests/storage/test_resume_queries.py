"""What the daemon reads to resume (recorder/storage/queries.py): each pair's newest stored
trade, found from the end of an index, not by reading the tape, on PostgreSQL and on
TimescaleDB with chunks in the columnstore."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg
import pytest

from recorder import records as r
from recorder.storage.committer import Committer
from recorder.storage.migrate import migrate
from recorder.storage.queries import LAST_TRADE_IDS_SQL, last_trade_ids
from tests.harness.postgres import is_timescaledb, pause_columnstore_policies

START = datetime(2024, 5, 1, tzinfo=UTC)
PAIRS = ("BTC_USD", "ETH_BTC", "ETH_USD")
DAYS = 6  # six chunks on TimescaleDB


def trade(pair: str, tid: int, ts: datetime) -> r.Trade:
    return r.Trade(
        pair=pair, tid=tid, ts=ts, type="buy", price=Decimal("100.5"),
        amount=Decimal("0.25"), received_at=ts,
    )  # fmt: skip


def tape() -> list[r.Record]:
    """Every pair trades every 20 minutes for six days; ids are global across pairs, as the
    exchange's are, and rise with time, except ETH_USD's last: its newest trade carries a
    lower id than one before it."""
    trades: list[r.Record] = []
    for step in range(DAYS * 72):
        ts = START + timedelta(minutes=20 * step)
        trades += [trade(pair, 10 * step + n, ts) for n, pair in enumerate(PAIRS)]
    last = START + timedelta(days=DAYS)
    trades.append(trade("ETH_USD", 10 * DAYS * 72 + 50, last - timedelta(minutes=1)))
    trades.append(trade("ETH_USD", 10 * DAYS * 72 + 40, last))  # newest, not the highest id
    return trades


@pytest.fixture(scope="module")
def recorded(db_dsn: str) -> str:
    migrate(db_dsn)
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        timescale = is_timescaledb(conn)
        if timescale:
            pause_columnstore_policies(conn)  # the fixture converts half the chunks

    async def store() -> None:
        committer = Committer(db_dsn, statement_timeout_s=30)
        try:
            await committer.commit(tape())
        finally:
            await committer.close()

    asyncio.run(store())
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        if timescale:
            chunks = conn.execute("SELECT show_chunks('trades_stored')").fetchall()
            assert len(chunks) >= DAYS
            for (chunk,) in chunks[: DAYS // 2]:
                conn.execute("CALL convert_to_columnstore(%s)", (chunk,))
        conn.execute("ANALYZE")
    return db_dsn


def test_each_pairs_newest_trade_is_where_the_tape_resumes(recorded: str) -> None:
    newest_step = DAYS * 72 - 1
    assert asyncio.run(last_trade_ids(recorded)) == {
        "BTC_USD": 10 * newest_step,
        "ETH_BTC": 10 * newest_step + 1,
        # the newest trade's id, lower than the highest: the catch-up reads from there
        # again what is stored already, and misses nothing
        "ETH_USD": 10 * DAYS * 72 + 40,
    }


def test_the_resume_point_reads_index_entries_not_the_tape(recorded: str) -> None:
    """The rows the query's scans of the trades return, with the plan PostgreSQL chooses:
    a few per pair and chunk (the walk from pair to pair), never a pair's whole tape."""
    with psycopg.connect(recorded) as conn:
        row = conn.execute(f"EXPLAIN (ANALYZE, FORMAT JSON) {LAST_TRADE_IDS_SQL}").fetchone()
        assert row is not None
        plan = row[0] if isinstance(row[0], list) else json.loads(row[0])
        stored = conn.execute("SELECT count(*) FROM trades").fetchone()
    assert stored is not None
    read = rows_read(plan[0]["Plan"])
    assert read <= len(PAIRS) * 3 * (DAYS + 2), (read, json.dumps(plan, indent=1))
    assert stored[0] > 10 * read  # what reading the tape would have cost


def rows_read(node: dict[str, Any]) -> int:
    """Rows returned by the scans (sequential, index, decompression) of trades' relations."""
    relation = str(node.get("Relation Name", ""))
    own = 0
    if relation == "trades_stored" or "_hyper_" in relation:
        own = int(node["Actual Rows"]) * int(node["Actual Loops"])
    return own + sum(rows_read(child) for child in node.get("Plans", []))

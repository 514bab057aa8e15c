"""The writer against a real database: exact, idempotent, timely, and tolerant of refusals."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest

from recorder import metrics
from recorder import records as r
from recorder.storage.migrate import migrate
from recorder.storage.tables import SPECS
from recorder.storage.writer import Writer
from tests.storage.records_factory import EXTREME_DECIMALS, SESSION, T0, one_of_each, trade


@pytest.fixture(scope="module")
def dsn(db_dsn: str) -> str:
    migrate(db_dsn)
    return db_dsn


@pytest.fixture
async def writer(dsn: str, tmp_path: Path) -> AsyncIterator[Writer]:
    async with Writer(dsn, tmp_path / "spool") as writer:
        yield writer


def count(dsn: str, table: str, where: str = "TRUE") -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(f"SELECT count(*) FROM {table} WHERE {where}").fetchone()  # noqa: S608
        assert row is not None
        return int(row[0])


def gauge(metric: object) -> float:
    return float(metric._value.get())  # type: ignore[attr-defined]


async def test_every_record_type_reaches_its_table(dsn: str, writer: Writer) -> None:
    records = one_of_each()
    assert {type(record) for record in records} == set(SPECS)
    writer.put_many(records)
    assert await writer.flush(30)
    for record in records:
        assert count(dsn, record.TABLE) >= 1, record.TABLE
    assert gauge(metrics.db_up) == 1
    assert gauge(metrics.write_buffer_rows) == 0


async def test_decimals_are_stored_exactly(dsn: str, writer: Writer) -> None:
    trades = [
        trade(1000 + i, price=str(value), amount=str(value))
        for i, value in enumerate(EXTREME_DECIMALS)
    ]
    writer.put_many(trades)
    assert await writer.flush(30)
    with psycopg.connect(dsn) as conn:
        stored = conn.execute(
            "SELECT price, amount, price::text FROM trades "
            "WHERE tid >= 1000 AND tid < 2000 ORDER BY tid"
        ).fetchall()
    assert [row[0] for row in stored] == EXTREME_DECIMALS
    assert [row[1] for row in stored] == EXTREME_DECIMALS
    # numeric keeps the scale: 100000000.00000000 is not 100000000 nor 1E+8
    assert [row[2] for row in stored] == [
        "0.00000001", "0.00000001", "100000000.00000000",
        "123456789012345.678901234567890", "936.00", "935.23",
    ]  # fmt: skip


async def test_replays_and_overlaps_store_each_row_once(dsn: str, writer: Writer) -> None:
    first = [trade(tid) for tid in range(3000, 3100)]
    overlapping = [trade(tid) for tid in range(3050, 3150)]
    writer.put_many(first)
    assert await writer.flush(30)
    writer.put_many(
        first + overlapping + overlapping
    )  # a replay, an overlap, duplicates in a batch
    assert await writer.flush(30)
    assert count(dsn, "trades", "tid BETWEEN 3000 AND 3149") == 150


async def test_upserts_move_forward_only(dsn: str, writer: Writer) -> None:
    bucket = T0.replace(hour=5, minute=0, second=0, microsecond=0)
    candle = r.Candle(
        pair="ETH_USD", resolution="1", bucket=bucket, open=Decimal(1), high=Decimal(2),
        low=Decimal(1), close=Decimal(2), volume=Decimal("0.5"), updated_at=T0,
    )  # fmt: skip
    later = replace(
        candle, high=Decimal(3), close=Decimal(3), updated_at=T0 + timedelta(seconds=30)
    )
    writer.put_many([candle, later])
    assert await writer.flush(30)
    writer.put(candle)  # an old observation replayed must not undo the newer one
    assert await writer.flush(30)
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT close, updated_at FROM candles WHERE pair = 'ETH_USD' AND bucket = %s",
            (bucket,),
        ).fetchone()
    assert row == (Decimal(3), later.updated_at)


async def test_a_session_end_survives_a_replayed_start(dsn: str, writer: Writer) -> None:
    start = r.StreamSession(session_id=SESSION, connected_at=T0, disconnected_at=None, reason=None)
    end = replace(start, disconnected_at=T0 + timedelta(minutes=5), reason="transport close")
    writer.put_many([start, end])
    assert await writer.flush(30)
    writer.put(start)
    assert await writer.flush(30)
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT disconnected_at, reason FROM stream_sessions WHERE session_id = %s", (SESSION,)
        ).fetchone()
    assert row == (end.disconnected_at, "transport close")


async def test_a_lone_record_is_committed_without_waiting_for_a_full_batch(
    dsn: str, tmp_path: Path
) -> None:
    async with Writer(dsn, tmp_path / "spool", batch_rows=10_000, flush_interval_s=0.25) as writer:
        writer.put(trade(5000))
        started = time.monotonic()
        while count(dsn, "trades", "tid = 5000") == 0:
            assert time.monotonic() - started < 20, "a lone record was never flushed"
            await asyncio.sleep(0.02)


async def test_a_record_put_into_an_idle_writer_is_committed_without_a_flush(
    dsn: str, tmp_path: Path
) -> None:
    """The end of a trade catch-up on a quiet market: the writer had gone idle, one put()
    arrives and nothing else follows (no put_many, no flush, no full batch)."""
    async with Writer(dsn, tmp_path / "spool", batch_rows=10_000, flush_interval_s=0.05) as writer:
        writer.put_many([trade(5100)])
        assert await writer.flush(30)
        await asyncio.sleep(0.2)  # the writer waits for work with an empty buffer
        writer.put(trade(5101))
        started = time.monotonic()
        while count(dsn, "trades", "tid = 5101") == 0:
            assert time.monotonic() - started < 20, "a record put into an idle writer waited"
            await asyncio.sleep(0.02)


async def test_a_refused_row_is_kept_verbatim_and_the_rest_committed(
    dsn: str, writer: Writer
) -> None:
    bad = replace(trade(6001), type="hold")  # type: ignore[arg-type]  # violates the CHECK
    writer.put_many([trade(6000), bad, trade(6002)])
    assert await writer.flush(30)
    assert count(dsn, "trades", "tid IN (6000, 6002)") == 2
    assert count(dsn, "trades", "tid = 6001") == 0
    assert count(dsn, "raw_messages", "source = 'writer' AND payload LIKE '%6001%hold%'") == 1


async def test_a_row_that_cannot_be_encoded_is_kept_and_blocks_nothing(
    dsn: str, writer: Writer
) -> None:
    """An integer beyond bigint or text with a lone surrogate fails on our side, before the
    database sees it; retried as an outage, it once blocked every later write for ever."""
    too_big = replace(trade(6103), tid=2**63)
    surrogate = replace(trade(6101), pair="BTC_\ud800")
    writer.put_many([trade(6100), too_big, surrogate, trade(6102)])
    assert await writer.flush(30)
    assert count(dsn, "trades", "tid IN (6100, 6102)") == 2
    assert (
        count(dsn, "raw_messages", "source = 'writer' AND payload LIKE '%9223372036854775808%'")
        == 1
    )
    assert count(dsn, "raw_messages", "source = 'writer' AND payload LIKE '%BTC_\\\\ud800%'") == 1


async def test_rows_written_counts_rows_stored_not_rows_sent(dsn: str, writer: Writer) -> None:
    before = metrics.rows_written.labels("trades")._value.get()
    writer.put_many([trade(tid) for tid in range(7000, 7010)])
    assert await writer.flush(30)
    writer.put_many([trade(tid) for tid in range(7000, 7010)])  # nothing new
    assert await writer.flush(30)
    assert metrics.rows_written.labels("trades")._value.get() - before == 10

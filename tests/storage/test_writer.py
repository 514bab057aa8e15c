"""The writer against a real database: exact, idempotent, timely, and tolerant of refusals."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest

from recorder import records as r
from recorder.storage.migrate import migrate
from recorder.storage.spool import Spool, encode
from recorder.storage.tables import SPECS
from recorder.storage.writer import Writer
from tests.harness.metrics import sample
from tests.harness.waiting import eventually
from tests.storage.records_factory import EXTREME_DECIMALS, SESSION, T0, one_of_each, trade
from tests.storage.writer_support import FAST_RETRY, worker


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


async def test_every_record_type_reaches_its_table(dsn: str, writer: Writer) -> None:
    records = one_of_each()
    assert {type(record) for record in records} == set(SPECS)
    writer.put_many(records)
    assert await writer.flush(30)
    for record in records:
        assert count(dsn, record.TABLE) >= 1, record.TABLE
    assert sample("recorder_db_up") == 1
    assert sample("recorder_write_buffer_rows") == 0


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
        await eventually(lambda: count(dsn, "trades", "tid = 5000") == 1, timeout_s=20,
                         what="the lone record committed")  # fmt: skip


async def test_a_record_put_into_an_idle_writer_is_committed_without_a_flush(
    dsn: str, tmp_path: Path
) -> None:
    """The end of a trade catch-up on a quiet market: the writer had gone idle, one put()
    arrives and nothing else follows (no put_many, no flush, no full batch)."""
    async with Writer(dsn, tmp_path / "spool", batch_rows=10_000, flush_interval_s=0.05) as writer:
        writer.put_many([trade(5100)])
        assert await writer.flush(30)
        # The scenario itself: time passes with nothing to write, and the writer goes idle.
        await asyncio.sleep(0.2)
        writer.put(trade(5101))
        await eventually(lambda: count(dsn, "trades", "tid = 5101") == 1, timeout_s=20,
                         what="the record put into an idle writer committed")  # fmt: skip


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
    before = sample("recorder_rows_written_total", table="trades")
    writer.put_many([trade(tid) for tid in range(7000, 7010)])
    assert await writer.flush(30)
    writer.put_many([trade(tid) for tid in range(7000, 7010)])  # nothing new
    assert await writer.flush(30)
    assert sample("recorder_rows_written_total", table="trades") - before == 10


@pytest.mark.parametrize(
    ("bad", "kept_as"),
    [
        # The database refuses a NUL in text (psycopg.DataError from the server).
        (replace(trade(6201), pair="BTC\x00USD"), "%BTC\\\\u0000USD%"),
        # A decimal beyond numeric's range (psycopg.DataError from psycopg's dumper).
        (replace(trade(6202), amount=Decimal("1E+200000")), "%1E+200000%"),
        # Beyond `integer`: psycopg's binary COPY would store 2**31 as -2147483648.
        (
            r.Pair(
                name="WRAP_USD", currency1="WRAP", currency2="USD", price_precision=2**31,
                minimum_order_size=Decimal(1), maximum_order_size=Decimal(2), seen_at=T0,
            ),
            "%WRAP_USD%2147483648%",
        ),
    ],
    ids=["nul", "numeric-range", "integer-range"],
)  # fmt: skip
async def test_a_value_the_database_cannot_take_is_kept_verbatim_not_stored_altered(
    dsn: str, writer: Writer, bad: r.Record, kept_as: str
) -> None:
    writer.put_many([trade(6200), bad, trade(6203)])
    assert await writer.flush(30)
    assert count(dsn, "trades", "tid IN (6200, 6203)") == 2
    assert count(dsn, "trades", "tid BETWEEN 6201 AND 6202") == 0
    assert count(dsn, "pairs", "name = 'WRAP_USD'") == 0
    assert count(dsn, "raw_messages", f"source = 'writer' AND payload LIKE '{kept_as}'") == 1


async def test_rows_that_fail_for_a_reason_of_ours_are_held_not_refused(
    dsn: str, tmp_path: Path
) -> None:
    """A record of the wrong type is a bug of ours, not bad input: it is not kept in
    raw_messages as if the exchange had sent it, nor retried for ever in front of the rest.
    It is set aside on disk, counted and logged; the rest is committed; and it is tried
    again at the next start (and, failing again, held again: never lost, never doubled)."""
    naive = replace(trade(6301), ts=T0.replace(tzinfo=None))  # TypeError in psycopg
    text_id = replace(trade(6302), tid="6302")  # type: ignore[arg-type]  # TypeError too
    spool = tmp_path / "spool"
    held = spool / "held"
    errors = sample("recorder_task_failures_total", task="writer")
    async with Writer(dsn, spool, retry=FAST_RETRY) as writer:
        writer.put_many([trade(6300), naive, text_id, trade(6303)])
        assert await writer.flush(30)
        assert sample("recorder_spool_held_rows") == 2
    assert count(dsn, "trades", "tid BETWEEN 6300 AND 6303") == 2
    assert count(dsn, "trades", "tid IN (6300, 6303)") == 2
    assert count(dsn, "raw_messages", "payload LIKE '%630_%'") == 0
    assert sample("recorder_task_failures_total", task="writer") > errors
    lines = sorted(line for s in held.glob("*.jsonl") for line in s.read_text().splitlines())
    assert lines == sorted([encode(naive), encode(text_id)])

    async with Writer(dsn, spool, retry=FAST_RETRY) as again:
        await eventually(
            lambda: sample("recorder_task_failures_total", task="writer") >= errors + 4,
            what="the held rows tried again at start, failing again",
        )
        assert await again.flush(30)
    assert sorted(line for s in held.glob("*.jsonl") for line in s.read_text().splitlines()) == (
        lines
    )
    assert not list(spool.glob("*.jsonl"))


async def test_held_rows_are_offered_again_while_the_writer_runs(dsn: str, tmp_path: Path) -> None:
    naive = replace(trade(6351), ts=T0.replace(tzinfo=None))
    errors = sample("recorder_task_failures_total", task="writer")
    held = tmp_path / "spool" / "held"
    async with Writer(dsn, tmp_path / "spool", retry=FAST_RETRY, held_retry_s=0.2) as writer:
        writer.put(naive)
        # Each round fails twice: the batch, then the row alone.
        await eventually(
            lambda: sample("recorder_task_failures_total", task="writer") >= errors + 6,
            what="three rounds",
        )
        assert await writer.flush(30)
    assert [line for s in held.glob("*.jsonl") for line in s.read_text().splitlines()] == [
        encode(naive)
    ]


async def test_held_rows_are_committed_once_they_can_be(dsn: str, tmp_path: Path) -> None:
    """Rows held by a release with a bug are committed by the next start (the fixed one)."""
    held = Spool(tmp_path / "spool" / "held")
    held.open()
    held.append([trade(6400), trade(6401)])
    async with Writer(dsn, tmp_path / "spool") as writer:
        await eventually(lambda: count(dsn, "trades", "tid IN (6400, 6401)") == 2, what="held")
        assert await writer.flush(30)
    assert not list((tmp_path / "spool").rglob("*.jsonl"))
    assert sample("recorder_spool_held_rows") == 0


async def test_a_worker_that_ended_is_started_again_by_the_next_put(
    dsn: str, writer: Writer
) -> None:
    """The worker's loop ends on nothing but cancellation; if it ends anyway, the writer
    notices at the next put() or flush() and starts it again, saying so."""
    restarts = sample("recorder_task_failures_total", task="writer")
    ended = worker()
    ended.cancel()
    await asyncio.wait([ended])
    writer.put(trade(6500))
    assert worker() is not ended
    assert await writer.flush(30)
    assert count(dsn, "trades", "tid = 6500") == 1
    assert sample("recorder_task_failures_total", task="writer") == restarts + 1

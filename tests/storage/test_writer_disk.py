"""The writer and a disk that fails or stalls: rows stay in memory until the spool has them,
the worker lives on, the event loop never waits for the disk, and nothing is lost."""

from __future__ import annotations

import asyncio
import errno
import logging
import time
from dataclasses import replace
from pathlib import Path

import pytest

from recorder import records as r
from recorder.storage.migrate import migrate
from recorder.storage.writer import Writer
from tests.harness.metrics import sample
from tests.harness.postgres import EmbeddedPostgres
from tests.harness.waiting import eventually
from tests.storage.disk_faults import OPERATIONS, STALL_LIMIT_S, DiskFaults
from tests.storage.records_factory import trade
from tests.storage.writer_support import (
    FAST_RETRY,
    UNREACHABLE_DSN,
    stored_tids,
    worker,
)

SPOOL_FAILURES = "recorder_spool_failures_total"


def spool_failures() -> float:
    return sum(
        sample(SPOOL_FAILURES, operation=operation)
        for operation in ("open", "write", "read", "delete")
    )


def spooled_lines(spool: Path) -> int:
    return sum(len(segment.read_bytes().splitlines()) for segment in spool.glob("*.jsonl"))


@pytest.fixture(scope="module")
def dsn(db_dsn: str) -> str:
    migrate(db_dsn)
    return db_dsn


async def test_a_full_disk_during_an_outage_loses_no_row(
    own_pg: EmbeddedPostgres, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The database is down and the spool's disk fails, for real: a file stands where the
    spool's directory should be, so the OS refuses every write. Rows wait in memory beyond
    max_buffer_rows; once the disk is back they are spilled, and once the database is back
    committed, every one of them."""
    dsn = own_pg.dsn
    migrate(dsn)
    spool, away = tmp_path / "spool", tmp_path / "spool-away"
    sent = [trade(tid) for tid in range(1, 4001)]
    caplog.set_level(logging.INFO, logger="recorder.storage.writer")
    async with Writer(
        dsn,
        spool,
        batch_rows=200,
        max_buffer_rows=500,
        flush_interval_s=0.05,
        retry=FAST_RETRY,
        spool_retry=FAST_RETRY,
    ) as writer:
        writer.put_many(sent[:1000])
        assert await writer.flush(30)
        task = worker()

        own_pg.crash()
        spool.mkdir(exist_ok=True)
        spool.rename(away)
        spool.write_text("a file where the spool's directory should be")
        failures = spool_failures()
        writer.put_many(sent[1000:])
        await eventually(
            lambda: sample("recorder_db_up") == 0 and sample("recorder_spool_writable") == 0,
            what="the database and the spool seen failing",
        )
        await eventually(lambda: spool_failures() >= failures + 3, what="spill retried")
        assert writer.buffered_rows == 3000, "rows went missing while the spool failed"
        episode = [
            r for r in caplog.records if r.getMessage().startswith("the spool cannot be written")
        ]
        assert len(episode) == 1, "one log line per episode, not one per retry"

        spool.unlink()
        away.rename(spool)
        await eventually(
            lambda: sample("recorder_spool_writable") == 1 and spooled_lines(spool) == 3000,
            what="everything in memory spilled once the disk is back",
        )
        assert any(r.getMessage().startswith("spool writes work again") for r in caplog.records)

        own_pg.restart()
        assert await writer.flush(60)
        assert worker() is task  # the same worker, still running
    assert stored_tids(dsn) == list(range(1, 4001))
    assert not list(spool.glob("*.jsonl"))


async def test_the_spool_is_seen_writable_again_when_nothing_is_left_to_spill(
    own_pg: EmbeddedPostgres, tmp_path: Path
) -> None:
    """The database and the spool's disk fail together; the database comes back first, so
    what waited in memory is committed and nothing is left to spill. Once the disk is back,
    `recorder_spool_writable` says so all the same (no alert left firing), and the check
    leaves nothing behind in the spool."""
    dsn = own_pg.dsn
    migrate(dsn)
    spool, away = tmp_path / "spool", tmp_path / "spool-away"
    sent = [trade(tid) for tid in range(1, 301)]
    async with Writer(
        dsn, spool, batch_rows=200, flush_interval_s=0.05, retry=FAST_RETRY, spool_retry=FAST_RETRY
    ) as writer:
        writer.put_many(sent[:100])
        assert await writer.flush(30)
        own_pg.crash()
        spool.mkdir(exist_ok=True)
        spool.rename(away)
        spool.write_text("a file where the spool's directory should be")
        writer.put_many(sent[100:])
        await eventually(
            lambda: sample("recorder_db_up") == 0 and sample("recorder_spool_writable") == 0,
            what="the database and the spool seen failing",
        )
        own_pg.restart()
        assert await writer.flush(60)
        assert writer.buffered_rows == 0
        assert sample("recorder_spool_writable") == 0, "the disk still fails"

        spool.unlink()
        away.rename(spool)
        await eventually(
            lambda: sample("recorder_spool_writable") == 1, what="the spool seen writable again"
        )
        assert sorted(p.name for p in spool.iterdir()) == []
    assert stored_tids(dsn) == list(range(1, 301))


@pytest.mark.parametrize("operation", OPERATIONS)
async def test_the_worker_survives_a_failing_disk_in_every_spool_call(
    operation: str, dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each call the spool makes fails for a while (ENOSPC while spilling, EIO while
    draining); the same worker goes on, and what was put is what gets stored."""
    spool = tmp_path / "spool"
    faults = DiskFaults(monkeypatch, spool)
    first_tid = 1_000_000 * (OPERATIONS.index(operation) + 1)
    sent = [trade(tid) for tid in range(first_tid, first_tid + 1000)]
    spilling = operation not in ("read", "delete")
    failures = spool_failures()

    if spilling:
        faults.fail(operation, errno.ENOSPC)
    async with Writer(
        UNREACHABLE_DSN, spool, flush_interval_s=0.05, retry=FAST_RETRY, spool_retry=FAST_RETRY
    ) as down:
        task = worker()
        down.put_many(sent)
        if spilling:
            await eventually(lambda: faults.failures[operation] >= 2, what=f"{operation} failing")
            assert down.buffered_rows == len(sent)
            faults.heal()
        await eventually(lambda: spooled_lines(spool) == len(sent), what="all spilled")
        # Looked at once no spill is under way: one that is has its temporary file open.
        assert not list(spool.glob("*.tmp")), "a failed spill left a partial file"
        assert worker() is task  # the same worker, still running

    if not spilling:
        faults.fail(operation, errno.EIO)
    async with Writer(dsn, spool, retry=FAST_RETRY, spool_retry=FAST_RETRY) as up:
        task = worker()
        if not spilling:
            await eventually(lambda: faults.failures[operation] >= 1, what=f"{operation} failing")
            faults.heal()
        assert await up.flush(30)
        # The rows are committed; the worker counts a failed deletion when its thread returns.
        await eventually(lambda: spool_failures() > failures, what="the failure counted")
        assert worker() is task  # the same worker, still running
    if operation == "delete":
        # Committed but not deleted: the next start commits it once more, which changes nothing.
        assert spooled_lines(spool) == len(sent)
        async with Writer(dsn, spool) as again:
            assert await again.flush(30)
    assert not list(spool.glob("*.jsonl"))
    assert [tid for tid in stored_tids(dsn) if first_tid <= tid < first_tid + 1000] == [
        record.tid for record in sent
    ]


async def test_put_returns_at_once_while_the_spool_write_is_slow(
    dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A spill whose fsync hangs (a slow disk) holds up the spool, not the event loop: puts
    far beyond max_buffer_rows return at once, and the test itself runs meanwhile."""
    spool = tmp_path / "spool"
    faults = DiskFaults(monkeypatch, spool)
    faults.stall_fsync = True
    sent = [trade(tid) for tid in range(100_000, 105_100)]
    async with Writer(
        UNREACHABLE_DSN,
        spool,
        flush_interval_s=0.05,
        max_buffer_rows=100,
        retry=FAST_RETRY,
        spool_retry=FAST_RETRY,
    ) as down:
        down.put_many(sent[:100])
        await eventually(faults.fsync_entered.is_set, what="a spill waiting in fsync")
        started = time.monotonic()
        down.put_many(sent[100:])  # 50 times max_buffer_rows, while the fsync hangs
        put_s = time.monotonic() - started
        assert down.buffered_rows == len(sent)
        assert not faults.stalled_too_long.is_set(), "the event loop waited for the fsync"
        faults.heal()
        await eventually(lambda: spooled_lines(spool) == len(sent), what="all spilled")
    assert put_s < STALL_LIMIT_S / 2, f"5000 puts took {put_s:.1f} s"
    assert not faults.stalled_too_long.is_set(), "the event loop waited for the fsync"
    async with Writer(dsn, spool) as up:
        assert await up.flush(30)
    assert [tid for tid in stored_tids(dsn) if 100_000 <= tid < 105_100] == [
        record.tid for record in sent
    ]


async def close_while_a_spill_hangs(spool: Path, faults: DiskFaults, sent: list[r.Trade]) -> None:
    """A writer without a database spills `sent`; close() is called while the spill waits
    in fsync, which is let go once close() is stopping the worker."""
    down = Writer(
        UNREACHABLE_DSN, spool, flush_interval_s=0.05, retry=FAST_RETRY, spool_retry=FAST_RETRY
    )
    await down.__aenter__()
    down.put_many(sent)
    await eventually(faults.fsync_entered.is_set, what="a spill waiting in fsync")
    stopping = worker()
    closing = asyncio.create_task(down.close())
    await eventually(lambda: stopping.cancelling() > 0, what="close() stopping the worker")
    faults.fsync_release.set()
    await closing


async def assert_stored_at_next_start(dsn: str, spool: Path, sent: list[r.Trade]) -> None:
    """The next start commits the spool: every trade sent is stored, once, in order."""
    async with Writer(dsn, spool) as up:
        assert await up.flush(30)
    first, last = sent[0].tid, sent[-1].tid
    assert [tid for tid in stored_tids(dsn) if first <= tid <= last] == [t.tid for t in sent]


async def test_a_spill_that_fails_as_the_writer_stops_is_reported_and_redone(
    dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """close() stops the worker while its spill hangs in fsync; the fsync then fails. The
    step that asked is gone, so the failure is logged where the thread is awaited (it was
    dropped, and asyncio complained of an exception never retrieved), and close() spills
    the rows itself: all of them reach the database at the next start."""
    spool = tmp_path / "spool"
    faults = DiskFaults(monkeypatch, spool)
    faults.stall_fsync = True
    faults.fail("fsync", errno.EIO, times=1)
    sent = [trade(tid) for tid in range(200_000, 200_300)]
    await close_while_a_spill_hangs(spool, faults, sent)
    assert faults.failures["fsync"] == 1
    assert any(
        r.getMessage() == "a spool operation failed as the writer stopped" for r in caplog.records
    )
    await assert_stored_at_next_start(dsn, spool, sent)


async def test_a_spill_that_succeeds_as_the_writer_stops_is_spooled_once(
    dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """close() stops the worker while its spill hangs in fsync; the fsync then succeeds. The
    rows it wrote are on disk, and close() spills only the others: the spool holds each row
    once (it held the stalled spill's rows twice: idempotent to commit, but a slow disk's
    shutdown doubled what it had to write), and the next start stores every one."""
    spool = tmp_path / "spool"
    faults = DiskFaults(monkeypatch, spool)
    faults.stall_fsync = True
    sent = [trade(tid) for tid in range(210_000, 210_300)]
    await close_while_a_spill_hangs(spool, faults, sent)
    assert spooled_lines(spool) == len(sent)
    await assert_stored_at_next_start(dsn, spool, sent)


async def test_a_record_the_spool_cannot_encode_blocks_no_spill(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A value JSON cannot hold (bytes where text belongs: a bug where the record was made)
    can be neither stored nor spooled. It does not hold back the rows around it: it is
    dropped with an error line that carries the whole record, and counted."""
    spool = tmp_path / "spool"
    unencodable = replace(trade(2), pair=b"BTC_USD")  # type: ignore[arg-type]
    errors = sample("recorder_task_failures_total", task="writer")
    async with Writer(
        UNREACHABLE_DSN, spool, flush_interval_s=0.05, retry=FAST_RETRY, spool_retry=FAST_RETRY
    ) as down:
        down.put_many([trade(1), unencodable, trade(3)])
        await eventually(lambda: spooled_lines(spool) == 2, what="the other rows spilled")
        # in the spool as the spill's thread returns, out of memory once the worker resumes
        await eventually(lambda: down.buffered_rows == 2, what="the spilled rows counted once")
    assert sample("recorder_task_failures_total", task="writer") == errors + 1
    (line,) = [r for r in caplog.records if "neither stored nor spooled" in r.getMessage()]
    assert line.fields["record"] == repr(unencodable)  # type: ignore[attr-defined]

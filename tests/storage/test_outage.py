"""Nothing received is lost: a database killed mid-write, and a spool that outlives the writer."""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import astuple
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import psycopg

from recorder.records import BookSnapshot, Record, SnapshotOrder
from recorder.storage.migrate import migrate
from recorder.storage.spool import encode
from recorder.storage.writer import Writer
from tests.harness.metrics import sample
from tests.harness.postgres import EmbeddedPostgres
from tests.harness.waiting import eventually
from tests.storage.records_factory import trade
from tests.storage.writer_support import FAST_RETRY, UNREACHABLE_DSN, stored_tids


async def test_database_killed_and_restarted_mid_write_loses_nothing(
    own_pg: EmbeddedPostgres, tmp_path: Path
) -> None:
    dsn = own_pg.dsn
    migrate(dsn)
    total = 6000
    spool = tmp_path / "spool"
    async with Writer(
        dsn, tmp_path / "spool", batch_rows=200, max_buffer_rows=1000, retry=FAST_RETRY
    ) as writer:

        async def produce() -> None:
            for tid in range(1, total + 1):
                writer.put(trade(tid))
                if tid % 100 == 0:
                    # Not a wait: rows arrive over time, as they do from the sources, so
                    # that the crash below falls in the middle of them.
                    await asyncio.sleep(0.01)

        producer = asyncio.create_task(produce())
        await eventually(lambda: len(stored_tids(dsn)) >= 500, what="500 rows committed")
        # An immediate stop is a crash: no checkpoint, connections cut, recovery at start.
        own_pg.crash()
        await eventually(lambda: sample("recorder_db_up") == 0, what="recorder_db_up 0")
        await producer
        await eventually(lambda: list(spool.glob("*.jsonl")), what="the overflow spilled")
        assert writer.buffered_rows > 0
        own_pg.restart()
        assert await writer.flush(60)
    assert sample("recorder_db_up") == 1
    assert stored_tids(dsn) == list(range(1, total + 1))
    assert not list(spool.glob("*.jsonl"))


async def test_the_spool_survives_a_restart_of_the_writer(db_dsn: str, tmp_path: Path) -> None:
    migrate(db_dsn)
    spool = tmp_path / "spool"
    async with Writer(UNREACHABLE_DSN, spool, max_buffer_rows=100, retry=FAST_RETRY) as down:
        down.put_many(trade(tid) for tid in range(1, 1001))
        assert down.buffered_rows == 1000
        assert sample("recorder_write_buffer_rows") == 1000
        await eventually(lambda: sample("recorder_db_up") == 0, what="recorder_db_up 0")
        assert not await down.flush(0.5)
    # The writer is gone; what it held is on disk, in segments, nothing in memory.
    assert sum(len(p.read_text().splitlines()) for p in spool.glob("*.jsonl")) == 1000

    async with Writer(db_dsn, spool) as up:  # the next start drains the spool first
        assert up.buffered_rows == 1000
        assert await up.flush(60)
    assert stored_tids(db_dsn) == list(range(1, 1001))
    assert not list(spool.glob("*.jsonl"))
    assert sample("recorder_write_buffer_rows") == 0


async def test_a_damaged_spool_line_is_kept_not_fatal(db_dsn: str, tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    spool.mkdir()
    (spool / "000000000001.jsonl").write_text('["Trade", [1, 2]]\nnot json at all\n')
    (spool / "000000000002.tmp").write_text("a spill interrupted before its rename")
    async with Writer(db_dsn, spool) as writer:
        assert await writer.flush(30)
    with psycopg.connect(db_dsn) as conn:
        rows = conn.execute(
            "SELECT payload FROM raw_messages WHERE source = 'spool' ORDER BY payload"
        ).fetchall()
    assert rows == [('["Trade", [1, 2]]',), ("not json at all",)]
    assert not list(spool.iterdir())


async def test_a_spool_written_before_an_upgrade_is_committed_by_the_new_recorder(
    db_dsn: str, tmp_path: Path
) -> None:
    """Fields added since (a snapshot's events_through and in_sync, its orders' taken_at)
    are filled in: the spool of a recorder stopped while its database was down outlives its
    version."""
    taken_at = datetime(2026, 11, 29, 12, 0, 0, 123456, tzinfo=UTC)
    through = taken_at - timedelta(seconds=1)
    # in_sync False, so that the default filled in (True) shows
    snapshot = BookSnapshot(uuid.uuid4(), "BTC_USD", taken_at, taken_at, False, "interval",
                            None, in_sync=False)  # fmt: skip
    # spilled before in_sync only: its events_through is kept
    later = BookSnapshot(uuid.uuid4(), "BTC_USD", taken_at, taken_at, False, "interval",
                         through, in_sync=False)  # fmt: skip
    orders = [
        SnapshotOrder(snapshot.snapshot_id, "buy", pos, 100 + pos, Decimal(f"9{pos}.10"),
                      Decimal("0.00000001"), taken_at, taken_at)
        for pos in range(3)
    ]  # fmt: skip
    orphan = SnapshotOrder(uuid.uuid4(), "sell", 0, 7, Decimal("1"), Decimal("2"), None, taken_at)

    def as_older_recorder_spilled(record: Record, missing: int = 1) -> str:
        name, values = json.loads(encode(record))
        return json.dumps([name, values[:-missing]])  # the fields added last were not there

    spool = tmp_path / "spool"
    spool.mkdir()
    lines = [
        as_older_recorder_spilled(snapshot, missing=2),
        as_older_recorder_spilled(later),
        *(as_older_recorder_spilled(r) for r in (*orders, orphan)),
    ]
    (spool / "000000000001.jsonl").write_text("\n".join(lines) + "\n")
    async with Writer(db_dsn, spool) as writer:
        assert await writer.flush(30)
    with psycopg.connect(db_dsn) as conn:
        stored = conn.execute(
            "SELECT snapshot_id, pair, taken_at, events_through, in_sync FROM book_snapshots"
            " WHERE snapshot_id = ANY(%s) ORDER BY events_through NULLS FIRST",
            [[snapshot.snapshot_id, later.snapshot_id]],
        ).fetchall()
        stored_orders = conn.execute(
            "SELECT snapshot_id, side, pos, order_id, price, amount, order_ts, taken_at"
            " FROM book_snapshot_orders WHERE snapshot_id = %s ORDER BY pos",
            [snapshot.snapshot_id],
        ).fetchall()
        kept = conn.execute("SELECT payload FROM raw_messages WHERE source = 'spool'").fetchall()
    assert stored == [
        (snapshot.snapshot_id, "BTC_USD", taken_at, None, True),
        (later.snapshot_id, "BTC_USD", taken_at, through, True),
    ]
    assert stored_orders == [astuple(order) for order in orders]
    # An order whose snapshot was never read cannot be dated: kept verbatim, not guessed.
    assert [payload for (payload,) in kept if payload in lines] == [lines[-1]]
    assert not list(spool.iterdir())

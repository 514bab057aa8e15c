"""The two ways a batch reaches a table: a COPY straight in, and the merge it falls back to.

Both must store each row exactly once, with exactly the values put, whatever the table held
before; a batch either commits whole or leaves nothing behind.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from dataclasses import replace
from datetime import timedelta
from decimal import Decimal
from typing import Any

import psycopg
import pytest

from recorder import records as r
from recorder.storage.committer import COPY_CHUNK_ROWS, Committer, DatabaseUnavailable
from recorder.storage.migrate import migrate
from recorder.storage.tables import SPECS, TableSpec
from tests.harness.waiting import eventually
from tests.storage.records_factory import EXTREME_DECIMALS, SESSION, T0, trade


@pytest.fixture(scope="module")
def migrated(db_dsn: str) -> str:
    migrate(db_dsn)
    return db_dsn


@pytest.fixture
def dsn(migrated: str) -> str:
    """The module's database (plain PostgreSQL, then TimescaleDB), its tables emptied."""
    with psycopg.connect(migrated) as conn:
        conn.execute("TRUNCATE trades_stored, book_events")
    return migrated


@pytest.fixture
async def committer(dsn: str) -> AsyncIterator[Committer]:
    committer = Committer(dsn, statement_timeout_s=30)
    try:
        yield committer
    finally:
        await committer.close()


def book_event(oid: int, *, amount: str = "0.5") -> r.BookEvent:
    return r.BookEvent(
        pair="BTC_USD", oid=oid, kind="new", ts=T0 + timedelta(milliseconds=oid), type="buy",
        price=EXTREME_DECIMALS[oid % len(EXTREME_DECIMALS)], amount=Decimal(amount),
        cancel_order_id=None, received_at=T0 + timedelta(milliseconds=oid, microseconds=7),
        session_id=SESSION,
    )  # fmt: skip


def stored(dsn: str, spec: TableSpec) -> list[tuple[Any, ...]]:
    """Every row of the table, in the order of its key, as the writer's rows are laid out."""
    with psycopg.connect(dsn) as conn:
        return conn.execute(
            f"SELECT {spec.column_names} FROM {spec.name} ORDER BY {', '.join(spec.key)}"  # noqa: S608
        ).fetchall()


def as_rows(records: Iterable[r.Record]) -> list[tuple[Any, ...]]:
    """What the table must hold: the first record of each key, in the order of the key."""
    first: dict[tuple[Any, ...], tuple[Any, ...]] = {}
    for record in records:
        spec = SPECS[type(record)]
        row = spec.to_row(record)
        first.setdefault(spec.key_of(row), row)
    return [first[key] for key in sorted(first)]


TRADES = SPECS[r.Trade]
BOOK_EVENTS = SPECS[r.BookEvent]


async def test_a_new_batch_goes_straight_in_with_exact_values(
    dsn: str, committer: Committer
) -> None:
    trades = [
        trade(tid, price=str(EXTREME_DECIMALS[tid % 6]), amount=str(EXTREME_DECIMALS[-tid % 6]))
        for tid in range(1, 301)
    ]
    events = [book_event(oid) for oid in range(1, 201)]
    committed = await committer.commit([*trades, *events])
    assert committed.rows == {"trades": 300, "book_events": 200}
    assert committer.merging == frozenset()  # nothing was there: no merge was needed
    assert stored(dsn, TRADES) == as_rows(trades)
    assert stored(dsn, BOOK_EVENTS) == as_rows(events)


async def test_a_batch_of_many_copy_chunks_is_stored_whole_on_both_paths(
    dsn: str, committer: Committer
) -> None:
    """A COPY is sent a chunk of rows at a time: every chunk, the last one short, arrives
    once and in full, straight in and when merging."""
    tids = range(1, 2 * COPY_CHUNK_ROWS + 8)
    batch = [
        trade(tid, price=str(EXTREME_DECIMALS[tid % 6]), amount=f"{tid}.{tid:06d}") for tid in tids
    ]
    assert (await committer.commit(batch)).rows == {"trades": len(batch)}
    assert stored(dsn, TRADES) == as_rows(batch)
    more = [trade(tid, amount=f"0.{tid}") for tid in range(len(batch) + 1, 3 * COPY_CHUNK_ROWS)]
    committed = await committer.commit([*batch, *more])  # the merging path: staging COPY
    assert committed.rows == {"trades": len(more)}
    assert committer.merging == {"trades"}
    assert stored(dsn, TRADES) == as_rows([*batch, *more])


async def test_a_replayed_batch_is_merged_and_stores_nothing_twice(
    dsn: str, committer: Committer
) -> None:
    batch = [trade(tid) for tid in range(1, 101)]
    await committer.commit(batch)
    committed = await committer.commit(batch)  # a spool replayed after an unclear failure
    assert committed.rows == {"trades": 0}
    assert committer.merging == {"trades"}
    assert stored(dsn, TRADES) == as_rows(batch)


async def test_a_half_old_batch_stores_the_union_and_keeps_the_first_copy(
    dsn: str, committer: Committer
) -> None:
    old = [trade(tid) for tid in range(1, 101)]
    # The overlap comes back observed later: the row already stored is the one that stays.
    half_old = [
        replace(t, received_at=t.received_at + timedelta(hours=1))
        for t in (trade(tid) for tid in range(51, 151))
    ]
    await committer.commit(old)
    committed = await committer.commit(half_old)
    assert committed.rows == {"trades": 50}
    assert stored(dsn, TRADES) == as_rows([*old, *half_old])


async def test_merging_lasts_until_a_batch_finds_nothing_stored(
    dsn: str, committer: Committer
) -> None:
    first = [trade(tid) for tid in range(1, 11)]
    await committer.commit(first)
    await committer.commit([*first, trade(11)])  # a restart's overlap
    assert committer.merging == {"trades"}
    await committer.commit(first)  # the replay goes on: merged at once, no refused COPY
    assert committer.merging == {"trades"}
    fresh = [trade(tid) for tid in range(12, 22)]
    assert (await committer.commit(fresh)).rows == {"trades": 10}
    assert committer.merging == frozenset()
    later = [trade(tid) for tid in range(22, 32)]
    assert (await committer.commit(later)).rows == {"trades": 10}
    assert committer.merging == frozenset()
    assert stored(dsn, TRADES) == as_rows([*first, trade(11), *fresh, *later])


async def test_a_refused_copy_undoes_only_its_own_table(dsn: str, committer: Committer) -> None:
    """The trades of a batch went straight in; its book events met stored ones and merged."""
    old_events = [book_event(oid) for oid in range(1, 51)]
    await committer.commit(old_events)
    trades = [trade(tid) for tid in range(1, 51)]
    events = [book_event(oid) for oid in range(26, 76)]
    committed = await committer.commit([*trades, *events])
    assert committed.rows == {"trades": 50, "book_events": 25}
    assert committer.merging == {"book_events"}
    assert stored(dsn, TRADES) == as_rows(trades)
    assert stored(dsn, BOOK_EVENTS) == as_rows([*old_events, *events])


async def test_duplicates_within_a_batch_go_straight_in_once(
    dsn: str, committer: Committer
) -> None:
    first = [trade(tid) for tid in range(1, 21)]
    again = [replace(t, received_at=t.received_at + timedelta(seconds=1)) for t in first[5:]]
    committed = await committer.commit([*first, *again])
    assert committed.rows == {"trades": 20}
    assert committer.merging == frozenset()
    assert stored(dsn, TRADES) == as_rows(first)


async def test_a_batch_failing_after_a_straight_copy_leaves_nothing(
    dsn: str, committer: Committer
) -> None:
    """An error of ours in the batch's second table rolls back the first table's COPY too."""
    trades = [trade(tid) for tid in range(1, 101)]
    broken = replace(book_event(1), price=object())
    with pytest.raises(Exception, match=r"object"):
        await committer.commit([*trades, broken])
    assert stored(dsn, TRADES) == []
    assert stored(dsn, BOOK_EVENTS) == []
    await committer.commit(trades)  # the connection is fit for the next batch
    assert stored(dsn, TRADES) == as_rows(trades)


async def test_a_connection_lost_mid_copy_leaves_nothing_and_the_retry_stores_all(
    dsn: str, committer: Committer
) -> None:
    batch = [trade(tid) for tid in range(1, 2001)]
    with psycopg.connect(dsn) as other:
        # Another writer's uncommitted copy of one row: the COPY waits for it mid-batch.
        other.execute(
            f"INSERT INTO trades ({TRADES.column_names}) VALUES "  # noqa: S608
            f"({', '.join(['%s'] * len(TRADES.columns))})",
            TRADES.to_row(batch[1500]),
        )
        writing = asyncio.create_task(committer.commit(batch))
        with psycopg.connect(dsn, autocommit=True) as admin:

            def copy_waiting() -> list[tuple[Any, ...]]:
                return admin.execute(
                    "SELECT pid FROM pg_stat_activity "
                    "WHERE wait_event_type = 'Lock' AND query LIKE 'COPY trades_stored %'"
                ).fetchall()

            await eventually(copy_waiting, what="the COPY waiting for the other row")
            [(pid,)] = copy_waiting()
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
            with pytest.raises(DatabaseUnavailable):
                await writing
            assert stored(dsn, TRADES) == []  # not the 1,500 rows copied before the wait
        other.rollback()
    await committer.close()
    assert (await committer.commit(batch)).rows == {"trades": 2000}
    assert stored(dsn, TRADES) == as_rows(batch)


async def test_a_staging_table_made_by_a_rolled_back_batch_is_made_again(
    dsn: str, committer: Committer
) -> None:
    trades = [trade(tid) for tid in range(1, 51)]
    await committer.commit(trades)
    broken = replace(book_event(1), price=object())
    with pytest.raises(Exception, match=r"object"):
        await committer.commit([*trades, broken])  # merged trades first: its staging is made
    # Same connection: the staging table went with the rollback and is made once more.
    assert (await committer.commit([*trades, trade(51)])).rows == {"trades": 1}
    assert stored(dsn, TRADES) == as_rows([*trades, trade(51)])

"""Group commit and the one-pass COPY: rows go as soon as the last commit is done (a few
rows after gathering for GATHER_S), not at a timer, and a batch of several record types,
encoded in one pass, is stored exactly as sent."""

from __future__ import annotations

import time
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest

from recorder import records as r
from recorder.storage import writer as writer_module
from recorder.storage.migrate import migrate
from recorder.storage.tables import SPECS
from recorder.storage.writer import GATHER_ROWS, GATHER_S, Writer
from tests.harness.metrics import sample
from tests.harness.waiting import eventually
from tests.storage.records_factory import SESSION, T0, trade

# Numerics that are easy to get wrong: the scale (trailing zeros) must survive, exponent
# forms must become plain numbers, and very small and very large values stay exact.
DECIMALS = [
    Decimal("1E-30"),
    Decimal("0E-8"),
    Decimal("1E+20"),
    Decimal("5.10000"),
    Decimal("100000000.00000000"),
    Decimal("123456789012345678901234567890.123456789012345678901234567890"),
    Decimal("0.1"),
    Decimal("935.23"),
]


@pytest.fixture(scope="module")
def dsn(db_dsn: str) -> str:
    migrate(db_dsn)
    return db_dsn


def stored(dsn: str, table: str, pair: str) -> list[tuple[Any, ...]]:
    spec = next(spec for spec in SPECS.values() if spec.name == table)
    numerics = [name for name, pgtype in spec.columns if pgtype == "numeric"]
    text = "".join(f", {name}::text" for name in numerics)
    with psycopg.connect(dsn) as conn:
        return conn.execute(
            f"SELECT {spec.column_names}{text} FROM {table} WHERE pair = %s "  # noqa: S608
            f"ORDER BY {', '.join(spec.key)}",
            (pair,),
        ).fetchall()


def expected(records: list[Any]) -> list[tuple[Any, ...]]:
    """The rows as sent, each followed by its numerics as PostgreSQL prints them: the plain
    notation with the Decimal's own scale."""
    spec = SPECS[type(records[0])]
    numerics = [i for i, (_, pgtype) in enumerate(spec.columns) if pgtype == "numeric"]
    rows = [spec.to_row(record) for record in records]
    rows.sort(key=spec.key_of)
    return [(*row, *(format(row[i], "f") for i in numerics)) for row in rows]


async def test_rows_waiting_are_committed_without_a_timer(dsn: str, tmp_path: Path) -> None:
    """With an hour's flush interval and batches far from full, every row is still
    committed soon: the worker commits whatever waits as soon as it is free (after
    GATHER_S at most while few rows wait)."""
    async with Writer(dsn, tmp_path / "spool", batch_rows=100_000, flush_interval_s=3600) as writer:
        writer.put(trade(1, pair="GRP_USD"))
        await eventually(lambda: len(stored(dsn, "trades", "GRP_USD")) == 1, timeout_s=20,
                         what="a lone row committed")  # fmt: skip
        # Rows that arrive while a commit is in flight go in the next one, right after it.
        writer.put_many([trade(tid, pair="GRP_USD") for tid in range(2, 3002)])
        writer.put(trade(3002, pair="GRP_USD"))
        await eventually(lambda: len(stored(dsn, "trades", "GRP_USD")) == 3002, timeout_s=20,
                         what="rows put during a commit committed after it")  # fmt: skip


async def test_what_a_full_batch_leaves_goes_right_after_it(
    dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rows a full batch could not take (a snapshot's last order, a burst's tail) do not
    gather again: they are committed as soon as the batch is, however long GATHER_S."""
    monkeypatch.setattr(writer_module, "GATHER_S", 3600.0)  # a row that gathers stays
    rows = [trade(tid, pair="TAIL_USD") for tid in range(1, GATHER_ROWS + 2)]
    async with Writer(dsn, tmp_path / "spool", batch_rows=GATHER_ROWS) as writer:
        writer.put_many(rows)  # enough to go at once, and one more
        await eventually(lambda: len(stored(dsn, "trades", "TAIL_USD")) == len(rows),
                         timeout_s=20, what="the row the full batch left committed")  # fmt: skip
        assert stored(dsn, "trades", "TAIL_USD") == expected(rows)


async def test_a_few_rows_gather_for_a_moment_before_their_commit(dsn: str, tmp_path: Path) -> None:
    """While fewer than GATHER_ROWS wait, the oldest waits GATHER_S for others to share its
    commit: a trickle of events is not committed a row at a time."""
    async with Writer(dsn, tmp_path / "spool", flush_interval_s=3600) as writer:
        put_at = time.time()
        writer.put(trade(1, pair="GTR_USD"))
        await eventually(lambda: len(stored(dsn, "trades", "GTR_USD")) == 1, timeout_s=20,
                         what="the lone row committed")  # fmt: skip
        # The row is visible as the commit returns; the worker notes its time a moment later.
        await eventually(lambda: sample("recorder_last_flush_timestamp_seconds") > put_at,
                         timeout_s=20, what="the commit's time noted")  # fmt: skip
        committed_at = sample("recorder_last_flush_timestamp_seconds")
    assert committed_at - put_at >= GATHER_S


async def test_a_mixed_batch_is_stored_exactly_as_sent(dsn: str, tmp_path: Path) -> None:
    """Trades, book events and fills interleaved in one batch, more rows than psycopg's
    32 KB COPY buffer holds, with numerics of every awkward kind."""
    trades, events, fills = [], [], []
    for i in range(3000):
        price, amount = DECIMALS[i % len(DECIMALS)], DECIMALS[(i * 3 + 1) % len(DECIMALS)]
        at = T0 + timedelta(microseconds=i * 7)
        trades.append(trade(i, pair="MIX_USD", price=str(price), amount=str(amount)))
        events.append(
            r.BookEvent(
                pair="MIX_USD", oid=i, kind="cancel" if i % 5 == 0 else "new", ts=at,
                type="buy" if i % 2 else "sell", price=price, amount=amount,
                cancel_order_id=i + 10**12 if i % 5 == 0 else None,
                received_at=at + timedelta(milliseconds=3), session_id=SESSION,
            )
        )  # fmt: skip
        fills.append(
            r.BookFill(
                pair="MIX_USD", tid=i, oid=i, o_id=2**62 + i, type="sell", price=amount,
                amount=price, ts=at, received_at=at + timedelta(milliseconds=1),
            )
        )  # fmt: skip
    batch = [record for triple in zip(trades, events, fills, strict=True) for record in triple]
    async with Writer(dsn, tmp_path / "spool", batch_rows=len(batch)) as writer:
        writer.put_many(batch)
        assert await writer.flush(60)
    assert stored(dsn, "trades", "MIX_USD") == expected(trades)
    assert stored(dsn, "book_events", "MIX_USD") == expected(events)
    assert stored(dsn, "book_fills", "MIX_USD") == expected(fills)

"""ohlcv_1m / ohlcv_1h / ohlcv_1d equal candles computed independently from the same trades.

On TimescaleDB these are real-time continuous aggregates (1h and 1d built on 1m); on plain
PostgreSQL, views. Both must give the same numbers, exactly.
"""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest

from recorder import records as r
from recorder.storage.migrate import migrate
from recorder.storage.writer import Writer

START = datetime(2024, 3, 1, 22, 50, tzinfo=UTC)  # crosses an hour and a day boundary


def make_trades() -> list[r.Trade]:
    rng = random.Random(7)
    trades = []
    for tid in range(1, 1501):
        trades.append(
            r.Trade(
                pair=rng.choice(["BTC_USD", "ETH_USD"]),
                tid=tid,
                ts=START + timedelta(seconds=tid * 7 + rng.random()),
                type=rng.choice(["buy", "sell"]),
                price=Decimal(rng.randint(90000, 110000)) / 100,
                amount=Decimal(rng.randint(1, 10**8)) / 10**8,
                received_at=START,
            )
        )
    return trades


def expected(trades: list[r.Trade], width: timedelta) -> dict[tuple[str, datetime], tuple]:
    groups: dict[tuple[str, datetime], list[r.Trade]] = defaultdict(list)
    epoch = datetime(2000, 1, 1, tzinfo=UTC)
    for t in trades:
        groups[(t.pair, epoch + ((t.ts - epoch) // width) * width)].append(t)
    out = {}
    for key, group in groups.items():
        group.sort(key=lambda t: t.tid)
        prices = [t.price for t in group]
        out[key] = (
            prices[0], max(prices), min(prices), prices[-1],
            sum(t.amount for t in group), sum(t.price * t.amount for t in group), len(group),
        )  # fmt: skip
    return out


@pytest.fixture(scope="module")
def loaded(db_dsn: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, list[r.Trade]]:
    migrate(db_dsn)
    trades = make_trades()

    async def go(spool: Path) -> None:
        async with Writer(db_dsn, spool) as writer:
            writer.put_many(trades)
            assert await writer.flush(30)

    asyncio.run(go(tmp_path_factory.mktemp("spool")))
    return db_dsn, trades


@pytest.mark.parametrize(
    ("view", "width"),
    [("ohlcv_1m", timedelta(minutes=1)), ("ohlcv_1h", timedelta(hours=1)),
     ("ohlcv_1d", timedelta(days=1))],
)  # fmt: skip
def test_ohlcv_equals_an_independent_computation(
    loaded: tuple[str, list[r.Trade]], view: str, width: timedelta
) -> None:
    dsn, trades = loaded
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            f"SELECT pair, bucket, open, high, low, close, volume, quote_volume, trades "  # noqa: S608
            f"FROM {view}"
        ).fetchall()
    got = {(row[0], row[1]): (*row[2:8], int(row[8])) for row in rows}
    assert got == expected(trades, width)

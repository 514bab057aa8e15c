"""What the daemon asks the database to resume where it stopped: the last stored trade of
each pair, and the oldest and newest stored candle of each chart (an interrupted backfill
goes on before the oldest). Sources never run SQL; the daemon asks here and hands them the
answers.
"""

from __future__ import annotations

from datetime import datetime

import psycopg


async def last_trade_ids(dsn: str) -> dict[str, int]:
    """The highest stored trade id per pair (pairs without trades are absent)."""
    # `GROUP BY pair` would read the whole tape at every start. This walks the (pair, tid)
    # index instead: the next pair after the last one found, then that pair's highest id,
    # a few index probes per pair whatever the size of the table.
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        cursor = await conn.execute(
            """WITH RECURSIVE pairs(pair) AS (
                   SELECT min(pair) FROM trades
                   UNION ALL
                   SELECT (SELECT min(t.pair) FROM trades t WHERE t.pair > pairs.pair)
                   FROM pairs WHERE pairs.pair IS NOT NULL)
               SELECT pair, (SELECT max(t.tid) FROM trades t WHERE t.pair = pairs.pair)
               FROM pairs WHERE pair IS NOT NULL"""
        )
        return {pair: int(tid) for pair, tid in await cursor.fetchall()}


async def candle_spans(dsn: str) -> dict[tuple[str, str], tuple[datetime, datetime]]:
    """The oldest and the newest stored candle bucket per (pair, resolution)."""
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        cursor = await conn.execute(
            "SELECT pair, resolution, min(bucket), max(bucket) FROM candles"
            " GROUP BY pair, resolution"
        )
        return {
            (pair, resolution): (oldest, newest)
            for pair, resolution, oldest, newest in await cursor.fetchall()
        }

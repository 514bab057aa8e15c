"""What the daemon asks the database to resume where it stopped: the newest stored trade of
each pair, and the oldest and newest stored candle of each chart (an interrupted backfill
goes on before the oldest). Sources never run SQL; the daemon asks here and hands them the
answers.
"""

from __future__ import annotations

from datetime import datetime

import psycopg

# `GROUP BY pair` would read the whole tape at every start. This walks an index instead:
# the next pair after the last one found, then that pair's newest trade from the end of
# its (pair, ts...) index: a few index probes per pair whatever the size of the table, and
# on TimescaleDB in the newest chunk only (its highest id would be looked for in every
# chunk, and its key has no (pair, tid) prefix since migrations/0022).
LAST_TRADE_IDS_SQL = """\
WITH RECURSIVE pairs(pair) AS (
    SELECT min(pair) FROM trades
    UNION ALL
    SELECT (SELECT min(t.pair) FROM trades t WHERE t.pair > pairs.pair)
    FROM pairs WHERE pairs.pair IS NOT NULL)
SELECT pair, (SELECT t.tid FROM trades t WHERE t.pair = pairs.pair
              ORDER BY t.ts DESC, t.tid DESC LIMIT 1)
FROM pairs WHERE pair IS NOT NULL"""


async def last_trade_ids(dsn: str) -> dict[str, int]:
    """The id of each pair's newest stored trade (pairs without trades are absent).

    The tape is read on from there (recorder/exchange/paging.py: every trade above that id).
    Ids rise with time at every exchange seen so far, so this is the highest stored id. Were
    they ever out of time order, it would be a lower one, and the catch-up would read again
    trades already stored, which the writer keeps once: never a trade missed.
    """
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        cursor = await conn.execute(LAST_TRADE_IDS_SQL)
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

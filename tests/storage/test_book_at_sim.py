"""book_at equals the simulator's own book at many instants.

The matching engine runs a seeded order flow; its snapshot and every event after it take
the real path into the database (the exact JSON the exchange sends, the client's parser and
classifier, the writer). At many instants along the flow the engine's book is noted; then
book_at(pair, instant) must give exactly that book, order by order.
"""

from __future__ import annotations

import asyncio
import itertools
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest

from recorder.exchange.classify import BookUpdate, classify
from recorder.exchange.parse import load_json, parse_orderbook, to_timestamp
from recorder.records import Record
from recorder.sim import wire
from recorder.sim.engine import Cancel, Engine, Event
from recorder.sim.flow import OrderFlow, pair_spec, wall_clock
from recorder.storage.migrate import migrate
from recorder.storage.writer import Writer

PAIRS = ("BTC_USD", "ETH_BTC")
Book = list[tuple[str, int, Decimal, Decimal]]


def at_s(value: Decimal) -> datetime:
    """An engine time (unix seconds, exact) as the parser reads exchange times."""
    return to_timestamp(value)


def engine_book(engine: Engine, pair: str) -> Book:
    return sorted(
        (side, o.oid, o.price, o.amount)
        for side in ("buy", "sell")
        for o in engine.books[pair].orders(side)  # type: ignore[arg-type]
    )


def snapshot_records(engine: Engine, pair: str, taken_at: datetime) -> list[Record]:
    book = engine.books[pair]
    text = wire.dumps(
        {
            side: [
                {"price": o.price, "id": o.oid, "amount": o.amount, "timestamp": o.timestamp}
                for o in book.orders(side)  # type: ignore[arg-type]
            ]
            for side in ("sell", "buy")
        }
    )
    answer = parse_orderbook(
        text, pair=pair, grouped=False, taken_at=taken_at, received_at=taken_at, reason="interval"
    )
    return [answer.snapshot, *answer.orders]


def event_records(event: Event) -> list[Record]:
    raw = wire.cancel_payload(event) if isinstance(event, Cancel) else wire.new_order_payload(event)
    text = wire.dumps(raw)
    update = classify(
        f"book_{event.pair}", [load_json(text)], payload_text=text,
        received_at=datetime.now(UTC), session_id=uuid.UUID(int=1),
    )  # fmt: skip
    assert isinstance(update, BookUpdate), update
    return [update.event, *update.fills]


@pytest.fixture(scope="module")
def recorded(
    db_dsn: str, tmp_path_factory: pytest.TempPathFactory
) -> tuple[str, list[tuple[datetime, dict[str, Book]]]]:
    """Record a flow; return the DSN and (instant, engine books) pairs along it."""
    migrate(db_dsn)
    microseconds = itertools.count(1_700_000_000_000_000, 1000)  # 1 ms per clock reading
    engine = Engine([pair_spec(p) for p in PAIRS], wall_clock(lambda: next(microseconds) * 1000))
    flow = OrderFlow(engine, seed=2024)
    for _ in range(300):
        flow.step()
    records: list[Record] = []
    taken_at = at_s(engine.clock())
    for pair in PAIRS:
        records.extend(snapshot_records(engine, pair, taken_at))
    instants = [(taken_at, {pair: engine_book(engine, pair) for pair in PAIRS})]
    engine.subscribe(lambda event: records.extend(event_records(event)))
    for step in range(1, 601):
        flow.step()
        if step % 20 == 0:
            now = at_s(engine.clock())
            instants.append((now, {pair: engine_book(engine, pair) for pair in PAIRS}))

    async def write(spool: Path) -> None:
        async with Writer(db_dsn, spool) as writer:
            writer.put_many(records)
            assert await writer.flush(60)

    asyncio.run(write(tmp_path_factory.mktemp("spool")))
    return db_dsn, instants


def test_book_at_equals_the_engine_at_every_instant(
    recorded: tuple[str, list[tuple[datetime, dict[str, Book]]]],
) -> None:
    dsn, instants = recorded
    assert len(instants) == 31
    with psycopg.connect(dsn) as conn:
        for instant, books in instants:
            for pair in PAIRS:
                rebuilt = sorted(
                    conn.execute(
                        "SELECT side, order_id, price, amount FROM book_at(%s, %s)",
                        (pair, instant),
                    ).fetchall()
                )
                assert rebuilt == books[pair], (pair, instant)
    # The flow really moved the book: the instants do not all show the same one.
    assert len({str(books["BTC_USD"]) for _, books in instants}) > 10

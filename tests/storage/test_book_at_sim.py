"""book_at equals the simulator's own book at many instants, whichever id names a cancel.

The matching engine runs a seeded order flow; its snapshots and every event after them take
the real path into the database (the exact JSON the exchange sends, under either reading of
a cancel's two ids, the client's parser and classifier, the writer). At many instants along
the flow the engine's book is noted; then book_at(pair, instant) must give exactly that
book, order by order. The engine's cancel ids often name a resting order too, so the runs
hold ambiguous cancels, which book_at must settle by the evidence of the others.
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

from recorder.book import READINGS, Reading
from recorder.exchange.classify import BookUpdate, classify
from recorder.exchange.parse import load_json, parse_orderbook, to_timestamp
from recorder.records import Record
from recorder.sim import wire
from recorder.sim.engine import Engine, Event
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


def event_records(event: Event, cancel_id: Reading) -> list[Record]:
    text = wire.dumps(wire.book_payload(event, cancel_id))
    update = classify(
        f"book_{event.pair}", [load_json(text)], payload_text=text,
        received_at=datetime.now(UTC), session_id=uuid.UUID(int=1),
    )  # fmt: skip
    assert isinstance(update, BookUpdate), update
    return [update.event, *update.fills]


Recorded = tuple[str, Reading, list[tuple[datetime, dict[str, Book]]]]


@pytest.fixture(scope="module", params=READINGS)
def recorded(
    db_dsn: str, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Recorded:
    """Record a flow whose cancels name their order by `request.param` (in a database emptied
    of the other reading's run); return the DSN, the reading and (instant, engine books)
    pairs along the flow."""
    cancel_id: Reading = request.param
    migrate(db_dsn)
    microseconds = itertools.count(1_700_000_000_000_000, 1000)  # 1 ms per clock reading
    engine = Engine([pair_spec(p) for p in PAIRS], wall_clock(lambda: next(microseconds) * 1000))
    flow = OrderFlow(engine, seed=2024)
    for _ in range(300):
        flow.step()
    records: list[Record] = []
    instants: list[tuple[datetime, dict[str, Book]]] = []
    engine.subscribe(lambda event: records.extend(event_records(event, cancel_id)))
    for step in range(601):
        if step in (0, 300):  # a snapshot at the start and one midway
            taken_at = at_s(engine.clock())
            for pair in PAIRS:
                records.extend(snapshot_records(engine, pair, taken_at))
        if step % 20 == 0:
            now = at_s(engine.clock())
            instants.append((now, {pair: engine_book(engine, pair) for pair in PAIRS}))
        flow.step()

    async def write(spool: Path) -> None:
        async with Writer(db_dsn, spool) as writer:
            writer.put_many(records)
            assert await writer.flush(60)

    with psycopg.connect(db_dsn, autocommit=True) as conn:
        conn.execute(
            "TRUNCATE book_events, book_fills_stored, book_snapshot_orders, book_snapshots"
        )
    asyncio.run(write(tmp_path_factory.mktemp("spool")))
    return db_dsn, cancel_id, instants


def test_book_at_equals_the_engine_at_every_instant(recorded: Recorded) -> None:
    dsn, _, instants = recorded
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


def test_the_run_held_ambiguous_cancels_and_the_evidence_names_the_reading(
    recorded: Recorded,
) -> None:
    dsn, cancel_id, instants = recorded
    with psycopg.connect(dsn) as conn:
        for instant in (instants[14][0], instants[-1][0]):  # the end of each window
            for pair in PAIRS:
                outcomes = dict(
                    conn.execute(
                        "SELECT reading, count(*) FROM book_cancels(%s, %s) GROUP BY reading",
                        (pair, instant),
                    ).fetchall()
                )
                assert outcomes.get("ambiguous", 0) > 0, (pair, outcomes)
                assert outcomes.get(cancel_id, 0) > 0
                assert set(outcomes) <= {"ambiguous", cancel_id}
                (established,) = conn.execute(
                    "SELECT DISTINCT established FROM book_cancels(%s, %s)", (pair, instant)
                ).fetchall()
                assert established == (cancel_id,)

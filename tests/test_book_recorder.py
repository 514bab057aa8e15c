"""Drift: the book rebuilt from the stream is checked against every new snapshot.

Against the simulator over real sockets: a quiet run has snapshots that agree with the
rebuilt book (no drift, whatever is in flight), and a lost event is found and counted.
"""

from __future__ import annotations

import asyncio
import uuid
from decimal import Decimal
from pathlib import Path

from recorder.exchange.rest import ExchangeClient
from recorder.exchange.stream import BookStream
from recorder.records import BookEvent, utc_now
from recorder.sim.server import SimSettings, Simulator, run_sim
from recorder.sources.book import BookRecorder
from recorder.storage.migrate import migrate
from recorder.storage.writer import Writer
from tests.harness.deliveries import delivered_events
from tests.harness.metrics import sample
from tests.harness.waiting import eventually

PAIR = "BTC_USD"
PHANTOM = 10**15
"""An order id far beyond any the simulator hands out."""


async def market_moved(sim: Simulator, events: int = 10) -> None:
    """Wait until the exchange has sent `events` more book events."""
    sent = delivered_events(sim)
    await eventually(lambda: delivered_events(sim) >= sent + events, what="the market moving")


async def checked(recorder: BookRecorder) -> None:
    """Wait until no snapshot of the pair waits for its cut any more."""
    await eventually(lambda: not recorder.pairs[PAIR].windows, what="the snapshot cut")


def drift_count() -> float:
    return sample("recorder_book_drift_total", pair=PAIR)


async def test_snapshots_agree_with_the_rebuilt_book_and_a_lost_event_is_drift(
    pg_dsn: str, tmp_path: Path
) -> None:
    migrate(pg_dsn)
    settings = SimSettings(seed=8, pairs=(PAIR,), rate_per_s=60, history_hours=0.1,
                           record_deliveries=True)  # fmt: skip
    async with (
        run_sim(settings) as sim,
        ExchangeClient(sim.base_url) as client,
        Writer(pg_dsn, tmp_path / "spool") as writer,
    ):
        stream = BookStream(sim.base_url, pairs=[PAIR])
        recorder = BookRecorder(client, stream, writer, snapshot_interval_s=3600, settle_s=0.5)
        recorder.follow(PAIR)
        tasks = [asyncio.create_task(stream.run()), asyncio.create_task(recorder.consume())]
        try:
            await eventually(lambda: recorder.connected.is_set(), what="the stream")
            await recorder.snapshot(PAIR, "connect")
            before = drift_count()
            # Snapshots while the book changes fast: in-flight events are not drift.
            for _ in range(5):
                await market_moved(sim)
                await recorder.snapshot(PAIR, "interval")
                await checked(recorder)
            assert drift_count() == before

            # A difference no event explains: the rebuilt book gains an order by itself.
            model = recorder.pairs[PAIR].model
            assert model is not None
            # An order the exchange never had: no event of the exchange can ever touch it.
            worst_bid = model.side("buy")[-1]
            model.apply(
                BookEvent(
                    pair=PAIR, oid=PHANTOM, kind="new", ts=utc_now(),
                    type="buy", price=worst_bid.price, amount=Decimal("1"),
                    cancel_order_id=None, received_at=utc_now(), session_id=uuid.UUID(int=7),
                )
            )  # fmt: skip
            await recorder.snapshot(PAIR, "interval")
            await eventually(lambda: drift_count() == before + 1, timeout_s=10, what="drift")
            # The snapshot replaced the drifted book: the next one agrees again.
            await checked(recorder)
            await market_moved(sim)
            await recorder.snapshot(PAIR, "interval")
            await checked(recorder)
            assert drift_count() == before + 1
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

"""One recording for the research tests: the daemon against the simulator, with an outage.

The recorder runs in-process for some seconds; in the middle the simulated exchange has an
outage (sockets dropped and refused, REST 502) of OUTAGE_S seconds, which leaves a gap
between two stream sessions that `coverage` must find. The database is then left as the
recorder wrote it, for the coverage and export tests to read.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from recorder.config import Config
from recorder.daemon import Daemon
from recorder.sim.engine import Side
from recorder.sim.server import SimSettings, run_sim
from tests.harness.daemon import (
    daemon_config,
    events_received,
    quiet_until_recorded,
    resynced_since,
    sessions,
    start_daemon,
    stop_daemon,
)
from tests.harness.deliveries import delivered_events
from tests.harness.postgres import count_rows, fresh_database
from tests.harness.waiting import eventually

PAIRS = ("BTC_USD", "ETH_USD")
OUTAGE_S = 3.0


@dataclass(frozen=True)
class Recording:
    dsn: str
    config: Config
    config_path: Path
    outage_from: datetime
    outage_to: datetime
    tops: dict[str, tuple[Any, ...]]
    """The simulator's own (best_bid, bid_size, best_ask, ask_size) per pair at the end."""


async def record(dsn: str, tmp_path: Path) -> Recording:
    settings = SimSettings(seed=11, pairs=PAIRS, rate_per_s=40, history_hours=0.2,
                           record_deliveries=True)  # fmt: skip
    async with run_sim(settings) as sim:
        config = daemon_config(tmp_path, sim, dsn)
        daemon = Daemon(config)
        received = events_received()
        running = await start_daemon(daemon)
        await eventually(lambda: count_rows(dsn, "book_events") > 20, what="live events")
        # The outage starts a clear while after the first session's events, so that the
        # coverage of that session reaches past its first seconds.
        await eventually(lambda: delivered_events(sim) > 60, what="a second of events")
        outage_from = datetime.now(UTC)
        sim.start_outage(OUTAGE_S)
        # Every connection back: a second session for each.
        back_up = 2 * config.exchange.stream_connections
        await eventually(lambda: sessions(dsn) >= back_up, timeout_s=OUTAGE_S + 60,
                         what="the stream back after the outage")  # fmt: skip
        outage_to = datetime.now(UTC)
        # The resync snapshots: taken once each pair's subscription is live, recorded once
        # the events of their window have settled (recorder/sources/book.py).
        await eventually(lambda: resynced_since(dsn, outage_from) == len(PAIRS),
                         what="a resync snapshot of every pair after the outage")  # fmt: skip
        # Some events on the second session before the market is quieted.
        back = delivered_events(sim)
        await eventually(lambda: delivered_events(sim) > back + 60,
                         what="events after the outage")  # fmt: skip
        await quiet_until_recorded(sim, dsn, received)
        await stop_daemon(daemon, running)
        tops = {pair: top(sim.engine.books[pair].levels) for pair in PAIRS}
    return Recording(dsn, config, tmp_path / "recorder.toml", outage_from, outage_to, tops)


def top(levels: Callable[[Side], list[tuple[Decimal, Decimal]]]) -> tuple[Any, ...]:
    """Best price and size of each side from the simulator's book (None when empty)."""
    bids, asks = levels("buy"), levels("sell")
    bid = bids[0] if bids else (None, None)
    ask = asks[0] if asks else (None, None)
    return (*bid, *ask)


@pytest.fixture(autouse=True)
def keep_logging(restore_logging: None) -> None:
    """`main()` points logging at the test's captured stderr; put the handlers back after."""


@pytest.fixture(scope="package")
def recording(pg_server_dsn: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Recording]:
    with fresh_database(pg_server_dsn, "research_recording") as dsn:
        yield asyncio.run(record(dsn, tmp_path_factory.mktemp("research")))

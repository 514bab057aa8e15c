"""The daemon under each reading of what the exchange's docs leave open, end to end.

The simulator sends book events under each event name the docs allow (`--event-name`) and
serves trade pages of each size (`--max-page`); the daemon (in-process, real sockets, a
real PostgreSQL) must store what the simulator sent, exactly:

- every book event a connection was sent is stored under that connection's stream session,
  with the values sent, and nothing else is (compared with `sim.deliveries`, connection by
  connection); every fill inside them is stored; nothing is refused;
- the trade tape, caught up from an empty database in pages as large as the simulator
  serves, equals the engine's trade by trade; what the start's catch-up recovered, and
  only that, is counted in `recorder_trades_backfilled_total`.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from recorder.daemon import Daemon
from recorder.exchange.paging import ASK
from recorder.sim.server import SimSettings, Simulator, run_sim
from tests.harness.daemon import (
    PAIRS,
    assert_book_at_now_is_the_engines,
    daemon_config,
    last_connected_at,
    resynced_since,
    sessions,
    start_daemon,
    stop_daemon,
)
from tests.harness.deliveries import assert_stored_as_delivered, delivered_events, utc
from tests.harness.metrics import sample
from tests.harness.postgres import count_rows, query
from tests.harness.waiting import eventually

TRADES_PATH = "/api/v1/exchanges/"


def stored_tape(dsn: str) -> list[tuple[Any, ...]]:
    return query(dsn, "SELECT tid, pair, type, price, amount, ts FROM trades ORDER BY tid")


def engine_tape(sim: Simulator) -> list[tuple[Any, ...]]:
    """The engine's tape as the trades table must hold it, times included."""
    return sorted((t.tid, t.pair, t.type, t.price, t.amount, utc(t.timestamp))
                  for t in sim.engine.trades)  # fmt: skip


# --- book events under every event name -------------------------------------------------------


@pytest.mark.parametrize("event_name", ["pair", "orderbook"])
async def test_book_events_under_any_event_name_are_stored_exactly_as_sent(
    event_name: str, db: str, tmp_path: Path
) -> None:
    settings = SimSettings(seed=13, pairs=PAIRS, rate_per_s=40, history_hours=0.2,
                           event_name=event_name, record_deliveries=True)  # fmt: skip
    async with run_sim(settings) as sim:
        # One connection at a time: each one's events are stored under its own session.
        daemon = Daemon(daemon_config(tmp_path, sim, db, stream_connections=1))
        running = await start_daemon(daemon)
        await eventually(lambda: count_rows(db, "book_events") > 30,
                         what="events of the first connection")  # fmt: skip
        # A second connection: each one's events must be stored under its own session.
        await sim.drop_sockets()
        await eventually(lambda: sessions(db) == 2, what="the second stream session")
        second = last_connected_at(db)
        await eventually(
            lambda: query(db, "SELECT count(*) FROM book_events e JOIN stream_sessions s "
                          "USING (session_id) WHERE s.connected_at = %s", second)[0][0] > 30,
            what="events of the second connection",
        )  # fmt: skip
        sim.pause()
        await sim.drained()
        await eventually(lambda: count_rows(db, "book_events") >= delivered_events(sim),
                         what="every event sent")  # fmt: skip
        total = len(sim.engine.trades)
        await eventually(lambda: count_rows(db, "trades") == total,
                         what="every trade of the tape")  # fmt: skip
        # One more reconnect on the quiet market: its resync snapshots meet no event in
        # flight, so the book rebuilt at the end must be the engine's, order by order.
        await sim.drop_sockets()
        await eventually(lambda: sessions(db) == 3, what="the third stream session")
        third = last_connected_at(db)
        await eventually(
            lambda: resynced_since(db, third) == len(PAIRS),
            what="a resync snapshot of every pair after the last reconnect",
        )
        await stop_daemon(daemon, running)

        compared = assert_stored_as_delivered(db, sim)
        assert compared.sessions == compared.connections == 3
        assert compared.events > 60  # something was compared
        assert compared.fills
        assert count_rows(db, "raw_messages") == 0
        assert stored_tape(db) == engine_tape(sim)
        assert_book_at_now_is_the_engines(db, sim, PAIRS)


# --- trade catch-up whatever page the exchange serves -----------------------------------------


def backfilled(pair: str) -> float:
    return sample("recorder_trades_backfilled_total", pair=pair)


@dataclass(frozen=True)
class PageAnswer:
    limit: int
    ordering: str
    served: int


@pytest.fixture
async def paged_sim(
    request: pytest.FixtureRequest,
) -> AsyncIterator[tuple[Simulator, list[PageAnswer]]]:
    """A simulator with a few thousand trades of history and `max_page` from the test's
    parameter; every `/exchanges/` answer noted (limit asked, ordering, trades served)."""
    settings = SimSettings(seed=17, pairs=PAIRS, rate_per_s=20, history_hours=0.5,
                           history_events_per_hour=30_000, max_page=request.param,
                           faults={"paused": True})  # fmt: skip
    sim = Simulator(settings)
    answers: list[PageAnswer] = []

    async def note(request: web.Request, response: web.StreamResponse) -> None:
        if request.path != TRADES_PATH or response.status != 200:
            return
        assert isinstance(response, web.Response)
        assert isinstance(response.body, bytes)
        params = request.query
        served = len(json.loads(response.body))
        answers.append(
            PageAnswer(int(params.get("limit", 100)), params.get("ordering", "-id"), served)
        )

    sim.app.on_response_prepare.append(note)
    await sim.start()
    try:
        yield sim, answers
    finally:
        await sim.stop()


@pytest.mark.parametrize(
    "paged_sim", [100, 1000], indirect=True, ids=["max_page_100", "max_page_1000"]
)
async def test_catch_up_stores_the_tape_exactly_whatever_page_the_exchange_serves(
    paged_sim: tuple[Simulator, list[PageAnswer]], db: str, tmp_path: Path
) -> None:
    sim, answers = paged_sim
    max_page = sim.settings.max_page
    history = {pair: len(sim.engine.trades_by_pair[pair]) for pair in PAIRS}
    assert min(history.values()) > 2 * max_page  # several pages per pair

    backfilled_before = {pair: backfilled(pair) for pair in PAIRS}
    daemon = Daemon(daemon_config(tmp_path, sim, db))
    running = await start_daemon(daemon)
    history_total = sum(history.values())
    await eventually(lambda: count_rows(db, "trades") == history_total, timeout_s=60,
                     what="the history caught up")  # fmt: skip
    caught_up = {pair: backfilled(pair) - backfilled_before[pair] for pair in PAIRS}
    assert caught_up == history  # the start's catch-up counts every trade it recovered
    # The market wakes up: new trades are polled (and not counted as caught up).
    sim.resume()
    await eventually(lambda: len(sim.engine.trades) > history_total + 20, what="live trades")
    sim.pause()
    await sim.drained()
    total = len(sim.engine.trades)
    await eventually(lambda: count_rows(db, "trades") == total, what="every trade of the tape")
    await stop_daemon(daemon, running)
    assert {pair: backfilled(pair) - backfilled_before[pair] for pair in PAIRS} == history

    assert stored_tape(db) == engine_tape(sim)
    # It asked for large pages and took what came back: full pages at the simulator's cap,
    # about as few as the cap allows (one page per cap, less the trade each starts early).
    catch_up = [a for a in answers if a.ordering == "id" and a.limit == ASK]
    assert max(a.served for a in catch_up) == max_page
    assert all(a.served <= max_page for a in answers)
    least = sum(-(-n // (max_page - 1)) for n in history.values())
    assert least <= len(catch_up) <= least + 3 * len(PAIRS)

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
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from prometheus_client import REGISTRY

from recorder.daemon import Daemon
from recorder.exchange.paging import ASK
from recorder.sim.engine import Cancel, Event, NewOrder
from recorder.sim.server import SimSettings, Simulator, run_sim
from tests.test_daemon import (
    PAIRS,
    assert_book_at_now_is_the_engines,
    daemon_config,
    eventually,
    query,
    start_daemon,
    stop_daemon,
)

TRADES_PATH = "/api/v1/exchanges/"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def stored_tape(dsn: str) -> list[tuple[Any, ...]]:
    return query(dsn, "SELECT tid, pair, type, price, amount, ts FROM trades ORDER BY tid")


def utc(seconds: Decimal) -> datetime:
    """Unix seconds as the database returns them, exact to the microsecond."""
    micros = seconds * 10**6
    assert micros == int(micros)  # the simulator's times have six places at most
    return EPOCH + timedelta(microseconds=int(micros))


def engine_tape(sim: Simulator) -> list[tuple[Any, ...]]:
    """The engine's tape as the trades table must hold it."""
    return sorted((t.tid, t.pair, t.type, t.price, t.amount, utc(t.timestamp))
                  for t in sim.engine.trades)  # fmt: skip


# --- book events under every event name -------------------------------------------------------


def stored_events_by_session(dsn: str) -> dict[Any, dict[Any, tuple[Any, ...]]]:
    rows = query(dsn, "SELECT session_id, pair, oid, kind, ts, type, price, amount, "
                 "cancel_order_id FROM book_events")  # fmt: skip
    by_session: dict[Any, dict[Any, tuple[Any, ...]]] = {}
    for session_id, pair, oid, kind, *values in rows:
        by_session.setdefault(session_id, {})[(pair, oid, kind)] = tuple(values)
    return by_session


def sent_events(events: list[Event]) -> dict[Any, tuple[Any, ...]]:
    """The book_events rows `events` must give: (pair, oid, kind) -> the values sent."""
    return {
        (e.pair, e.oid, "cancel" if isinstance(e, Cancel) else "new"): (
            utc(e.date), e.type, e.price, e.amount,
            e.cancel_order_id if isinstance(e, Cancel) else None,
        )
        for e in events
    }  # fmt: skip


def sent_fills(events: list[Event]) -> dict[Any, tuple[Any, ...]]:
    """The book_fills rows `events` must give: (pair, tid) -> the values sent."""
    return {
        (t.pair, t.tid): (t.oid, t.o_id, t.type, t.price, t.amount)
        for e in events
        if isinstance(e, NewOrder)
        for t in e.trades
    }


@pytest.mark.parametrize("event_name", ["pair", "orderbook"])
async def test_book_events_under_any_event_name_are_stored_exactly_as_sent(
    event_name: str, db: str, tmp_path: Path
) -> None:
    settings = SimSettings(seed=13, pairs=PAIRS, rate_per_s=40, history_hours=0.2,
                           event_name=event_name, record_deliveries=True)  # fmt: skip
    async with run_sim(settings) as sim:
        assert sim.deliveries is not None
        daemon = Daemon(daemon_config(tmp_path, sim, db))
        running = await start_daemon(daemon)
        await eventually(lambda: query(db, "SELECT count(*) FROM book_events")[0][0] > 30,
                         what="events of the first connection")  # fmt: skip
        # A second connection: each one's events must be stored under its own session.
        await sim.drop_sockets()
        await eventually(lambda: query(db, "SELECT count(*) FROM stream_sessions")[0][0] == 2,
                         what="the second stream session")  # fmt: skip
        second = query(db, "SELECT max(connected_at) FROM stream_sessions")[0][0]
        await eventually(
            lambda: query(db, "SELECT count(*) FROM book_events e JOIN stream_sessions s "
                          "USING (session_id) WHERE s.connected_at = %s", second)[0][0] > 30,
            what="events of the second connection",
        )  # fmt: skip
        sim.pause()
        await sim.drained()
        connections = list(sim.deliveries.connections.values())
        sent = {key for c in connections for key in sent_events(c.events)}
        await eventually(
            lambda: sent <= {key for keys in stored_events_by_session(db).values() for key in keys},
            what="every event sent",
        )
        total = len(sim.engine.trades)
        await eventually(lambda: query(db, "SELECT count(*) FROM trades")[0][0] == total,
                         what="every trade of the tape")  # fmt: skip
        # One more reconnect on the quiet market: its resync snapshots meet no event in
        # flight, so the book rebuilt at the end must be the engine's, order by order.
        await sim.drop_sockets()
        await eventually(lambda: query(db, "SELECT count(*) FROM stream_sessions")[0][0] == 3,
                         what="the third stream session")  # fmt: skip
        third = query(db, "SELECT max(connected_at) FROM stream_sessions")[0][0]
        await eventually(
            lambda: query(db, "SELECT count(DISTINCT pair) FROM book_snapshots WHERE "
                          "reason = 'connect' AND taken_at >= %s", third)[0][0] == len(PAIRS),
            what="a resync snapshot of every pair after the last reconnect",
        )  # fmt: skip
        await stop_daemon(daemon, running)

        connections = list(sim.deliveries.connections.values())
        sessions = [row[0] for row in query(db, "SELECT session_id FROM stream_sessions "
                                            "ORDER BY connected_at")]  # fmt: skip
        assert len(sessions) == len(connections) == 3
        stored = stored_events_by_session(db)
        assert set(stored) <= set(sessions)
        for session_id, connection in zip(sessions, connections, strict=True):
            assert stored.get(session_id, {}) == sent_events(connection.events), (
                f"session {session_id} (connection {connection.sid})"
            )
        assert all(c.events for c in connections[:2])  # something was compared
        fills = query(db, "SELECT pair, tid, oid, o_id, type, price, amount FROM book_fills")
        expected_fills = sent_fills([e for c in connections for e in c.events])
        assert {(pair, tid): tuple(rest) for pair, tid, *rest in fills} == expected_fills
        assert expected_fills
        assert query(db, "SELECT count(*) FROM raw_messages")[0][0] == 0
        assert stored_tape(db) == engine_tape(sim)
        assert_book_at_now_is_the_engines(db, sim, PAIRS)


# --- trade catch-up whatever page the exchange serves -----------------------------------------


def backfilled(pair: str) -> float:
    value = REGISTRY.get_sample_value("recorder_trades_backfilled_total", {"pair": pair})
    return value or 0.0


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
    await eventually(lambda: query(db, "SELECT count(*) FROM trades")[0][0] == history_total,
                     timeout_s=60, what="the history caught up")  # fmt: skip
    caught_up = {pair: backfilled(pair) - backfilled_before[pair] for pair in PAIRS}
    assert caught_up == history  # the start's catch-up counts every trade it recovered
    # The market wakes up: new trades are polled (and not counted as caught up).
    sim.resume()
    await eventually(lambda: len(sim.engine.trades) > history_total + 20, what="live trades")
    sim.pause()
    await sim.drained()
    total = len(sim.engine.trades)
    await eventually(lambda: query(db, "SELECT count(*) FROM trades")[0][0] == total,
                     what="every trade of the tape")  # fmt: skip
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

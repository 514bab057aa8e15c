"""The chaos run (tests/harness/chaos.py) in CI: every fault kind at least once, nothing lost.

The run itself is real: the simulator over real sockets, the recorder as a real process
(SIGKILLed and restarted), a real PostgreSQL crashed and started again. Its verdict rests on
two things tested here first: the simulator's record of what each connection was sent is
what a client received, and the comparison notices a loss, an extra row, a changed value
and a hole in what a killed recorder committed. Last, the loss an overlapping chaos run
found (a SIGKILL during a database outage took the outage's events along) stays fixed.
"""

from __future__ import annotations

import asyncio
from contextlib import suppress
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import socketio  # type: ignore[import-untyped]

from recorder.book import Reading
from recorder.sim.deliveries import Garbage
from recorder.sim.engine import Cancel, Fill, NewOrder
from recorder.sim.server import SimSettings, run_sim
from tests.harness.chaos import (
    KINDS,
    QUICK,
    ChaosRun,
    ChaosSettings,
    SentTo,
    Stored,
    Truth,
    compare,
    plan_faults,
    recorder_for,
    run_chaos,
)
from tests.harness.deliveries import event_key, event_value
from tests.harness.postgres import EmbeddedPostgres
from tests.harness.waiting import eventually

# --- the simulator's delivery record ---------------------------------------------------------


async def test_the_delivery_record_is_what_the_client_received() -> None:
    settings = SimSettings(seed=2, pairs=("BTC_USD", "ETH_USD"), rate_per_s=200,
                           history_hours=0, record_deliveries=True,
                           cancel_id="cancel_order_id")  # fmt: skip
    async with run_sim(settings) as sim:
        assert sim.deliveries is not None
        received: list[tuple[str, Any]] = []
        client = socketio.AsyncClient(reconnection=False)

        @client.on("*")  # type: ignore[misc]
        async def on_any(event: str, *args: Any) -> None:
            payload = args[0] if len(args) == 1 else None
            oid = payload.get("oid") if isinstance(payload, dict) else None
            kind = "cancel" if isinstance(payload, dict) and payload.get("cancelled") else "new"
            received.append((event, (oid, kind) if isinstance(oid, int) else "garbage"))

        await client.connect(sim.base_url)
        await client.call("subscribe", "book_BTC_USD")  # not ETH_USD: nobody gets those
        await eventually(lambda: len(received) > 50, what="events received")
        await sim.burst(malformed=4, unknown=2)
        await eventually(lambda: [k for _, k in received].count("garbage") == 4 + 2,
                         what="the garbage received")  # fmt: skip
        after = len(received)
        await eventually(lambda: len(received) > after + 20, what="events after the garbage")
        await sim.drop_sockets()  # mid-flow: the record must end where the client's ends
        await eventually(lambda: not client.connected, what="the drop")
        await eventually(
            lambda: all(c.disconnected_at for c in sim.deliveries.connections.values()),
            what="the simulator's record of the drop",
        )  # fmt: skip

        (connection,) = sim.deliveries.connections.values()
        assert connection.disconnected_at is not None
        record = [
            (x.event, "garbage")
            if isinstance(x, Garbage)
            else (f"book_{x.pair}", event_key(x, "cancel_order_id")[1:])
            for x in connection.items
        ]
        assert len(record) > 50
        assert record == received
        assert any(key[1] == "cancel" for _, key in record)
        assert connection.garbage == 4 + 2
        assert sim.deliveries.undelivered
        assert {e.pair for e in sim.deliveries.undelivered} >= {"ETH_USD"}
        await client.disconnect()


# --- the comparison ---------------------------------------------------------------------------

T0 = Decimal("1764000000.5")


def new(oid: int, amount: str = "1", tid: int | None = None) -> NewOrder:
    fills = ()
    if tid is not None:
        fills = (Fill(tid, "BTC_USD", "sell", Decimal(100), Decimal(1), oid - 1, oid, T0),)
    return NewOrder("BTC_USD", T0, oid, "buy", Decimal(100), Decimal(amount), fills)


def stored_of(
    events: list[NewOrder | Cancel], cancel_id: Reading = "oid", **changes: Any
) -> Stored:
    fills = {
        (t.pair, t.tid): (t.oid, t.o_id, t.type, t.price, t.amount)
        for e in events
        if isinstance(e, NewOrder)
        for t in e.trades
    }
    values = {
        "trades": {}, "trade_rows": 0,
        "events": {event_key(e, cancel_id): event_value(e, cancel_id) for e in events},
        "events_duplicated": 0, "fills": fills, "fills_duplicated": 0, "candles": {},
        "books": {}, "raw": {}, "sessions": 1, "open_sessions": 0,
    }  # fmt: skip
    values.update(changes)
    return Stored(**values)


def truth_of(*connections: SentTo, cancel_id: Reading = "oid") -> Truth:
    return Truth({}, list(connections), 0, {}, {}, {}, cancel_id)


def test_a_killed_recorder_may_miss_only_what_came_after_its_last_commit() -> None:
    sent = [new(1), new(3, tid=2), Garbage("book_BTC_USD"), new(4), new(5)]
    killed = SentTo("a", sent, killed=True)
    result = compare(truth_of(killed), stored_of(sent[:2]))
    events = result.category("book events")
    assert (events.expected, events.lost, events.lost_to_kill) == (2, 0, 2)
    assert result.tail_by_sid == {"a": 2}
    assert result.ok

    # A hole before a stored event is a loss, SIGKILL or not.
    hole = compare(truth_of(killed), stored_of([sent[0], sent[3]]))
    assert hole.category("book events").lost == 1
    assert hole.category("book fills").lost == 1
    assert not hole.ok


def test_a_connection_that_was_not_killed_must_have_everything_stored() -> None:
    sent = [new(1), new(2), Cancel("BTC_USD", T0, 1, 7, Decimal(100), "buy", Decimal(1))]
    result = compare(truth_of(SentTo("a", sent, killed=False)), stored_of(sent[:2]))
    assert result.category("book events").lost == 1
    assert not result.ok


def test_a_cancel_is_compared_by_the_ids_the_wire_carried() -> None:
    # Order 1 cancelled by cancel 7: under cancel_order_id the row's oid is 7.
    sent = [new(1), Cancel("BTC_USD", T0, 1, 7, Decimal(100), "buy", Decimal(1))]
    truth = truth_of(SentTo("a", sent, killed=False), cancel_id="cancel_order_id")
    stored = stored_of(sent, "cancel_order_id")
    assert ("BTC_USD", 7, "cancel") in stored.events
    assert stored.events["BTC_USD", 7, "cancel"][-1] == 1
    assert compare(truth, stored).ok
    read_as_oid = compare(truth, stored_of(sent, "oid")).category("book events")
    assert (read_as_oid.lost, read_as_oid.extra) == (1, 1)


def test_extra_changed_and_duplicated_rows_fail_the_comparison() -> None:
    sent = [new(1), new(2)]
    truth = truth_of(SentTo("a", sent, killed=False))
    assert compare(truth, stored_of(sent)).ok
    extra = stored_of([*sent, new(9)])
    assert compare(truth, extra).category("book events").extra == 1
    changed = stored_of([new(1), new(2, amount="1.00000001")])
    assert compare(truth, changed).category("book events").different == 1
    same_number = stored_of([new(1), new(2, amount="1.000")])  # 1 == 1.000: exact, not text
    assert compare(truth, same_number).ok
    twice = stored_of(sent, events_duplicated=1)
    assert not compare(truth, twice).ok
    bucket = datetime(2026, 1, 1, tzinfo=UTC)
    candle = {("BTC_USD", "1", bucket): (Decimal(1),) * 5}
    truth.candles = candle
    assert compare(truth, stored_of(sent)).category("candles").lost == 1
    assert compare(truth, stored_of(sent, candles=candle)).ok


def test_a_plan_is_replayed_by_its_seed_and_holds_every_kind() -> None:
    settings = ChaosSettings(seconds=40, seed=3, pace=QUICK)
    plan = plan_faults(settings)
    assert plan == plan_faults(settings)
    assert {f.kind for f in plan[: len(KINDS)]} == set(KINDS)
    assert plan != plan_faults(ChaosSettings(seconds=40, seed=4, pace=QUICK))


# --- the run ----------------------------------------------------------------------------------


async def test_chaos_run_loses_nothing(tmp_path: Path) -> None:
    """Every fault kind, seeded; afterwards the database equals the simulator's record.

    The simulator names the cancelled order by `cancel_order_id` here (the daemon's other
    tests run with the default `oid`), so the recorder must find that out under chaos too.
    """
    settings = ChaosSettings(seconds=40, seed=3, pace=QUICK, catch_up_timeout_s=60,
                             cancel_id="cancel_order_id")  # fmt: skip
    report = await run_chaos(settings, tmp_path)
    print(report.text())
    assert {f.kind for f in report.faults if f.at_s is not None} == set(KINDS)
    assert report.exit_code == 0
    assert report.comparison.ok, report.text()
    for name in ("trades", "book events", "book fills", "candles", "book at end (orders)",
                 "raw_messages (socket)", "raw_messages (rest)"):  # fmt: skip
        assert report.comparison.category(name).expected > 0, name
    assert report.recorder_starts >= 2


async def test_a_recorder_killed_while_the_database_is_down_loses_nothing_it_received(
    tmp_path: Path,
) -> None:
    """SIGKILL during a database outage, once the recorder had time to keep what it got.

    During an outage the writer spools what it receives every flush interval instead of
    holding it in memory, so all of it survives a kill.
    """
    settings = ChaosSettings(seed=5, history_hours=0.1, catch_up_timeout_s=60)
    chaos = ChaosRun(settings, tmp_path)
    pg = EmbeddedPostgres("recorder-chaos-pg-")
    try:
        sim_settings = SimSettings(seed=5, pairs=settings.pairs, rate_per_s=30,
                                   history_hours=0.1, record_deliveries=True)  # fmt: skip
        async with run_sim(sim_settings) as sim:
            assert sim.deliveries is not None
            deliveries = sim.deliveries

            def sent_to_recorder() -> int:
                return sum(len(c.events) for c in deliveries.open())

            recorder = recorder_for(tmp_path, sim.base_url, pg.dsn, settings)
            try:
                recorder.start()
                await recorder.wait_until(
                    lambda: sent_to_recorder() >= 30, timeout_s=60, what="events sent to it"
                )
                await asyncio.to_thread(pg.crash)
                down = sent_to_recorder()
                await recorder.wait_until(
                    lambda: sent_to_recorder() >= down + 90, what="events while the db is down"
                )
                sim.pause()
                await sim.drained()

                async def only_on_disk() -> bool:
                    """All rows not committed are in the spool: none only in memory."""
                    values = await recorder.metrics()
                    spooled = values.get("recorder_spool_rows", 0)
                    return spooled > 0 and values.get("recorder_write_buffer_rows") == spooled

                # Before the fix this never held, and the kill below lost the outage's events;
                # if it does not hold in time, the comparison at the end says what was lost.
                with suppress(AssertionError):
                    await eventually(only_on_disk, timeout_s=15, what="everything spooled")
                chaos.killed_sids |= {c.sid for c in deliveries.open()}
                recorder.kill()
                await asyncio.to_thread(pg.restart)
                sim.resume()
                recorder.start()
                comparison, exit_code, _ = await chaos.finish(sim, pg, recorder)
            finally:
                recorder.kill_if_running()
    finally:
        pg.cleanup()
    assert exit_code == 0
    assert comparison.killed_connections == 1
    events = comparison.category("book events")
    assert events.expected > 50
    assert (events.lost, events.lost_to_kill) == (0, 0)
    assert comparison.ok

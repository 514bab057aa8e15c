"""Several `recorder run` processes on one database share the pairs (recorder/leases.py).

Real processes, a real PostgreSQL, the simulator over real sockets, real SIGKILL, SIGSTOP and
SIGCONT. After each scenario: every pair leased to exactly one live recorder and subscribed
by exactly one connection at the simulator, the stored trade tape exactly the simulator's,
and the handover visible as an ownership gap (`lease_gaps`, `recorder coverage`).
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from recorder.research.coverage import format_report, load_report
from recorder.sim.server import SimSettings, Simulator, run_sim
from tests.harness.daemon import engine_tape, stored_tape
from tests.harness.leases import (
    LEASE_TTL_S,
    held_by,
    lease_gaps,
    live_leases,
    recorder_process,
    shared_once,
    subscribers,
)
from tests.harness.postgres import EmbeddedPostgres, query
from tests.harness.recorder_process import RecorderProcess
from tests.harness.waiting import eventually

PAIRS = ("BTC_USD", "ETH_USD", "LTC_USD", "XRP_USD")
SETTLE_S = 60.0
"""A generous bound for a start plus a few lease rounds on a loaded machine."""


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with run_sim(SimSettings(seed=19, pairs=PAIRS, rate_per_s=12, history_hours=0.05)) as s:
        yield s


@pytest.fixture
def recorders() -> Iterator[list[RecorderProcess]]:
    started: list[RecorderProcess] = []
    yield started
    for recorder in started:
        if recorder.running:
            os.kill(recorder.pid, signal.SIGCONT)  # a stopped one must be able to die
        recorder.kill_if_running()


def start(
    recorders: list[RecorderProcess], tmp_path: Path, sim: Simulator, dsn: str, **recorder_keys: Any
) -> RecorderProcess:
    recorder = recorder_process(tmp_path, f"r{len(recorders) + 1}", sim, dsn, **recorder_keys)
    recorders.append(recorder)
    recorder.start()
    return recorder


async def settled(dsn: str, sim: Simulator, recorders: list[RecorderProcess], what: str) -> None:
    await eventually(lambda: shared_once(dsn, sim, PAIRS, recorders), timeout_s=SETTLE_S,
                     what=what, ignoring=(psycopg.errors.UndefinedTable,))  # fmt: skip


async def tape_complete(dsn: str, sim: Simulator, recorders: list[RecorderProcess]) -> None:
    """Stop the market, then every trade the simulator made is stored, once."""
    sim.pause()
    await sim.drained()
    truth = engine_tape(sim)
    await eventually(lambda: stored_tape(dsn) == truth, timeout_s=SETTLE_S,
                     what="the stored tape equal to the simulator's")  # fmt: skip


def unclosed_sessions_by_pid(dsn: str) -> dict[int, set[str]]:
    """The statuses `stream_coverage` gives each recorder process's sessions still open."""
    found: dict[int, set[str]] = {}
    for pid, status in query(dsn, "SELECT m.pid, c.status FROM stream_coverage c"
                             " JOIN recorder_members m ON m.run_id = c.run_id"
                             " WHERE c.status <> 'closed'"):  # fmt: skip
        found.setdefault(pid, set()).add(status)
    return found


RECORDING_ON = "leases past their expiry while alone on the database: recording on"


async def stop_all(recorders: list[RecorderProcess]) -> None:
    codes = await asyncio.gather(*(asyncio.to_thread(r.stop) for r in recorders if r.running))
    assert all(code == 0 for code in codes), codes


async def test_two_then_three_recorders_share_the_pairs_and_a_killed_ones_are_taken_over(
    sim: Simulator, db: str, tmp_path: Path, recorders: list[RecorderProcess]
) -> None:
    first = start(recorders, tmp_path, sim, db)
    await settled(db, sim, recorders, "one recorder holding every pair")
    assert held_by(db, first.pid) == set(PAIRS)

    start(recorders, tmp_path, sim, db)
    await settled(db, sim, recorders, "two recorders sharing the pairs 2 and 2")
    start(recorders, tmp_path, sim, db)
    await settled(db, sim, recorders, "three recorders sharing the pairs 2, 1 and 1")
    assert all(held_by(db, r.pid) for r in recorders), "every recorder records something"
    # Each of them live, not only the one that started last (migrations/0017).
    assert unclosed_sessions_by_pid(db) == {r.pid: {"open"} for r in recorders}

    victim = max(recorders, key=lambda r: len(held_by(db, r.pid)))
    orphaned = held_by(db, victim.pid)
    killed_at = time.monotonic()
    [(killed_db_at,)] = query(db, "SELECT now()")
    await asyncio.to_thread(victim.kill)
    await settled(db, sim, recorders, "the killed recorder's pairs taken over")
    takeover_s = time.monotonic() - killed_at
    assert takeover_s < 3 * LEASE_TTL_S + 5, takeover_s
    # A recorder of the same host sees the pid is gone: taken over at its next round, not
    # once the lease expires (the hung recorder's test takes the expiry path).
    retaken = query(db, "SELECT resource, min(acquired_at) FROM lease_history"
                    " WHERE acquired_at > %s GROUP BY resource", killed_db_at)  # fmt: skip
    assert {r for r, _ in retaken} >= orphaned
    assert all((at - killed_db_at).total_seconds() < LEASE_TTL_S for _, at in retaken), retaken

    await tape_complete(db, sim, recorders)
    # The gap runs from the killed one's last renewal to the takeover: the kill inside it.
    around_kill = {r for r, begin, end in lease_gaps(db) if begin <= killed_db_at < end}
    assert orphaned <= around_kill, "each takeover shows as an ownership gap"
    with psycopg.connect(db) as conn:
        report = load_report(conn)
    for pair in report.pairs:
        if pair.pair in orphaned:
            assert any(begin <= killed_db_at < end for begin, end in pair.ownerless), pair
            assert {o.pid for o in pair.owners} >= {victim.pid}
    assert "no owner" in format_report(report)
    taken = query(db, "SELECT resource FROM lease_history WHERE reason = 'expired'")
    assert orphaned <= {r for (r,) in taken}
    statuses = unclosed_sessions_by_pid(db)
    assert statuses.pop(victim.pid) == {"unclosed"}, "the killed one's sessions end"
    assert statuses == {r.pid: {"open"} for r in recorders if r is not victim}
    await stop_all(recorders)
    assert live_leases(db) == {}, "recorders that stop give their leases up"


async def test_a_hung_recorder_loses_its_pairs_and_stops_recording_them_when_it_wakes(
    sim: Simulator, db: str, tmp_path: Path, recorders: list[RecorderProcess]
) -> None:
    hung = start(recorders, tmp_path, sim, db)
    other = start(recorders, tmp_path, sim, db)
    await settled(db, sim, recorders, "two recorders sharing the pairs")
    hung_pairs = held_by(db, hung.pid)

    os.kill(hung.pid, signal.SIGSTOP)
    try:
        await eventually(lambda: held_by(db, other.pid) == set(PAIRS), timeout_s=SETTLE_S,
                         what="the other recorder holding every pair")  # fmt: skip
        # The hung one's socket is still in the rooms (the simulator has not noticed yet):
        # that is the takeover window, where both connections are subscribed.
    finally:
        os.kill(hung.pid, signal.SIGCONT)

    # Awake, it finds its leases gone: it stops recording them, then shares again.
    await hung.wait_until(
        lambda: any(
            e.get("event", "").startswith("leases")
            and "resources" in e
            and set(e["resources"]) >= hung_pairs
            and e.get("level") in ("warning", "error")
            for e in hung.log_entries()
        ),
        timeout_s=SETTLE_S,
        what="the woken recorder saying its leases were lost",
    )
    await settled(db, sim, recorders, "the two sharing again, each pair subscribed once")
    assert all(n == 1 for n in subscribers(sim, PAIRS).values())

    await tape_complete(db, sim, recorders)
    assert hung_pairs <= {resource for resource, _, _ in lease_gaps(db)}
    await stop_all(recorders)


async def test_recorders_that_lose_the_database_stop_recording_and_share_again_after(
    sim: Simulator, own_pg: EmbeddedPostgres, tmp_path: Path, recorders: list[RecorderProcess]
) -> None:
    dsn = own_pg.dsn
    start(recorders, tmp_path, sim, dsn)
    start(recorders, tmp_path, sim, dsn)
    await settled(dsn, sim, recorders, "two recorders sharing the pairs")

    await asyncio.to_thread(own_pg.crash)
    try:
        # Unable to renew, each stops recording its pairs once its leases would have
        # expired: nothing is subscribed any more, so nobody records a pair it may not own.
        await eventually(lambda: not any(subscribers(sim, PAIRS).values()), timeout_s=SETTLE_S,
                         what="every recorder unsubscribed while the database is down")  # fmt: skip
        for recorder in recorders:
            assert recorder.running
            assert any(e.get("event", "").startswith("leases not renewed in time")
                       for e in recorder.log_entries()), recorder.log_tail()  # fmt: skip
    finally:
        await asyncio.to_thread(own_pg.restart)

    await settled(dsn, sim, recorders, "the two sharing again once the database is back")
    await tape_complete(dsn, sim, recorders)
    await stop_all(recorders)


async def test_a_recorder_restarted_after_a_crash_records_every_pair_at_once(
    sim: Simulator, db: str, tmp_path: Path, recorders: list[RecorderProcess]
) -> None:
    recorder = start(recorders, tmp_path, sim, db)
    await settled(db, sim, recorders, "one recorder holding every pair")
    await asyncio.to_thread(recorder.kill)
    assert sorted(live_leases(db)) == sorted(PAIRS), "the dead run's leases have not expired"

    recorder.start()
    # Its first round, before it says it records, already holds every pair: the run that
    # held them was of this host and its process is gone, so nothing waits for an expiry.
    started = await recorder.wait_until(
        lambda: [e for e in recorder.log_entries(this_start=True) if e.get("event") == "recording"],
        timeout_s=SETTLE_S, what="the restarted recorder recording",
    )  # fmt: skip
    assert sorted(started[0]["pairs"]) == sorted(PAIRS)
    await settled(db, sim, recorders, "the restarted recorder holding every pair")
    await tape_complete(db, sim, recorders)
    await stop_all(recorders)


async def test_a_recorder_alone_records_on_through_a_database_outage_longer_than_its_lease(
    sim: Simulator, own_pg: EmbeddedPostgres, tmp_path: Path, recorders: list[RecorderProcess]
) -> None:
    dsn = own_pg.dsn
    recorder = start(recorders, tmp_path, sim, dsn)
    await settled(dsn, sim, recorders, "one recorder holding every pair")

    await asyncio.to_thread(own_pg.crash)

    def past_its_leases_and_still_subscribed() -> bool:
        assert all(n == 1 for n in subscribers(sim, PAIRS).values()), recorder.log_tail()
        return any(e.get("event") == RECORDING_ON for e in recorder.log_entries(this_start=True))

    try:
        # Nobody can take its pairs over meanwhile: it keeps them subscribed (its rows go to
        # the spool) through its leases' expiry, where recorders that share stop.
        await eventually(past_its_leases_and_still_subscribed, timeout_s=SETTLE_S,
                         what="the leases' expiry passed, the pairs still subscribed")  # fmt: skip
    finally:
        await asyncio.to_thread(own_pg.restart)

    await tape_complete(dsn, sim, recorders)
    # Its leases were renewed once the database was back, never given up or taken over.
    history = query(dsn, "SELECT resource, released_at FROM lease_history ORDER BY resource")
    assert history == [(pair, None) for pair in sorted(PAIRS)]
    assert query(dsn, "SELECT count(*) FROM stream_gaps")[0][0] == 0
    await stop_all(recorders)


async def test_with_redundancy_two_every_pair_is_recorded_by_both_and_stored_once(
    sim: Simulator, db: str, tmp_path: Path, recorders: list[RecorderProcess]
) -> None:
    both = [start(recorders, tmp_path, sim, db, redundancy=2) for _ in range(2)]
    pids = sorted(r.pid for r in both)

    def doubled() -> bool:
        leases = live_leases(db)
        return (
            sorted(leases) == sorted(PAIRS)
            and all(sorted(owners) == pids for owners in leases.values())
            and all(n == 2 for n in subscribers(sim, PAIRS).values())
        )

    await eventually(doubled, timeout_s=SETTLE_S, what="every pair held and subscribed by both",
                     ignoring=(psycopg.errors.UndefinedTable,))  # fmt: skip
    await tape_complete(db, sim, recorders)
    await stop_all(recorders)

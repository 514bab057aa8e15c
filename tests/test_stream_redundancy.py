"""The daemon's book stream over two connections, against the simulator: a drop of one
connection loses nothing and needs no resync; a silent channel is found from the trade tape
and repaired. What was stored is compared with exactly what the simulator sent each
connection (`sim.deliveries`)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from recorder.daemon import Daemon
from recorder.sim.server import Simulator
from tests.harness.daemon import (
    PAIRS,
    assert_book_at_now_is_the_engines,
    daemon_config,
    engine_tape,
    resynced_since,
    simulated_exchange,
    start_daemon,
    stop_daemon,
    stored_tape,
)
from tests.harness.deliveries import (
    assert_stored_as_delivered,
    delivered_events,
    every_delivered_event_stored,
)
from tests.harness.metrics import sample
from tests.harness.postgres import count_rows, query
from tests.harness.waiting import eventually


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with simulated_exchange("first-reading", seed=17, rate_per_s=40,
                                  history_hours=0.2) as simulator:  # fmt: skip
        yield simulator


def both_connected(sim: Simulator) -> bool:
    return len(sim.open_sockets()) == 2 and all(
        len(sim.subscribers(f"book_{pair}")) == 2 for pair in PAIRS
    )


async def quiet_and_stop(sim: Simulator, db: str, daemon: Daemon, running: object) -> None:
    """Pause the market, wait until everything sent and traded is stored, stop (exit 0)."""
    sim.pause()
    await sim.drained()
    await eventually(lambda: every_delivered_event_stored(db, sim), what="every event stored")
    tape = engine_tape(sim)
    await eventually(lambda: stored_tape(db) == tape, what="the whole tape")
    await stop_daemon(daemon, running)  # type: ignore[arg-type]


async def test_a_drop_of_one_connection_loses_no_event_and_needs_no_resync(
    sim: Simulator, db: str, tmp_path: Path
) -> None:
    daemon = Daemon(daemon_config(tmp_path, sim, db, stream_connections=2))
    running = await start_daemon(daemon)
    await eventually(lambda: both_connected(sim), what="two connections subscribed")
    await eventually(lambda: count_rows(db, "book_events") > 20, what="live events")
    # The first connection's resync snapshots (each waits for its pair's subscription).
    start = datetime.min.replace(tzinfo=UTC)
    await eventually(lambda: resynced_since(db, start) == len(PAIRS), what="the first resync")
    resyncs = sample("recorder_book_resyncs_total", pair=PAIRS[0], reason="connect")
    drifts = sample("recorder_book_drift_total", pair=PAIRS[0])
    assert sim.deliveries is not None
    before_start = len(sim.deliveries.undelivered)  # made before the recorder subscribed

    first_drop_at = datetime.now(UTC)
    for _ in range(3):
        dropped = sim.oldest_socket()
        assert await sim.drop_socket(dropped)
        # The market goes on while that connection reconnects; the other one hears it.
        sent = delivered_events(sim)
        await eventually(lambda: both_connected(sim), what="the dropped connection back")
        await eventually(lambda s=sent: delivered_events(sim) > s + 20, what="events after")

    await quiet_and_stop(sim, db, daemon, running)
    # No event was made while no connection listened...
    assert len(sim.deliveries.undelivered) == before_start
    # ...and every one is stored once, exactly as sent, under a session that was sent it.
    compared = assert_stored_as_delivered(db, sim)
    assert compared.connections == compared.sessions == 2 + 3
    # Nothing needed resyncing: no snapshot for a reconnect, the books kept from events.
    assert sample("recorder_book_resyncs_total", pair=PAIRS[0], reason="connect") == resyncs
    assert resynced_since(db, first_drop_at) == 0
    assert sample("recorder_book_drift_total", pair=PAIRS[0]) == drifts
    assert_book_at_now_is_the_engines(db, sim, PAIRS)
    # Coverage has no gap: a connection was up all along.
    assert query(db, "SELECT count(*) FROM stream_gaps") == [(0,)]


async def test_a_silent_channel_is_found_from_the_tape_and_repaired(
    sim: Simulator, db: str, tmp_path: Path
) -> None:
    config = daemon_config(tmp_path, sim, db, stream_connections=2)
    config = config.model_copy(
        update={"exchange": config.exchange.model_copy(update={"stream_silence_s": 2.0})}
    )
    daemon = Daemon(config)
    running = await start_daemon(daemon)
    await eventually(lambda: both_connected(sim), what="two connections subscribed")
    pair = PAIRS[0]
    deaf = sim.oldest_socket()
    assert deaf is not None
    # The exchange stops serving one pair to one connection and ignores its resubscription:
    # only a new connection is served again.
    assert sim.deliveries is not None
    before_start = len(sim.deliveries.undelivered)
    await sim.silence(deaf, pair, ignore_resubscribe=True)

    def silences(action: str) -> float:
        return sum(
            sample("recorder_stream_silences_total", connection=c, pair=pair, action=action)
            for c in "01"
        )

    await eventually(lambda: silences("resubscribe") >= 1, timeout_s=60, what="resubscribed")
    await eventually(lambda: silences("reconnect") >= 1, timeout_s=60, what="reconnected")
    await eventually(lambda: deaf not in sim.open_sockets(), what="the silent socket closed")
    await eventually(lambda: both_connected(sim), what="a new connection in its place")
    # The session's end is committed by the writer, maybe after the new connection is up.
    silent_ended = "SELECT reason FROM stream_sessions WHERE reason LIKE 'silent%'"
    await eventually(lambda: query(db, silent_ended), what="the silent session's end stored")
    assert query(db, silent_ended) == [(f"silent on {pair}",)]

    await quiet_and_stop(sim, db, daemon, running)
    # The other connection brought every event meanwhile: none lost.
    assert_stored_as_delivered(db, sim)
    assert len(sim.deliveries.undelivered) == before_start

"""`recorder run` against an exchange whose socket.io is a real Node socket.io 2.x server.

The simulator serves REST and makes the market; a Node socket.io 2.5 server (`server.js`
as a relay, its socket.io-client 4 subscribed to the simulator) serves the book stream, as
an exchange built on "the latest version of socket.io" in 2017 would. The daemon, left at
`socketio_protocol = "auto"`, must find the generation itself and record exactly what the
simulator made: every event the relay was sent, every trade of the tape, and `book_at` the
engine's own book.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from prometheus_client import REGISTRY

from recorder.config import Config, load_config
from recorder.daemon import Daemon
from recorder.sim.server import SimSettings, Simulator, run_sim
from tests.harness.config import write_config
from tests.harness.daemon import PAIRS, assert_book_at_now_is_the_engines, engine_tape
from tests.harness.deliveries import event_rows, fill_rows
from tests.harness.postgres import count_rows, query
from tests.harness.waiting import eventually
from tests.node.harness import node_socketio_server

RELAY_HEARTBEAT = {"pingInterval": 500, "pingTimeout": 2000}
"""Short enough that the run spans many of the recorder's heartbeats."""


def config_for(tmp_path: Path, sim: Simulator, socket_url: str, dsn: str) -> Config:
    """REST from the simulator, socket.io from `socket_url`, the generation left to find."""
    path = write_config(
        tmp_path / "recorder.toml",
        base_url=sim.base_url,
        dsn=dsn,
        data_dir=tmp_path / "data",
        exchange={"socket_url": socket_url, "socketio_protocol": "auto"},
        recorder={
            "pairs": list(PAIRS),
            "snapshot_interval_s": 30,
            "trades_poll_interval_s": 0.3,
            "candles_poll_interval_s": 5,
            "candle_types": ["1"],
        },
    )
    return load_config(path)


async def test_recorder_run_records_a_node_socketio_2_exchange_exactly(
    db: str, tmp_path: Path
) -> None:
    settings = SimSettings(
        seed=21, pairs=PAIRS, rate_per_s=40, history_hours=0.2, record_deliveries=True
    )
    async with (
        run_sim(settings) as sim,
        node_socketio_server(
            "2", upstream=sim.base_url, pingInterval=500, pingTimeout=2000
        ) as relay,
    ):
        assert sim.deliveries is not None
        daemon = Daemon(config_for(tmp_path, sim, relay.url, db))
        running = asyncio.create_task(daemon.run())
        try:
            await asyncio.wait_for(daemon.ready.wait(), 60)
            await eventually(lambda: count_rows(db, "book_events") >= 300, timeout_s=60,
                             what="300 events recorded through the Node server")  # fmt: skip
            # Quiet the market, and wait until the recorder has everything it was sent.
            sim.pause()
            await sim.drained()
            (relayed,) = sim.deliveries.connections.values()  # the relay's own subscription
            sent = event_rows(relayed.events, sim.settings.cancel_id)
            assert len(sent) == len(relayed.events) >= 300
            await eventually(lambda: count_rows(db, "book_events") >= len(sent), timeout_s=30,
                             what="every relayed event stored")  # fmt: skip
            tape = engine_tape(sim)
            await eventually(lambda: count_rows(db, "trades") == len(tape), timeout_s=60,
                             what="the whole trade tape")  # fmt: skip
            assert REGISTRY.get_sample_value("recorder_stream_info", {"protocol": "2"}) == 1
        finally:
            daemon.request_stop("SIGTERM")
            assert await asyncio.wait_for(running, 60) == 0

        # Every event the Node server was given, stored once, every value exact.
        stored = query(db, "SELECT pair, oid, kind, ts, type, price, amount, cancel_order_id "
                       "FROM book_events")  # fmt: skip
        assert {(pair, oid, kind): tuple(rest) for pair, oid, kind, *rest in stored} == sent
        # Their fills, exact.
        fills = query(db, "SELECT pair, tid, oid, o_id, type, price, amount FROM book_fills")
        expected_fills = fill_rows(relayed.events)
        assert {(pair, tid): tuple(rest) for pair, tid, *rest in fills} == expected_fills
        assert expected_fills
        # The tape, exact.
        trades = query(db, "SELECT tid, pair, type, price, amount FROM trades ORDER BY tid")
        assert trades == tape
        # The book rebuilt from snapshot and events is the engine's.
        assert_book_at_now_is_the_engines(db, sim, PAIRS)
        # Two sessions (the redundant connections), over the Node server, closed by the stop;
        # nothing kept raw.
        sessions = query(db, "SELECT disconnected_at IS NOT NULL FROM stream_sessions")
        assert sessions == [(True,), (True,)]
        assert count_rows(db, "raw_messages") == 0
        assert (await relay.state())["relayed"] >= len(sent)

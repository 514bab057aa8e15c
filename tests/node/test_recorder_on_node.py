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
import socket
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path
from typing import Any

import psycopg
from prometheus_client import REGISTRY
from psycopg import sql

from recorder.config import Config, load_config
from recorder.daemon import Daemon
from recorder.sim.engine import Cancel, Event, NewOrder
from recorder.sim.server import SimSettings, Simulator, run_sim
from tests.node.harness import eventually, node_socketio_server
from tests.test_daemon import PAIRS, assert_book_at_now_is_the_engines

RELAY_HEARTBEAT = {"pingInterval": 500, "pingTimeout": 2000}
"""Short enough that the run spans many of the recorder's heartbeats."""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def config_for(tmp_path: Path, sim: Simulator, socket_url: str, dsn: str) -> Config:
    path = tmp_path / "recorder.toml"
    path.write_text(
        "\n".join(
            [
                "[exchange]",
                f'base_url = "{sim.base_url}"',
                f'socket_url = "{socket_url}"',
                'socketio_protocol = "auto"',
                "[database]",
                f'dsn = "{dsn}"',
                "[recorder]",
                f'data_dir = "{tmp_path / "data"}"',
                f"pairs = {list(PAIRS)!r}".replace("'", '"'),
                "snapshot_interval_s = 30",
                "trades_poll_interval_s = 0.3",
                "candles_poll_interval_s = 5",
                'candle_types = ["1"]',
                "[metrics]",
                f'listen = "127.0.0.1:{free_port()}"',
            ]
        )
        + "\n"
    )
    return load_config(path)


def query(dsn: str, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    try:
        with psycopg.connect(dsn) as conn:
            return conn.execute(sql.encode(), params or None).fetchall()
    except psycopg.errors.UndefinedTable:  # not migrated yet
        return []


def count(dsn: str, table: str) -> int:
    statement = sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))
    try:
        with psycopg.connect(dsn) as conn:
            row = conn.execute(statement).fetchone()
    except psycopg.errors.UndefinedTable:  # not migrated yet
        return 0
    return int(row[0]) if row else 0


def timestamp_of(date: Decimal) -> datetime:
    micros = (date * 1_000_000).to_integral_value(rounding=ROUND_HALF_EVEN)
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=int(micros))


def event_row(event: Event) -> tuple[Any, ...]:
    kind = "cancel" if isinstance(event, Cancel) else "new"
    cancel_id = event.cancel_order_id if isinstance(event, Cancel) else None
    return (event.pair, event.oid, kind, timestamp_of(event.date), event.type, event.price,
            event.amount, cancel_id)  # fmt: skip


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
            await eventually(lambda: count(db, "book_events") >= 300, timeout_s=60,
                             what="300 events recorded through the Node server")  # fmt: skip
            # Quiet the market, and wait until the recorder has everything it was sent.
            sim.pause()
            await sim.drained()
            (relayed,) = sim.deliveries.connections.values()  # the relay's own subscription
            sent = {(e.pair, e.oid, "cancel" if isinstance(e, Cancel) else "new"): e
                    for e in relayed.events}  # fmt: skip
            assert len(sent) == len(relayed.events) >= 300
            await eventually(lambda: count(db, "book_events") == len(sent), timeout_s=30,
                             what="every relayed event stored")  # fmt: skip
            tape = sorted((f.tid, f.pair, f.type, f.price, f.amount) for f in sim.engine.trades)
            await eventually(lambda: count(db, "trades") == len(tape), timeout_s=60,
                             what="the whole trade tape")  # fmt: skip
            assert REGISTRY.get_sample_value("recorder_stream_info", {"protocol": "2"}) == 1
        finally:
            daemon.request_stop("SIGTERM")
            assert await asyncio.wait_for(running, 60) == 0

        # Every event the Node server was given, stored once, every value exact.
        stored = query(db, "SELECT pair, oid, kind, ts, type, price, amount, cancel_order_id "
                       "FROM book_events ORDER BY pair, oid, kind")  # fmt: skip
        assert stored == sorted(event_row(e) for e in sent.values())
        # Their fills, exact.
        fills = query(db, "SELECT pair, tid, oid, o_id, type, price, amount FROM book_fills "
                      "ORDER BY tid")  # fmt: skip
        assert fills == sorted(
            ((t.pair, t.tid, t.oid, t.o_id, t.type, t.price, t.amount)
             for e in sent.values() if isinstance(e, NewOrder) for t in e.trades),
            key=lambda row: row[1],
        )  # fmt: skip
        assert fills
        # The tape, exact.
        trades = query(db, "SELECT tid, pair, type, price, amount FROM trades ORDER BY tid")
        assert trades == tape
        # The book rebuilt from snapshot and events is the engine's.
        assert_book_at_now_is_the_engines(db, sim, PAIRS)
        # One session, over the Node server, closed by the stop; nothing kept raw.
        sessions = query(db, "SELECT disconnected_at IS NOT NULL FROM stream_sessions")
        assert sessions == [(True,)]
        assert count(db, "raw_messages") == 0
        assert (await relay.state())["relayed"] >= len(sent)

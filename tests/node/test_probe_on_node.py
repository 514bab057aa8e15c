"""`recorder probe` against an exchange whose socket.io is a real Node socket.io 2.x server.

As in `test_recorder_on_node.py`: the simulator serves REST and makes the market, a Node
socket.io 2.5 server relays its book stream. The probe, left at `socketio_protocol =
"auto"`, must tell the generation as the recorder's own detection does, connect with it,
and report exactly what the relay sent it.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from recorder.probe import probe
from recorder.sim.server import SimSettings, run_sim
from tests.harness.waiting import eventually
from tests.node.harness import NodeServer, node_socketio_server
from tests.probing import (
    EVENTS_HEARD,
    PAIRS,
    WINDOW_S,
    config_for,
    counts_per_pair,
)

HEARTBEAT = {"pingInterval": 500, "pingTimeout": 2000}


async def test_the_probe_tells_a_node_socketio_2_exchange(tmp_path: Path) -> None:
    settings = SimSettings(
        seed=31, pairs=PAIRS, rate_per_s=60.0, history_hours=0.2, record_deliveries=True
    )
    async with (
        run_sim(settings) as sim,
        node_socketio_server("2", upstream=sim.base_url, **HEARTBEAT) as relay,
    ):
        deliveries = sim.deliveries
        assert deliveries is not None
        config = config_for(sim.base_url, tmp_path, socket_url=relay.url)
        probing = asyncio.create_task(probe(config, WINDOW_S))
        # The relay's own subscription upstream: what it passed on to the probe.
        upstream = await eventually(lambda: list(deliveries.connections.values()),
                                    what="the relay subscribed upstream")  # fmt: skip
        await eventually(lambda: len(upstream[0].events) >= EVENTS_HEARD,
                         what=f"{EVENTS_HEARD} events relayed")  # fmt: skip
        # Stop the market well inside the window, so that all that was relayed is heard.
        sim.pause()
        await sim.drained()
        (relayed,) = deliveries.connections.values()
        await eventually(lambda: _relayed(relay, len(relayed.events)), what="every event relayed")
        report = await probing
    findings = {f.key: f for f in report.findings}
    assert report.exit_code == 0, report.to_table()

    generation = findings["socket.generation"]
    assert generation.outcome == "ok"
    assert {k: generation.details[k] for k in ("protocol", "connected_with", "configured")} == {
        "protocol": "2",
        "connected_with": "2",
        "configured": "auto",
    }
    assert generation.details["ping_interval_ms"] == HEARTBEAT["pingInterval"]
    assert generation.details["ping_timeout_ms"] == HEARTBEAT["pingTimeout"]

    expected = counts_per_pair(relayed.events)
    assert findings["socket.events"].details["pairs"] == expected
    assert findings["socket.event_names"].details["names"] == {
        pair: {f"book_{pair}": counts["new"] + counts["cancel"]}
        for pair, counts in expected.items()
    }
    cancels = findings["book.cancel_reading"]
    assert (cancels.outcome, cancels.details["reading"]) == ("ok", "oid")
    assert cancels.details["oid_alone_resting"] > 0
    assert cancels.details["cancel_order_id_alone_resting"] == 0


async def _relayed(relay: NodeServer, count: int) -> bool:
    return bool((await relay.state())["relayed"] >= count)

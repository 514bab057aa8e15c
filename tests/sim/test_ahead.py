"""Events made ahead (`POST /admin/ahead`): the engine's events, none emitted, handed out
as the exact socket.io packets the simulator would have sent, in the engine's order."""

from __future__ import annotations

import itertools
import json
from decimal import Decimal
from typing import Any

import aiohttp
import pytest

from recorder.sim import wire
from recorder.sim.ahead import Schedule
from recorder.sim.engine import Event
from recorder.sim.server import SimSettings, Simulator, run_sim

QUIET = SimSettings(seed=5, pairs=("BTC_USD", "ETH_BTC"), rate_per_s=0, history_hours=0,
                    record_deliveries=True)  # fmt: skip
"""No live flow: every event of the engine is one made ahead."""


async def ahead(http: aiohttp.ClientSession, sim: Simulator, body: dict[str, Any]) -> list[str]:
    async with http.post(sim.base_url + "/admin/ahead", json=body) as response:
        text = await response.text()
        assert response.status == 200, text
    assert text.endswith("\n")
    return text.split("\n")[:-1]


def parse(line: str) -> tuple[str, str, Any]:
    """(room, event name, payload) of a handed-out line, numbers as exact Decimals."""
    room, packet = line.split(" ", 1)
    assert packet.startswith("2[")
    name, payload = json.loads(packet[1:], parse_float=Decimal)
    return room, name, payload


async def test_events_made_ahead_are_the_engines_exactly_and_not_emitted() -> None:
    made: list[Event] = []
    async with run_sim(QUIET) as sim, aiohttp.ClientSession() as http:
        sim.engine.subscribe(made.append)
        assert sim.deliveries is not None
        lines = await ahead(http, sim, {"events": 1234})  # more than one batch

        assert len(made) == len(lines) == 1234 == sim.engine.event_count
        for line, event in zip(lines, made, strict=True):
            room, name, payload = parse(line)
            assert room == name == f"book_{event.pair}"
            assert payload == wire.book_payload(event, sim.settings.cancel_id)
            # The very text python-socketio writes for the emission: digits as the engine has
            # them (a trailing zero included), no float in between.
            assert line.split(" ", 1)[1] == "2" + wire.dumps([name, payload])
        assert any(payload["trades"] for *_, payload in map(parse, lines) if "trades" in payload)
        assert any("cancelled" in payload for *_, payload in map(parse, lines))
        # Handed out, not emitted: no socket was sent one, the state says where they went.
        state = sim.state()
        assert (state["emitted_count"], state["handed_out_count"]) == (0, 1234)
        assert sim.deliveries.undelivered == []
        # The engine's tape holds their trades, as /exchanges/ serves it.
        fills = [t.tid for e in made if hasattr(e, "trades") for t in e.trades]
        assert fills == [t.tid for t in sim.engine.trades]


async def test_a_schedule_dates_the_events_and_their_trades() -> None:
    schedule = Schedule(start_s=1_900_000_000.5, rate_per_s=3000)
    async with run_sim(QUIET) as sim, aiohttp.ClientSession() as http:
        lines = await ahead(http, sim, {"events": 700, "start_s": 1_900_000_000.5,
                                        "rate_per_s": 3000})  # fmt: skip
        dates = [parse(line)[2]["date"] for line in lines]
        assert dates == [schedule.date(i) for i in range(700)]
        assert dates[1] - dates[0] == Decimal("0.000333")
        assert all(a < b for a, b in itertools.pairwise(dates))
        trade_times = {t.timestamp for t in sim.engine.trades}
        assert trade_times
        assert trade_times <= set(dates)
        # The wall clock is the engine's again afterwards.
        event = sim.flow.step()
        assert event.date < Decimal(1_900_000_000)


async def test_emission_goes_on_as_before_after_making_ahead() -> None:
    async with run_sim(QUIET) as sim, aiohttp.ClientSession() as http:
        await ahead(http, sim, {"events": 10})
        sim.flow.step()
        await sim.drained()
        assert (sim.emitted_count, sim.handed_out_count, sim.engine.event_count) == (1, 10, 11)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({}, "events must be an integer >= 1"),
        ({"events": 0}, "events must be an integer >= 1"),
        ({"events": True}, "events must be an integer >= 1"),
        ({"events": 5, "rate_per_s": 100}, "both or neither"),
        ({"events": 5, "start_s": 1, "rate_per_s": 0}, "rate_per_s > 0"),
        ({"events": 5, "start_s": 1, "rate_per_s": 2_000_000}, "at most 1,000,000"),
    ],
)
async def test_bad_requests_are_refused_and_make_nothing(body: dict[str, Any], reason: str) -> None:
    async with run_sim(QUIET) as sim, aiohttp.ClientSession() as http:
        async with http.post(sim.base_url + "/admin/ahead", json=body) as response:
            assert response.status == 400
            assert reason in (await response.json())["detail"]
        assert sim.engine.event_count == 0


async def test_the_live_flow_must_be_paused() -> None:
    async with run_sim(QUIET, rate_per_s=50) as sim, aiohttp.ClientSession() as http:
        async with http.post(sim.base_url + "/admin/ahead", json={"events": 5}) as response:
            assert response.status == 400
            assert "paused" in (await response.json())["detail"]
        sim.pause()
        await sim.drained()
        before = sim.engine.event_count
        lines = await ahead(http, sim, {"events": 5})
        assert len(lines) == 5
        assert sim.engine.event_count == before + 5

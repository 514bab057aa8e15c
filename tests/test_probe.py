"""`recorder probe` against the real simulator (and small real servers for what the simulator
does not do): as a process for its exit codes and output, in-process where a test drives
the exchange, and its pure parts on their own.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from recorder.book import CancelReading
from recorder.config import CANDLE_TYPES, ExchangeConfig, load_config
from recorder.exchange import paging
from recorder.exchange.classify import BookUpdate
from recorder.exchange.parse import OrderBook
from recorder.exchange.rest import ExchangeClient, RetryPolicy
from recorder.exchange.sio.connection import ConnectFailed
from recorder.exchange.sio.detect import V3_REFUSED, Detected, open_packet_of
from recorder.probe import Finding, Report, probe
from recorder.probe.cancels import Seed, cancel_reading, cancel_reading_finding
from recorder.probe.clock import http_date_skew, lags, parse_http_date, resolution_s
from recorder.probe.endpoints import largest_trade_page
from recorder.probe.generation import detect, generation_finding
from recorder.probe.listen import Heard, event_names, events_per_pair
from recorder.probe.observe import HttpExchange
from recorder.records import BookEvent, BookFill, BookSnapshot, RawMessage, Side, SnapshotOrder
from recorder.sim import rest as sim_rest
from recorder.sim.engine import Event
from recorder.sim.server import SimSettings, run_sim
from tests.harness.ports import serving
from tests.harness.waiting import eventually
from tests.probing import EVENTS_HEARD, PAIRS, WINDOW_S, config_for, counts_per_pair, probe_config

REST_KEYS = [
    "rest.currencies",
    "rest.pairs",
    "rest.orderbook",
    "rest.orderbook_grouped",
    "rest.order",
    "rest.exchanges",
    *[f"rest.chart.{t}" for t in CANDLE_TYPES],
]
NEEDED_REST_KEYS = [k for k in REST_KEYS if k not in ("rest.orderbook_grouped", "rest.order")]
ONCE = RetryPolicy(attempts=1)


# --- helpers --------------------------------------------------------------------------------


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECORDER_")}
    return env | extra


@dataclass
class Ran:
    returncode: int
    stdout: str
    stderr: str

    def json(self) -> dict[str, Any]:
        document: dict[str, Any] = json.loads(self.stdout)
        return document


async def probe_cli(config: Path, *args: str, env: dict[str, str] | None = None) -> Ran:
    """`recorder probe` as a process; the simulator keeps serving in this event loop."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "recorder",
        "probe",
        "--config",
        str(config),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env or clean_env(),
    )
    out, err = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode is not None
    return Ran(process.returncode, out.decode(), err.decode())


# --- the command, as a process --------------------------------------------------------------


async def test_a_healthy_exchange_exits_0_with_every_finding_in_the_json(tmp_path: Path) -> None:
    settings = SimSettings(seed=11, pairs=PAIRS, rate_per_s=40.0, history_hours=0.3)
    async with run_sim(settings) as sim:
        ran = await probe_cli(probe_config(tmp_path, sim.base_url), "--seconds", "3", "--json")
        tape = len(sim.engine.trades)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    document = ran.json()
    assert document["recording_would_work"] is True
    assert document["failures"] == []
    assert document["base_url"] == sim.base_url
    findings = document["findings"]
    for key in REST_KEYS:
        assert findings[key]["outcome"] == "ok", (key, findings[key])
        assert findings[key]["status"] == 200
        assert findings[key]["parsed"] is True
        assert findings[key]["latency_ms"] > 0
    assert findings["rest.pairs"]["pairs"] == list(sim.engine.books)
    order = findings["rest.order"]
    assert order["answered_id"] == order["order_id"]

    per_pair = findings["socket.events"]["pairs"]
    assert set(per_pair) == set(PAIRS)
    assert all(kinds["new"] > 0 for kinds in per_pair.values())
    assert findings["socket.events"]["book_events"] == sum(
        kinds["new"] + kinds["cancel"] for kinds in per_pair.values()
    )
    assert findings["socket.event_names"]["names"] == {
        pair: {f"book_{pair}": kinds["new"] + kinds["cancel"]} for pair, kinds in per_pair.items()
    }
    generation = findings["socket.generation"]
    assert (generation["outcome"], generation["protocol"], generation["connected_with"]) == (
        "ok",
        "4",
        "4",
    )

    # the simulator names the cancelled order by oid
    cancels = findings["book.cancel_reading"]
    assert cancels["reading"] == "oid"
    assert cancels["oid_alone_resting"] > 0
    assert cancels["cancel_order_id_alone_resting"] == 0

    page = findings["trades.page"]
    assert page["asked"] == page["catch_up_asks"] == paging.ASK
    assert page["verdict"] == "tape shorter"
    assert 0 < page["got"] <= tape  # the tape grows while the probe runs

    # one machine, one clock: the skew is zero within each estimate's precision
    http_date = findings["clock.http_date"]
    assert http_date["low_s"] <= 0 <= http_date["high_s"]
    assert http_date["precision_s"] <= 0.5
    events = findings["clock.event_date"]
    assert 0 <= events["lag_min_s"] < 1
    assert events["resolution_s"] == 1e-06
    assert findings["clock.trade_date"]["lag_min_s"] >= 0
    assert findings["signed.wallets"]["outcome"] == "skip"


async def test_with_keys_the_signed_calls_are_accepted_and_no_secret_is_printed(
    tmp_path: Path,
) -> None:
    async with run_sim(SimSettings(seed=12, pairs=PAIRS, rate_per_s=10.0)) as sim:
        credentials = sim.accounts.by_name["alice"].credentials
        env = clean_env(
            RECORDER_EXCHANGE__API_KEY=credentials.key,
            RECORDER_EXCHANGE__API_SECRET=credentials.secret,
        )
        ran = await probe_cli(probe_config(tmp_path, sim.base_url), "--seconds", "1", env=env)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    rows = {line.split()[0]: line.split()[1:] for line in ran.stdout.splitlines() if " " in line}
    assert rows["signed.wallets"][0] == "ok"
    assert rows["signed.encoding"][:3] == ["ok", "js", "accepted"]
    assert ran.stdout.rstrip().endswith("recording would work")
    for secret in (credentials.key, credentials.secret):
        assert secret not in ran.stdout + ran.stderr
    # the nonce is the daemon's, kept under data_dir
    assert (tmp_path / "var" / "exchange-nonce").exists()


@pytest.mark.parametrize("accepted", ["python", "js"])
async def test_the_url_encoding_the_exchange_checks_is_found(tmp_path: Path, accepted: str) -> None:
    settings = SimSettings(seed=13, pairs=PAIRS, rate_per_s=5.0, sign_encoding=accepted)
    async with run_sim(settings) as sim:
        credentials = sim.accounts.by_name["bob"].credentials
        env = clean_env(
            RECORDER_EXCHANGE__API_KEY=credentials.key,
            RECORDER_EXCHANGE__API_SECRET=credentials.secret,
        )
        config = probe_config(tmp_path, sim.base_url)
        ran = await probe_cli(config, "--seconds", "1", "--json", env=env)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    findings = ran.json()["findings"]
    assert findings["signed.wallets"]["accepted"] is True
    encoding = findings["signed.encoding"]
    assert encoding["first"] == "js"
    assert encoding["accepted"] == accepted
    tried = [(a["encoding"], a["accepted"], a["status"]) for a in encoding["attempts"]]
    if accepted == "js":
        assert tried == [("js", True, 400)]
        assert encoding["outcome"] == "ok"
    else:
        assert tried == [("js", False, 401), ("python", True, 400)]
        assert encoding["outcome"] == "warn"
        assert "js refused" in encoding["summary"]
        assert "python accepted" in encoding["summary"]
    assert credentials.secret not in ran.stdout + ran.stderr


async def test_server_errors_exit_1_naming_each_failing_item(tmp_path: Path) -> None:
    settings = SimSettings(seed=14, pairs=PAIRS, rate_per_s=20.0, faults={"rate_5xx": 1.0})
    async with run_sim(settings) as sim:
        config = probe_config(tmp_path, sim.base_url, pairs=PAIRS)
        ran = await probe_cli(config, "--seconds", "1", "--json")
    assert ran.returncode == 1, ran.stdout + ran.stderr
    document = ran.json()
    assert document["recording_would_work"] is False
    failing = [line.split(":")[0] for line in document["failures"]]
    assert failing == [*NEEDED_REST_KEYS, "trades.page"]
    findings = document["findings"]
    for key in NEEDED_REST_KEYS:
        assert findings[key]["status"] in (500, 502)
        assert findings[key]["parsed"] is False
    # not needed for recording: reported, not failing
    assert findings["rest.orderbook_grouped"]["outcome"] == "warn"
    assert findings["rest.order"]["outcome"] == "skip"
    # socket.io is not behind the faults: the stream itself works
    assert findings["socket.events"]["outcome"] == "ok"


async def test_an_outage_exits_1_and_the_table_says_why(tmp_path: Path) -> None:
    settings = SimSettings(seed=15, pairs=PAIRS, rate_per_s=20.0, outage_s=600.0)
    async with run_sim(settings) as sim:
        ran = await probe_cli(probe_config(tmp_path, sim.base_url, pairs=PAIRS), "--seconds", "1")
    assert ran.returncode == 1, ran.stdout + ran.stderr
    verdict = ran.stdout.split("recording would not work:\n", 1)[1].splitlines()
    reasons = dict(line.strip().split(": ", 1) for line in verdict)
    assert list(reasons) == [*NEEDED_REST_KEYS, "trades.page", "socket.generation", "socket.events"]
    assert reasons["rest.currencies"].startswith("HTTP 502 in ")
    # the stream's own detection, as it failed for the stream
    assert reasons["socket.generation"].startswith("socket.io generation: ")
    assert reasons["socket.generation"].endswith("; the stream did not connect (see socket.events)")
    assert reasons["socket.events"] == "no socket.io connection in 1 s (the log says why)"


async def test_malformed_answers_are_reported_not_fatal(tmp_path: Path) -> None:
    settings = SimSettings(seed=16, pairs=PAIRS, rate_per_s=20.0, faults={"rate_truncated": 1.0})
    async with run_sim(settings) as sim:
        config = probe_config(tmp_path, sim.base_url, pairs=PAIRS)
        ran = await probe_cli(config, "--seconds", "1", "--json")
    assert ran.returncode == 1, ran.stdout + ran.stderr
    findings = ran.json()["findings"]
    for key in NEEDED_REST_KEYS:
        assert findings[key]["status"] == 200
        assert findings[key]["parsed"] is False
        assert findings[key]["error"].startswith("not parsed: ")
        assert findings[key]["body_start"]
    assert findings["trades.page"]["outcome"] == "fail"


def test_bad_arguments_and_configuration_exit_2(tmp_path: Path) -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "recorder", "probe", *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env=clean_env(),
        )

    for seconds in ("0", "-1", "soon", "inf"):
        result = run("--seconds", seconds)
        assert result.returncode == 2, seconds
        assert "--seconds" in result.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text('[exchange]\nbase_url = "ftp://example.com"\n')
    result = run("--config", str(bad))
    assert result.returncode == 2
    assert "exchange.base_url" in result.stderr


# --- in-process, with the test driving the exchange -----------------------------------------


def event_name(dialect: str, pair: str) -> str:
    """The socket.io event the simulator sends a pair's book events as (`--event-name`)."""
    return {"channel": f"book_{pair}", "pair": pair}.get(dialect, dialect)


@pytest.mark.parametrize(
    ("cancel_id", "dialect", "max_page", "verdict"),
    [
        pytest.param("oid", "channel", sim_rest.MAX_LIMIT, "tape shorter", id="as-first-read"),
        pytest.param("cancel_order_id", "pair", 100, "capped", id="cancel_order_id-pair-100"),
        pytest.param("oid", "orderbook", 100, "capped", id="oid-orderbook-100"),
    ],
)
async def test_each_dialect_of_the_simulator_is_reported_as_sent(
    tmp_path: Path, cancel_id: Any, dialect: str, max_page: int, verdict: str
) -> None:
    settings = SimSettings(
        seed=21, pairs=PAIRS, rate_per_s=60.0, history_hours=0.3, record_deliveries=True,
        cancel_id=cancel_id, event_name=dialect, max_page=max_page,
    )  # fmt: skip
    async with run_sim(settings) as sim:
        deliveries = sim.deliveries
        assert deliveries is not None
        tape = len(sim.engine.trades)
        assert 100 < tape < sim_rest.MAX_LIMIT  # a cap of 100 shows, one of 1000 does not
        probing = asyncio.create_task(probe(config_for(sim.base_url, tmp_path), WINDOW_S))

        def sent() -> list[Event]:
            return [e for c in deliveries.connections.values() for e in c.events]

        # Stop the market well inside the window, so that all that was sent is heard.
        await eventually(lambda: len(sent()) >= EVENTS_HEARD, timeout_s=20)
        sim.pause()
        await sim.drained()
        report = await probing
    findings = {f.key: f for f in report.findings}
    assert report.exit_code == 0, report.to_table()

    expected = counts_per_pair(sent())
    assert findings["socket.events"].details["pairs"] == expected
    assert findings["socket.event_names"].outcome == "ok"
    assert findings["socket.event_names"].details["names"] == {
        pair: {event_name(dialect, pair): counts["new"] + counts["cancel"]}
        for pair, counts in expected.items()
    }

    cancels = findings["book.cancel_reading"]
    other = "oid" if cancel_id == "cancel_order_id" else "cancel_order_id"
    assert (cancels.outcome, cancels.details["reading"]) == ("ok", cancel_id)
    assert cancels.details[f"{cancel_id}_alone_resting"] > 0
    assert cancels.details[f"{other}_alone_resting"] == 0

    page = findings["trades.page"]
    assert (page.outcome, page.details["verdict"]) == ("ok", verdict)
    assert page.details["cap"] == (max_page if verdict == "capped" else None)
    assert page.details["asked"] == paging.ASK
    if verdict == "capped":
        assert (
            page.summary
            == f"capped at {max_page} trades a page: catch-up asks for 1000 and pages by {max_page}"
        )


async def test_the_cap_reported_is_the_one_catch_up_learns(tmp_path: Path) -> None:
    settings = SimSettings(seed=22, pairs=("BTC_USD",), rate_per_s=0.0, history_hours=0.5,
                           max_page=100)  # fmt: skip
    async with run_sim(settings) as sim, ExchangeClient(sim.base_url, retry=ONCE) as client:
        finding = await largest_trade_page(client)
        pages = paging.PageSize()
        caught_up = [t.tid async for t in paging.trades_after(client, "BTC_USD", None, pages=pages)]
        tape = sorted(t.tid for t in sim.engine.trades)
    assert caught_up == tape
    assert (finding.details["cap"], pages.cap) == (100, 100)
    assert finding.details["asked"] == pages.ask == paging.ASK


async def test_a_short_tape_is_not_taken_for_a_cap() -> None:
    settings = SimSettings(seed=23, pairs=PAIRS, rate_per_s=0.0, history_hours=0.2)
    async with run_sim(settings) as sim, ExchangeClient(sim.base_url, retry=ONCE) as client:
        finding = await largest_trade_page(client)
        tape = len(sim.engine.trades)
    assert 0 < tape < sim_rest.MAX_LIMIT
    assert finding.details["verdict"] == "tape shorter"
    assert finding.details["got"] == tape


def tape_app(
    tape: int,
    *,
    cap: int | None = None,
    max_limit: int | None = None,
    use_offset: bool = True,
    growth: int = 0,
) -> web.Application:
    """`/exchanges/` of a tape of `tape` trades, ids 1.., serving at most `cap` a page and
    refusing a `limit` above `max_limit`; `growth` trades are added before each answer, as
    on a live exchange."""

    async def exchanges(request: web.Request) -> web.Response:
        nonlocal tape
        tape += growth
        limit = int(request.query.get("limit", "100"))
        if max_limit is not None and limit > max_limit:
            return web.json_response({"limit": [f"at most {max_limit}"]}, status=400)
        offset = int(request.query.get("offset", "0")) if use_offset else 0
        ids = list(range(1, tape + 1))
        if request.query.get("ordering", "-id") == "-id":
            ids.reverse()
        page = ids[offset : offset + min(limit, cap or limit)]
        return web.json_response(
            [
                {"id": i, "price": "1.5", "amount": "2", "pair": "BTC_USD", "type": "buy",
                 "timestamp": 1700000000 + i}
                for i in page
            ]
        )  # fmt: skip

    app = web.Application()
    app.router.add_get("/api/v1/exchanges/", exchanges)
    return app


FALLBACK = "catch-up's limit=1000 is refused, so it asks for 100"
PAGE_SIZES = [
    ("capped", {"tape": 1500, "cap": 300}, "ok",
     "capped at 300 trades a page: catch-up asks for 1000 and pages by 300"),
    ("at least", {"tape": 6000}, "ok",
     "serves at least 1000 trades a page: catch-up asks for 1000, and gets full pages"),
    ("tape shorter", {"tape": 150, "growth": 20}, "ok",
     "the whole tape is 190 trades, fewer than the 1000 asked: no cap seen up to 190; "
     "catch-up asks for 1000"),
    ("capped", {"tape": 1500, "cap": 300, "growth": 20}, "ok",
     "capped at 300 trades a page: catch-up asks for 1000 and pages by 300"),
    ("at least", {"tape": 600, "max_limit": 500}, "warn",
     f"serves at least 100 trades a page: {FALLBACK}, and gets full pages"),
    ("capped", {"tape": 600, "max_limit": 500, "cap": 60}, "warn",
     f"capped at 60 trades a page: {FALLBACK} and pages by 60"),
]  # fmt: skip


@pytest.mark.parametrize(("verdict", "tape", "outcome", "summary"), PAGE_SIZES)
async def test_page_sizes_of_other_exchanges_as_catch_up_learns_them(
    verdict: str, tape: dict[str, int], outcome: str, summary: str
) -> None:
    async with serving(tape_app(**tape)) as url, ExchangeClient(url, retry=ONCE) as client:
        finding = await largest_trade_page(client)
        pages = paging.PageSize()
        tids = [t.tid async for t in paging.trades_after(client, "BTC_USD", None, pages=pages)]
    assert (finding.outcome, finding.details["verdict"], finding.summary) == (
        outcome,
        verdict,
        summary,
    )
    # catch-up read the whole tape, asking what the probe says, and learnt the same cap
    assert tids == list(range(1, len(tids) + 1))
    assert len(tids) >= tape["tape"]
    assert (pages.ask, pages.cap) == (finding.details["asked"], finding.details["cap"])


async def test_an_exchange_that_ignores_offset_fails() -> None:
    app = tape_app(2000, cap=500, use_offset=False)
    async with serving(app) as url, ExchangeClient(url, retry=ONCE) as client:
        finding = await largest_trade_page(client)
    assert (finding.outcome, finding.details["verdict"], finding.summary) == (
        "fail",
        "offset ignored",
        "offset=500 gave trade 1, which the first page held: the exchange seems to ignore "
        "offset, which catch-up pages by",
    )


async def test_refused_pages_are_said() -> None:
    async with serving(tape_app(6000, max_limit=500)) as url, ExchangeClient(url) as client:
        finding = await largest_trade_page(client)
    assert finding.details["asked"] == paging.DOCUMENTED_LIMIT
    assert finding.details["refused"] == ['limit=1000: {"limit": ["at most 500"]}']
    async with serving(tape_app(6000, max_limit=50)) as url, ExchangeClient(url) as client:
        finding = await largest_trade_page(client)
    assert finding.outcome == "fail"
    assert finding.summary == (
        'limit=1000: {"limit": ["at most 50"]}; limit=100: {"limit": ["at most 50"]}: '
        "catch-up cannot page the tape"
    )


def exchange_config(socket_url: str) -> ExchangeConfig:
    return ExchangeConfig(base_url="http://127.0.0.1", socket_url=socket_url, request_timeout_s=5)


async def test_the_simulators_socket_io_generation_is_4() -> None:
    async with run_sim(SimSettings(pairs=("BTC_USD",), rate_per_s=0.0)) as sim:
        detected = await detect(exchange_config(sim.base_url))
        # the handshake's session was closed (the server forgets it at its next sweep)
        sessions = sim.sio.eio.sockets.values()
        await eventually(lambda: all(session.closed for session in sessions), timeout_s=20)
        ping_interval_ms = int(sim.sio.eio.ping_interval * 1000)
        ping_timeout_ms = int(sim.sio.eio.ping_timeout * 1000)
    finding = generation_finding(detected, "auto", "4")
    assert finding.outcome == "ok"
    assert finding.details == {
        "configured": "auto",
        "connected_with": "4",
        "protocol": "4",
        "socket_io": "socket.io 3.x/4.x (Engine.IO 4)",
        "how": "long-polling handshake",
        "websocket_only": False,
        "ping_interval_ms": ping_interval_ms,
        "ping_timeout_ms": ping_timeout_ms,
        "error": None,
    }


async def test_an_engine_io_3_server_is_told_apart() -> None:
    """A server framing as socket.io 2.x does, whatever version the client asks for."""
    closed: list[tuple[str, str]] = []
    opened = '0{"sid":"abc","upgrades":["websocket"],"pingInterval":25000,"pingTimeout":5000}'

    async def handshake(request: web.Request) -> web.Response:
        assert request.query["transport"] == "polling"
        return web.Response(text=f"{len(opened)}:{opened}2:40")

    async def close(request: web.Request) -> web.Response:
        closed.append((request.query["sid"], await request.text()))
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/socket.io/", handshake)
    app.router.add_post("/socket.io/", close)
    async with serving(app) as url:
        detected = await detect(exchange_config(url.replace("http://", "ws://")))
    finding = generation_finding(detected, "auto", "2")
    assert finding.outcome == "ok"
    assert finding.summary == (
        '"2": socket.io 1.x/2.x (Engine.IO 3); detected by: long-polling handshake; '
        'ping every 25000 ms, timeout 5000 ms; the stream connected with "2"'
    )
    assert closed == [("abc", "1:1")]


async def test_no_socket_io_server_fails_detection_as_the_stream_would() -> None:
    async with serving(web.Application()) as url:
        detected = await detect(exchange_config(url))
    assert isinstance(detected, ConnectFailed)
    finding = generation_finding(detected, "auto", None)
    assert finding.outcome == "fail"
    assert finding.details["protocol"] is None
    assert finding.summary == (
        "socket.io generation: long-polling refused and websocket refused (404); "
        "the stream did not connect (see socket.events)"
    )
    # with a fixed generation the stream does not ask: only its connecting tells
    assert generation_finding(detected, "4", None).outcome == "warn"


async def test_a_pair_name_the_client_cannot_send_is_reported_not_fatal(tmp_path: Path) -> None:
    async def currencies(request: web.Request) -> web.Response:
        return web.json_response([{"sign": "B", "short_name": "BTC"}])

    async def pairs(request: web.Request) -> web.Response:
        listed = {"name": "BTC-USD", "currency1": "BTC", "currency2": "USD", "price_precision": 2,
                  "minimum_order_size": "0.01", "maximum_order_size": "100"}  # fmt: skip
        return web.json_response([listed])

    app = web.Application()
    app.router.add_get("/api/v1/currencies/", currencies)
    app.router.add_get("/api/v1/pairs/", pairs)
    async with serving(app) as url:
        report = await probe(load_config(probe_config(tmp_path, url)), 0.5)
    findings = {f.key: f for f in report.findings}
    assert findings["rest.pairs"].outcome == "ok"
    orderbook = findings["rest.orderbook"]
    assert (orderbook.outcome, orderbook.summary) == (
        "fail",
        "not asked: not a pair name like BTC_USD: 'BTC-USD'",
    )
    assert findings["socket.events"].outcome == "fail"
    assert report.exit_code == 1


# --- pure parts -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('0{"sid":"x","pingInterval":25000,"pingTimeout":20000}\x1e40',
         {"sid": "x", "pingInterval": 25000, "pingTimeout": 20000}),
        ('52:0{"sid":"y","pingInterval":25000}2:40', {"sid": "y", "pingInterval": 25000}),
        ('{"code":5,"message":"Unsupported protocol version"}', {}),
        ('5:0{"si', {}),
        ("0[1]", {}),
        ("", {}),
    ],
)  # fmt: skip
def test_the_open_packet_is_found_in_either_framing(text: str, expected: dict[str, Any]) -> None:
    assert open_packet_of(text) == expected


def detected(protocol: Any, *, websocket_only: bool = False) -> Detected:
    how = V3_REFUSED if websocket_only else "long-polling handshake"
    return Detected(protocol, websocket_only, how, 25000, 20000)


@pytest.mark.parametrize(
    ("found", "configured", "connected_with", "outcome", "end"),
    [
        (detected("4"), "auto", "4", "ok", 'timeout 20000 ms; the stream connected with "4"'),
        (detected("2"), "auto", None, "ok", "; the stream did not connect (see socket.events)"),
        (detected("4", websocket_only=True), "4", "4", "ok",
         f"detected by: {V3_REFUSED} (long-polling refused: websocket only); ping every "
         '25000 ms, timeout 20000 ms; the stream connected with "4"'),
        (detected("4"), "2", None, "warn",
         "; but socketio_protocol = '2' is set: the stream did not connect (see socket.events)"),
        (detected("4"), "2", "2", "warn",
         "; but socketio_protocol = '2' is set: the stream connected with \"2\""),
        (detected("4"), "auto", "2", "warn",
         '; but the stream connected with "2": the server answered its detection otherwise'),
        (ConnectFailed("no answer"), "auto", "4", "warn",
         'no answer; the stream connected with "4"'),
        (ConnectFailed("no answer"), "2", "2", "warn",
         "not detected (no answer); socketio_protocol = '2': the stream connected with \"2\""),
    ],
)  # fmt: skip
def test_generation_findings(
    found: Detected | ConnectFailed,
    configured: str,
    connected_with: str | None,
    outcome: str,
    end: str,
) -> None:
    finding = generation_finding(found, configured, connected_with)
    assert (finding.outcome, finding.summary[-len(end) :]) == (outcome, end)
    assert finding.details["connected_with"] == connected_with


def test_http_date_skew_intersects_the_bounds_of_every_answer() -> None:
    date = "Sun, 29 Nov 2026 09:10:47 GMT"
    at = parse_http_date(date)
    assert at == datetime(2026, 11, 29, 9, 10, 47, tzinfo=UTC).timestamp()
    assert at is not None
    exchanges = [
        # answered between 0.2 and 0.3 s after our clock showed `at`: skew in [-0.3, 0.8]
        HttpExchange("/a", 200, date, at + 0.2, at + 0.3),
        # another answer, made while our clock showed at + 0.6 .. at + 0.7: skew in [-0.7, 0.4]
        HttpExchange("/b", 200, date, at + 0.6, at + 0.7),
        HttpExchange("/c", 200, None, at, at + 5),  # no Date: no bound
    ]
    skew = http_date_skew(exchanges)
    assert skew is not None
    # unix seconds as floats keep about 1e-7 s of a fraction
    assert (skew.low_s, skew.high_s, skew.samples, skew.consistent) == (
        pytest.approx(-0.3, abs=1e-6),
        pytest.approx(0.4, abs=1e-6),
        2,
        True,
    )
    assert skew.estimate_s == pytest.approx(0.05, abs=1e-6)
    assert skew.precision_s == pytest.approx(0.35, abs=1e-6)
    assert http_date_skew([HttpExchange("/c", 200, "not a date", at, at)]) is None


def test_http_dates_that_contradict_each_other_give_their_hull() -> None:
    at = datetime(2026, 1, 1, tzinfo=UTC).timestamp()
    early = HttpExchange("/a", 200, "Thu, 01 Jan 2026 00:00:00 GMT", at, at + 0.1)
    late = HttpExchange("/b", 200, "Thu, 01 Jan 2026 00:00:05 GMT", at, at + 0.1)
    skew = http_date_skew([early, late])
    assert skew is not None
    assert not skew.consistent
    assert (skew.low_s, skew.high_s) == (pytest.approx(-0.1, abs=1e-6), pytest.approx(6.0))


def test_lags_bound_the_skew_from_one_side_and_tell_the_dates_resolution() -> None:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    dated = [
        (t0, t0 + timedelta(seconds=0.25)),
        (t0 + timedelta(milliseconds=10), t0 + timedelta(seconds=0.05)),
        (t0 + timedelta(milliseconds=20), t0 + timedelta(seconds=3)),
    ]
    found = lags(dated)
    assert found is not None
    assert (found.samples, found.min_s, found.median_s, found.max_s) == (3, 0.04, 0.25, 2.98)
    assert found.skew_at_least_s == -0.04
    assert found.resolution_s == 0.01
    assert lags([]) is None


@pytest.mark.parametrize(
    ("micros", "expected"),
    [([0, 0], 1.0), ([500_000, 0], 0.1), ([123_000], 0.001), ([1], 1e-06), ([94462, 0], 1e-06)],
)
def test_resolution(micros: list[int], expected: float) -> None:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    assert resolution_s(t0.replace(microsecond=m) for m in micros) == expected


SESSION = uuid.uuid4()
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def seed(pair: str, orders: list[tuple[int, str, str, str]]) -> Seed:
    snapshot = BookSnapshot(uuid.uuid4(), pair, T0, T0, False, "probe")
    levels = [
        SnapshotOrder(snapshot.snapshot_id, side, pos, oid, Decimal(price), Decimal(amount), T0, T0)
        for pos, (oid, side, price, amount) in enumerate(orders)
    ]
    return Seed(OrderBook(snapshot, levels), SESSION)


def cancel(
    pair: str,
    oid: int,
    cancel_order_id: int,
    *,
    after_s: float = 1.0,
    side: Side = "sell",
    price: str = "1",
) -> BookUpdate:
    event = BookEvent(
        pair, oid, "cancel", T0, side, Decimal(price), Decimal(1), cancel_order_id,
        T0 + timedelta(seconds=after_s), SESSION,
    )  # fmt: skip
    return BookUpdate(event, (), f"book_{pair}")


def new(
    pair: str, oid: int, amount: str, fills: tuple[tuple[int, int, str], ...] = ()
) -> BookUpdate:
    at = T0 + timedelta(seconds=1)
    event = BookEvent(pair, oid, "new", T0, "buy", Decimal(1), Decimal(amount), None, at, SESSION)
    made = tuple(
        BookFill(pair, tid, oid, o_id, "sell", Decimal(1), Decimal(filled), T0, at)
        for tid, o_id, filled in fills
    )
    return BookUpdate(event, made, f"book_{pair}")


def test_cancels_are_read_by_the_id_that_rests() -> None:
    seeds = {"BTC_USD": seed("BTC_USD", [(10, "sell", "1", "1"), (11, "sell", "1", "1")])}
    tally = cancel_reading(
        seeds,
        [
            cancel("BTC_USD", 10, 900),  # oid rests
            new("BTC_USD", 12, "1"),  # rests
            cancel("BTC_USD", 12, 901, side="buy"),  # oid rests
            cancel("BTC_USD", 12, 902, side="buy"),  # already gone: neither
            cancel("ETH_USD", 11, 903),  # no book for this pair: not counted
            cancel("BTC_USD", 11, 904, after_s=0.0),  # not after the snapshot: not counted
        ],
    )
    assert tally == CancelReading(oid=2, cancel_order_id=0, ambiguous=0, unknown=1)
    assert tally.established == "oid"


def test_the_docs_sample_read_by_cancel_order_id() -> None:
    # the docs' cancel: oid 15235, cancel_order_id 4535; here 4535 is the resting order
    seeds = {"BTC_USD": seed("BTC_USD", [(4535, "sell", "935.23", "0.0123")])}
    tally = cancel_reading(seeds, [cancel("BTC_USD", 15235, 4535, price="935.23")])
    assert tally == CancelReading(oid=0, cancel_order_id=1, ambiguous=0, unknown=0)
    assert tally.established == "cancel_order_id"
    finding = cancel_reading_finding(tally, 1)
    assert finding.outcome == "ok"
    assert finding.summary.startswith("cancel_order_id names the cancelled order")


def test_fills_take_resting_orders_off_the_seeded_book() -> None:
    seeds = {"BTC_USD": seed("BTC_USD", [(10, "sell", "1", "1")])}
    updates = [new("BTC_USD", 20, "0", fills=((1, 10, "1"),)), cancel("BTC_USD", 10, 30)]
    assert cancel_reading(seeds, updates) == CancelReading(unknown=1)


@pytest.mark.parametrize(
    ("tally", "outcome", "start"),
    [
        (CancelReading(oid=3), "ok", "oid names the cancelled order"),
        (CancelReading(oid=1, cancel_order_id=2), "warn", "the data supports both readings"),
        (CancelReading(ambiguous=2, unknown=4), "warn", "undetermined"),
    ],
)
def test_cancel_reading_findings(tally: CancelReading, outcome: str, start: str) -> None:
    finding = cancel_reading_finding(tally, 2)
    assert (finding.outcome, finding.summary[: len(start)]) == (outcome, start)
    assert cancel_reading_finding(CancelReading(oid=3), 0).outcome == "warn"


def test_events_and_names_per_pair_with_what_was_kept_raw() -> None:
    heard = Heard(("BTC_USD", "LTC_USD"), 1.0)
    heard.updates += [new("BTC_USD", 1, "1"), new("BTC_USD", 2, "0"), cancel("BTC_USD", 1, 7)]
    heard.raws += [
        RawMessage(uuid.uuid4(), T0, "socket", "orderbook", "{}", "unknown event 'orderbook'"),
        RawMessage(uuid.uuid4(), T0, "socket", None, "2[", "undecodable packet"),
    ]
    assert events_per_pair(heard) == {
        "BTC_USD": {"new": 2, "cancel": 1},
        "LTC_USD": {"new": 0, "cancel": 0},
    }
    assert event_names(heard) == {
        "BTC_USD": {"book_BTC_USD": 3},
        "raw": {"orderbook": 1, "(undecodable)": 1},
    }


def test_the_report_table_json_and_exit_code() -> None:
    from recorder.logs import redact_secrets

    redact_secrets(["s3cr3t-value"])
    findings = (
        Finding("rest.pairs", "ok", "HTTP 200 in 3 ms: 2 pairs", {"pairs": ["A_B"]}),
        Finding("trades.page", "warn", "capped at 100", {"cap": 100, "price": Decimal("1.50")}),
        Finding("socket.events", "fail", "no connection; key s3cr3t-value"),
        Finding("rest.chart.D", "warn", "HTTP 502: <html>\n<body>\n" + "x" * 400),
    )
    report = Report("http://x", "http://x/socket.io/", T0, 2.0, findings)
    assert report.exit_code == 1
    document = json.loads(report.to_json())
    assert document["recording_would_work"] is False
    assert document["failures"] == ["socket.events: no connection; key ****"]
    assert document["warnings"][0] == "trades.page: capped at 100"
    assert document["findings"]["trades.page"] == {
        "outcome": "warn",
        "summary": "capped at 100",
        "cap": 100,
        "price": "1.50",
    }
    table = report.to_table()
    assert "s3cr3t-value" not in table
    chart_line = next(line for line in table.splitlines() if line.startswith("rest.chart.D"))
    assert chart_line.split("  warn    ")[1].startswith("HTTP 502: <html> <body> xxx")
    assert chart_line.endswith("x...")
    assert len(chart_line.split("  warn    ")[1]) == 300
    assert document["findings"]["rest.chart.D"]["summary"].endswith("x" * 400)
    assert "rest.pairs     ok      HTTP 200 in 3 ms: 2 pairs" in table
    assert table.endswith("recording would not work:\n  socket.events: no connection; key ****")
    assert Report("http://x", "", T0, 1.0, findings[:2]).exit_code == 0

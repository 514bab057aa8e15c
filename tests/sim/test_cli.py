"""`recorder sim` as a process: serves, prints its accounts, stops cleanly on SIGTERM, and its
switches for the docs' open readings reach the server (or exit 2 for an unusable value)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import subprocess
import sys
import urllib.request
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from tests.harness.waiting import eventually
from tests.sim.conftest import get_json, socket_client


def test_recorder_sim_serves_and_stops_on_sigterm() -> None:
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "recorder",
            "sim",
            "--port",
            "0",
            "--history-hours",
            "0.2",
            "--pairs",
            "ETH_BTC,LTC_USD",
            "--rate",
            "5",
            "--seed",
            "9",
            "--book-orders",
            "300",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stdout is not None
        url = ""
        accounts = []
        while not url or len(accounts) < 3:
            line = process.stdout.readline()
            assert line, "recorder sim exited early"
            if "serving" in line:
                url = line.split()[3]
            if "account" in line:
                accounts.append(line)
        assert url.startswith("http://127.0.0.1:")
        assert "key sim-alice secret" in accounts[0]
        with urllib.request.urlopen(url + "/api/v1/pairs/", timeout=10) as response:  # noqa: S310 - our own http URL
            pairs = json.loads(response.read())
        assert [p["name"] for p in pairs] == ["ETH_BTC", "LTC_USD"]
        with urllib.request.urlopen(url + "/api/v1/orderbook/LTC_USD/", timeout=10) as response:  # noqa: S310 - our own http URL
            book = json.loads(response.read())
        # --book-orders 300 (the history alone leaves about 80; the flow at 5 events/s may
        # have cancelled a few since the start)
        assert len(book["buy"]) + len(book["sell"]) > 250
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=20)
    assert code == 0


@pytest.mark.parametrize(
    ("flags", "named"),
    [(["--rate-429", "2"], "rate_429"), (["--pairs", "BTCUSD"], "BTCUSD")],
    ids=["bad-fault-rate", "bad-pair-name"],
)
def test_a_bad_flag_exits_2_naming_it(flags: list[str], named: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "recorder", "sim", "--port", "0", *flags],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert named in result.stderr


@pytest.mark.parametrize(
    ("flag", "value"),
    [("--cancel-id", "order"), ("--event-name", "disconnect"), ("--max-page", "0")],
)
def test_unusable_reading_switches_exit_2(flag: str, value: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "recorder", "sim", "--port", "0", flag, value],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert flag in result.stderr


async def test_cancel_id_flag_makes_cancel_order_id_name_the_cancelled_order() -> None:
    """`--cancel-id cancel_order_id`: each cancel's `cancel_order_id` is an order that the
    exchange reports cancelled, at the cancel's price and side."""
    flags = ["--pairs", "BTC_USD", "--rate", "100", "--history-hours", "0.1",
             "--cancel-id", "cancel_order_id"]  # fmt: skip
    async with sim_process(*flags) as url:
        client = socket_client()
        cancels: list[Any] = []
        client.on("book_BTC_USD", lambda e: cancels.append(e) if "cancelled" in e else None)
        await client.connect(url, transports=["websocket"])
        await client.call("subscribe", "book_BTC_USD")
        await eventually(lambda: len(cancels) >= 5, timeout_s=20)
        await client.disconnect()
        async with aiohttp.ClientSession() as http:
            for cancel in cancels[:5]:
                status, order = await get_json(
                    http, f"{url}/api/v1/order/{cancel['cancel_order_id']}/"
                )
                assert status == 200
                assert (order["status"], order["type"], order["price"]) == (
                    "2",
                    cancel["type"],
                    cancel["price"],
                )


async def test_event_name_and_max_page_switches() -> None:
    flags = ["--history-hours", "0.2", "--pairs", "BTC_USD", "--rate", "50",
             "--event-name", "orderbook", "--max-page", "7"]  # fmt: skip
    async with sim_process(*flags) as url:
        async with aiohttp.ClientSession() as http:
            _, page = await get_json(http, url + "/api/v1/exchanges/?limit=1000&ordering=id")
        assert len(page) == 7

        client = socket_client()
        received: list[tuple[str, list[Any]]] = []

        @client.on("*")  # type: ignore[misc]
        async def on_any(event: str, *args: Any) -> None:
            received.append((event, list(args)))

        await client.connect(url, transports=["websocket"])
        await client.call("subscribe", "book_BTC_USD")
        await eventually(lambda: len(received) >= 5, timeout_s=15)
        await client.disconnect()
        for event, args in received:
            assert event == "orderbook"
            channel, payload = args
            assert channel == "book_BTC_USD"
            assert isinstance(payload["oid"], int)


@contextlib.asynccontextmanager
async def sim_process(*flags: str) -> AsyncIterator[str]:
    """`recorder sim --port 0 FLAGS` as a process: its URL, then SIGTERM and exit 0."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "recorder", "sim", "--port", "0", *flags,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        url = ""
        while not url:
            line = (await asyncio.wait_for(process.stdout.readline(), 60)).decode()
            assert line, "recorder sim exited early"
            if "serving" in line:
                url = line.split()[3]
        yield url
    finally:
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 20) == 0

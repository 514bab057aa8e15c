"""`recorder sim --event-name` and `--max-page` as a process: the switches reach the server."""

from __future__ import annotations

import asyncio
import signal
import sys
from typing import Any

import aiohttp

from tests.sim.conftest import get_json, socket_client, until


async def test_event_name_and_max_page_switches() -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "recorder", "sim", "--port", "0", "--history-hours", "0.2",
        "--pairs", "BTC_USD", "--rate", "50", "--event-name", "orderbook", "--max-page", "7",
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
        await until(lambda: len(received) >= 5, timeout_s=15)
        await client.disconnect()
        for event, args in received:
            assert event == "orderbook"
            channel, payload = args
            assert channel == "book_BTC_USD"
            assert isinstance(payload["oid"], int)
    finally:
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 20) == 0


async def test_unusable_switch_values_exit_2() -> None:
    for flag, value in (("--event-name", "disconnect"), ("--max-page", "0")):
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "recorder", "sim", "--port", "0", flag, value,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        _, stderr = await asyncio.wait_for(process.communicate(), 60)
        assert process.returncode == 2
        assert flag in stderr.decode()

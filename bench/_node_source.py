"""The fast event source of bench/ingest.py (--source node): bench/node_source.js, a Node
socket.io 4 server sending the events `recorder sim` made ahead, and bench/raw_reader.js,
the cheapest reader there is, for measuring the source itself.

socket.io comes from npm into the cache the Node tests use (tests/node/harness.py).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiohttp
from _recorder_procs import SimProcess, eventually

HERE = Path(__file__).resolve().parent
SOURCE_JS = HERE / "node_source.js"
READER_JS = HERE / "raw_reader.js"
MAKE_RATE_FLOOR = 4000.0
"""Events per second the simulator makes ahead at the least (about 8,000 on the machine of
docs/benchmarks.md): a paced run's schedule starts after the making is sure to be done."""


def node_modules() -> Path:
    """socket.io 4 (and ws, which it uses) from npm, installed once into the tests' cache."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        raise SystemExit("--source node needs `node` and `npm` on PATH")
    from tests.node.harness import socketio_modules

    return socketio_modules("4")


def _start(script: Path, *args: str) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    process = subprocess.Popen(
        ["node", str(script), *args],  # noqa: S607 - node as the machine has it
        env={**os.environ, "SOCKETIO_MODULES": str(node_modules())},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line:
        raise RuntimeError(f"{script.name} exited ({process.wait()}) before it was ready")
    return process, json.loads(line)


def _stop(process: subprocess.Popen[str]) -> None:
    """Close its stdin (the scripts end with it); kill it if it lingers."""
    if process.stdin is not None:
        process.stdin.close()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class NodeSource:
    """A running bench/node_source.js and its admin routes."""

    def __init__(self, process: subprocess.Popen[str], port: int) -> None:
        self.process = process
        self.url = f"http://127.0.0.1:{port}"

    @property
    def pid(self) -> int:
        return self.process.pid

    async def _call(self, http: aiohttp.ClientSession, route: str, body: Any = None) -> Any:
        method = http.get if body is None else http.post
        async with method(self.url + route, json=body) as response:
            answer = await response.json()
            if response.status != 200:
                raise RuntimeError(f"node source {route}: {answer}")
            return answer

    async def state(self, http: aiohttp.ClientSession) -> dict[str, Any]:
        return await self._call(http, "/admin/state")  # type: ignore[no-any-return]

    async def load(
        self,
        http: aiohttp.ClientSession,
        sim: SimProcess,
        events: int,
        schedule: tuple[float, float] | None = None,
    ) -> int:
        """Have the simulator make `events` ahead (dated by `schedule`: start unix seconds
        and rate, if given) and load them; how many were loaded."""
        body: dict[str, Any] = {"events": events}
        if schedule is not None:
            body["start_s"], body["rate_per_s"] = schedule
        answer = await self._call(
            http, "/admin/load", {"url": f"{sim.url}/admin/ahead", "body": body}
        )
        return int(answer["events"])

    async def start(
        self,
        http: aiohttp.ClientSession,
        schedule: tuple[float, float] | None = None,
        repeat: bool = False,
    ) -> None:
        body: dict[str, Any] = {"repeat": repeat}
        if schedule is not None:
            start_s, rate = schedule
            if time.time() > start_s:
                raise RuntimeError("the events were made after their schedule had begun")
            body.update(start_ms=start_s * 1000, rate_per_s=rate)
        await self._call(http, "/admin/start", body)

    async def stop(self, http: aiohttp.ClientSession) -> None:
        await self._call(http, "/admin/stop", {})

    async def wait_subscribed(
        self, http: aiohttp.ClientSession, sockets: int, channels: list[str]
    ) -> None:
        """Until `sockets` connections have each subscribed every channel."""

        async def subscribed() -> bool:
            state = await self.state(http)
            live = {s["id"] for s in state["sockets"]}
            done = {
                socket_id: {c for s, c in state["subscriptions"] if s == socket_id}
                for socket_id in live
            }
            return sum(set(channels) <= got for got in done.values()) >= sockets

        await eventually(subscribed, timeout_s=60, what=f"{sockets} subscriber(s) on the source")

    async def wait_done(self, http: aiohttp.ClientSession, timeout_s: float = 300) -> None:
        """Until every loaded event was handed to every subscriber and no queue is left."""

        async def drained() -> bool:
            state = await self.state(http)
            return bool(state["done"]) and all(s["queued"] == 0 for s in state["sockets"])

        await eventually(drained, timeout_s=timeout_s, what="the node source to send everything")


@contextmanager
def node_source() -> Iterator[NodeSource]:
    process, hello = _start(SOURCE_JS)
    try:
        yield NodeSource(process, int(hello["port"]))
    finally:
        _stop(process)


class RawReader:
    """A running bench/raw_reader.js: how many events it has read so far."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.process = process

    @property
    def pid(self) -> int:
        return self.process.pid

    async def events(self) -> int:
        return await asyncio.to_thread(self._ask)

    def _ask(self) -> int:
        assert self.process.stdin is not None
        assert self.process.stdout is not None
        self.process.stdin.write("\n")
        self.process.stdin.flush()
        return int(json.loads(self.process.stdout.readline())["events"])


@contextmanager
def raw_reader(url: str, channels: list[str]) -> Iterator[RawReader]:
    process, _ready = _start(READER_JS, url, *channels)
    try:
        yield RawReader(process)
    finally:
        _stop(process)

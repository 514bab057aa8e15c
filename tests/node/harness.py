"""Real Node socket.io servers for the tests: installed from npm once, started per test.

`socketio_modules(generation)` installs the pinned socket.io release of that generation
(and socket.io-client 4, which the relay uses) into a cache that outlives the test run,
`~/.cache/recorder-tests/node/` (or `$RECORDER_TEST_NODE_CACHE`), under a file lock so that
concurrent test runs install it once. Without `node` and `npm` the tests that need them are
skipped, saying so; a failing install fails them (it would hide a broken setup otherwise).

`node_socketio_server(generation, **options)` runs `server.js` (beside this file) on a port
the OS picks and drives it through its admin routes: emit payloads into a room, send raw
packets, disconnect every socket, read its state.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import functools
import json
import os
import shutil
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

HERE = Path(__file__).resolve().parent
SERVER_JS = HERE / "server.js"

RELEASES = {"2": "2.5.1", "4": "4.8.4"}
"""The socket.io release of each generation the tests run: the last 2.x, a current 4.x."""
CLIENT_RELEASE = "4.8.4"
"""socket.io-client, for the relay that feeds a Node server from the simulator."""
INSTALL_TIMEOUT_S = 300
START_TIMEOUT_S = 30

NO_NODE = (
    "NODE.JS MISSING: the tests against real Node socket.io servers (2.x and 4.x) need "
    "`node` and `npm` on PATH (Debian: apt-get install nodejs npm); they did NOT run"
)


def cache_root() -> Path:
    configured = os.environ.get("RECORDER_TEST_NODE_CACHE")
    return Path(configured) if configured else Path.home() / ".cache" / "recorder-tests" / "node"


def require_node() -> None:
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip(NO_NODE)


@contextlib.contextmanager
def _install_lock(root: Path) -> Iterator[None]:
    root.mkdir(parents=True, exist_ok=True)
    with (root / ".install.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@functools.cache
def socketio_modules(generation: str) -> Path:
    """The node_modules directory holding socket.io of `generation` ("2" or "4")."""
    require_node()
    packages = [f"socket.io@{RELEASES[generation]}", f"socket.io-client@{CLIENT_RELEASE}"]
    root = cache_root()
    target = root / ("-".join(packages).replace("@", "-"))
    done = target / "installed.json"
    with _install_lock(root):
        if not done.exists():
            if target.exists():
                shutil.rmtree(target)  # a half-finished install of an earlier run
            target.mkdir(parents=True)
            (target / "package.json").write_text('{"private": true}\n')
            # npm as the machine has it, from PATH
            result = subprocess.run(
                ["npm", "install", "--no-audit", "--no-fund", "--no-save", *packages],  # noqa: S607
                cwd=target,
                capture_output=True,
                text=True,
                timeout=INSTALL_TIMEOUT_S,
                check=False,
            )
            if result.returncode != 0:
                pytest.fail(f"npm install {' '.join(packages)} failed:\n{result.stderr[-3000:]}")
            done.write_text(json.dumps(packages) + "\n")
    return target / "node_modules"


class NodeServer:
    """A running `server.js`: its socket.io URL and its admin routes."""

    def __init__(self, port: int, version: str, http: aiohttp.ClientSession) -> None:
        self.port = port
        self.version = version
        self.url = f"http://127.0.0.1:{port}"
        self._http = http

    async def _post(self, route: str, body: dict[str, Any]) -> dict[str, Any]:
        async with self._http.post(self.url + route, json=body) as response:
            answer: dict[str, Any] = await response.json()
            assert response.status == 200, answer
            return answer

    async def emit(self, room: str, event: str, payloads: list[str]) -> int:
        """Emit each JSON text (parsed by Node) as `event` into `room`; the sockets in it."""
        answer = await self._post(
            "/admin/emit", {"room": room, "event": event, "payloads": payloads}
        )
        return int(answer["receivers"])

    async def send_raw(self, packets: list[str]) -> int:
        """Each socket.io packet text, unchanged, as one message to every socket."""
        return int((await self._post("/admin/send-raw", {"packets": packets}))["sockets"])

    async def disconnect_all(self) -> int:
        return int((await self._post("/admin/disconnect", {}))["sockets"])

    async def state(self) -> dict[str, Any]:
        async with self._http.get(self.url + "/admin/state") as response:
            answer: dict[str, Any] = await response.json()
            return answer

    async def subscribed(self) -> dict[str, list[str]]:
        """Channels subscribed by each socket still connected."""
        state = await self.state()
        live = {s["id"] for s in state["sockets"]}
        channels: dict[str, list[str]] = {}
        for socket_id, name in state["subscriptions"]:
            if socket_id in live:
                channels.setdefault(socket_id, []).append(name)
        return channels


@contextlib.asynccontextmanager
async def node_socketio_server(generation: str, **options: Any) -> AsyncIterator[NodeServer]:
    """`server.js` on socket.io of `generation`, with `options` (pingInterval, transports...)."""
    modules = socketio_modules(generation)
    process = await asyncio.create_subprocess_exec(
        "node",
        str(SERVER_JS),
        json.dumps(options),
        env={**os.environ, "SOCKETIO_MODULES": str(modules)},
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        async with asyncio.timeout(START_TIMEOUT_S):
            line = await process.stdout.readline()
        if not line:
            raise RuntimeError(f"server.js exited ({await process.wait()}) before listening")
        hello = json.loads(line)
        assert hello["version"] == RELEASES[generation], hello
        async with aiohttp.ClientSession() as http:
            yield NodeServer(int(hello["port"]), hello["version"], http)
    finally:
        await stop_process(process)


async def stop_process(process: asyncio.subprocess.Process) -> None:
    """Close its stdin (server.js exits on that), then wait; kill it if it lingers."""
    if process.stdin is not None:
        process.stdin.close()
    try:
        async with asyncio.timeout(10):
            await process.wait()
    except TimeoutError:
        process.kill()
        await process.wait()

"""Ports for servers the tests start: bound to 0 by whoever listens, and reported back.

Asking the OS for a free port and handing its number to a server is a race: the port is
free when asked, and anyone may take it before the server binds it. So every server the
tests start binds port 0 itself and says which port it got: aiohttp apps (`serving`), the
simulator (`sim.base_url`),
`server.js` (its first line), the recorder's metrics endpoint (its "metrics served" log
line), Prometheus (its "Listening on" log line). What is left here are the two cases
where nothing can report a port.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager

from aiohttp import web


async def serve(app: web.Application, port: int = 0) -> tuple[web.AppRunner, str]:
    """Start `app` on loopback `port` (0: any free one); its runner and the URL it got."""
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=1.0)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    host, bound = runner.addresses[0][:2]
    return runner, f"http://{host}:{bound}"


@asynccontextmanager
async def serving(app: web.Application) -> AsyncIterator[str]:
    """`app` served on a loopback port of its own for the block; its URL."""
    runner, url = await serve(app)
    try:
        yield url
    finally:
        await runner.cleanup()


@contextmanager
def refused_port() -> Iterator[int]:
    """A loopback port held bound but not listening: connecting to it is refused, and no
    one else can start listening on it meanwhile."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield int(sock.getsockname()[1])


def free_port() -> int:
    """A loopback port free a moment ago: racy, so only for whoever must name a port before
    anything listens and cannot learn it later (bench/storage.py and bench/catchup.py
    write it into configs they hand on)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])

"""What the book stream needs of one socket.io connection, whichever generation speaks it.

A `Connection` is used once: `connect()` (or `ConnectFailed`), `emit()` while it lasts,
`closed` resolves with the reason it ended, and `close()` releases everything it holds
(sockets, the HTTP session, background tasks), also after a failed or cancelled
`connect()`. It reports through two plain callbacks, called in wire order and never
suspending in between: `on_open()` once the server accepted the client, before any event,
and `on_event(received)` for every event packet.

Generations: "2" is socket.io 1.x/2.x (Engine.IO v3), "4" is socket.io 3.x/4.x (Engine.IO
v4); the names are those of `exchange.socketio_protocol`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Literal, Protocol
from urllib.parse import urlsplit

from recorder.exchange.sio.packets import Received

Generation = Literal["2", "4"]
GENERATIONS: tuple[Generation, ...] = ("2", "4")
ENGINEIO_VERSION: dict[Generation, int] = {"2": 3, "4": 4}
"""The Engine.IO protocol revision (the `EIO` query parameter) under each generation."""

OnOpen = Callable[[], None]
OnEvent = Callable[[Received], None]


class ConnectFailed(Exception):
    """No connection came up; the message says why (refused, timed out, not socket.io)."""


class ConnectionLost(Exception):
    """The connection went away before what was to be sent could be sent."""


class Connection(Protocol):
    @property
    def protocol(self) -> Generation:
        """The generation this connection speaks."""
        ...

    closed: asyncio.Future[str]
    """Resolves with why the connection ended (`server disconnect`, `ping timeout`, ...)."""

    async def connect(self) -> None:
        """Connect and join the default namespace; `ConnectFailed` if that cannot be done."""
        ...

    async def emit(self, event: str, data: Any) -> None:
        """Send one event; `ConnectionLost` if the connection is gone."""
        ...

    async def close(self) -> None:
        """End the connection (if any) and release everything it holds; never raises."""
        ...


def engineio_url(socket_url: str, path: str, *, eio: int, transport: str) -> str:
    """The Engine.IO endpoint for one transport: `ws(s)://host/socket.io/?EIO=3&transport=...`.

    `socket_url` may be written ws(s):// or http(s)://: both name the same server (the docs
    write wss://bitexbit.com); the scheme is chosen by the transport, TLS kept as written.
    """
    parts = urlsplit(socket_url)
    secure = parts.scheme in ("https", "wss")
    scheme = "ws" if transport == "websocket" else "http"
    scheme += "s" if secure else ""
    route = "/" + path.strip("/") + "/" if path.strip("/") else "/"
    return f"{scheme}://{parts.netloc}{route}?EIO={eio}&transport={transport}"


def future_reason() -> asyncio.Future[str]:
    """A future for `Connection.closed`, on the running loop."""
    return asyncio.get_running_loop().create_future()


def resolve(closed: asyncio.Future[str], reason: str) -> None:
    """Record why the connection ended; the first reason wins."""
    if not closed.done():
        closed.set_result(reason)

"""Which socket.io generation a server speaks, asked of the server itself.

The docs leave it open ("the latest version of socket.io", in 2017: 1.x/2.x, Engine.IO v3;
today's servers are 3.x/4.x, Engine.IO v4), and a client of the wrong generation either
fails its handshake or connects and is dropped at the first heartbeat. So with
`exchange.socketio_protocol = "auto"` the stream asks before its first connection, and again
after a connection that failed to connect or ended before receiving anything (`sio.dial`):
a server upgraded while we were disconnected is spoken to in its new generation at the next
attempt, and a reconnect after an ordinary drop costs no extra HTTP request.

How, in order:

1. An Engine.IO v4 long-polling handshake, `GET {path}?EIO=4&transport=polling&b64=1`. A v4
   server answers the bare open packet `0{"sid":...}`; a v3 server (which does not check
   the EIO parameter) answers a v3 payload, each packet prefixed by its length:
   `96:0{"sid":...}2:40`. (`b64=1` makes v3 servers answer text, never a binary payload.)
   The session this opens is closed again at once, politely.
2. A server that refuses long-polling (some allow only websockets) gets an Engine.IO v3
   websocket handshake, `?EIO=3&transport=websocket`: a socket.io 3.x/4.x server refuses it
   with HTTP 400 (unless it allows v3 clients, and then it speaks v3 to us correctly); a
   1.x/2.x server opens it and sends its open packet.

Anything else (no answer, an HTML page at that path) is `ConnectFailed`, and the stream
tries again after its backoff.

The open packet also carries the server's heartbeat (`pingInterval`, `pingTimeout`), kept in
`Detected` for `recorder probe` to report; the stream's connections read their own.
"""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass
from typing import Any

import aiohttp

from recorder.exchange.sio.connection import ConnectFailed, Generation, engineio_url
from recorder.logs import get_logger

log = get_logger(__name__)

_V3_PAYLOAD = re.compile(r"\d+:0\{")
V3_REFUSED = "websocket handshake refused Engine.IO v3"


@dataclass(frozen=True, slots=True)
class Detected:
    protocol: Generation
    websocket_only: bool
    """The server refused long-polling: connect with a websocket straight away."""
    how: str
    """Which handshake told: for the log."""
    ping_interval_ms: int | None = None
    """The heartbeat the server's open packet announced; None when it sent none (a server
    refusing the Engine.IO v3 websocket tells its generation, not its heartbeat)."""
    ping_timeout_ms: int | None = None


def generation_of_polling_answer(body: str) -> Generation | None:
    """The generation whose long-polling handshake answer `body` is, if either's."""
    if body.startswith("0{"):
        return "4"
    if _V3_PAYLOAD.match(body):
        return "2"
    return None


async def detect_generation(socket_url: str, path: str, *, timeout_s: float) -> Detected:
    """Ask the server at `socket_url` which generation it speaks; `ConnectFailed` if unsure."""
    try:
        async with aiohttp.ClientSession() as http, asyncio.timeout(timeout_s):
            polling = await _by_polling(http, socket_url, path)
            if polling is not None:
                return polling
            return await _by_websocket(http, socket_url, path)
    except TimeoutError:
        raise ConnectFailed(f"socket.io generation: no answer within {timeout_s}s") from None
    except (aiohttp.ClientError, OSError) as exc:
        raise ConnectFailed(f"socket.io generation: {type(exc).__name__}: {exc}") from None


async def _by_polling(http: aiohttp.ClientSession, socket_url: str, path: str) -> Detected | None:
    url = engineio_url(socket_url, path, eio=4, transport="polling") + "&b64=1"
    async with http.get(url) as response:
        status, body = response.status, await response.text(errors="replace")
    if status >= 300:
        return None  # long-polling refused; the websocket may tell
    protocol = generation_of_polling_answer(body)
    if protocol is None:
        raise ConnectFailed(
            f"socket.io generation: {url} answered {status} {_short(body)},"
            " not an Engine.IO handshake (is exchange.socket_path right?)"
        )
    opened = open_packet_of(body)
    await _close_session(http, url, protocol, opened)
    return _detected(protocol, websocket_only=False, how="long-polling handshake", opened=opened)


def open_packet_of(text: str) -> dict[str, Any]:
    """The JSON object of the first Engine.IO open packet (`0{...}`) in `text`, in either
    framing; empty when there is none that parses."""
    try:
        opened = json.JSONDecoder().raw_decode(text, text.index("0{") + 1)[0]
    except ValueError:
        return {}
    return opened if isinstance(opened, dict) else {}


def _detected(
    protocol: Generation, *, websocket_only: bool, how: str, opened: dict[str, Any]
) -> Detected:
    return Detected(
        protocol,
        websocket_only=websocket_only,
        how=how,
        ping_interval_ms=_whole(opened.get("pingInterval")),
        ping_timeout_ms=_whole(opened.get("pingTimeout")),
    )


def _whole(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


async def _close_session(
    http: aiohttp.ClientSession, url: str, protocol: Generation, opened: dict[str, Any]
) -> None:
    """End the Engine.IO session the handshake opened, rather than let it time out."""
    try:
        sid = opened["sid"]
        close_payload = "1:1" if protocol == "2" else "1"
        async with http.post(f"{url}&sid={sid}", data=close_payload) as response:
            await response.read()
    except (ValueError, KeyError, TypeError, aiohttp.ClientError, OSError) as exc:
        log.debug("socket.io handshake session not closed", error=repr(exc))


async def _by_websocket(http: aiohttp.ClientSession, socket_url: str, path: str) -> Detected:
    url = engineio_url(socket_url, path, eio=3, transport="websocket")
    try:
        ws = await http.ws_connect(url)
    except aiohttp.WSServerHandshakeError as exc:
        if exc.status == 400:
            return Detected("4", websocket_only=True, how=V3_REFUSED)
        raise ConnectFailed(
            f"socket.io generation: long-polling refused and websocket refused ({exc.status})"
        ) from None
    try:
        message = await ws.receive()
    finally:
        await ws.close()
    if message.type is aiohttp.WSMsgType.TEXT and str(message.data).startswith("0{"):
        how = "websocket handshake accepted Engine.IO v3"
        return _detected("2", websocket_only=True, how=how, opened=open_packet_of(message.data))
    # socket.io 4.x servers (engine.io 6) accept the upgrade and then write their HTTP 400
    # into the websocket; a server that is not socket.io at all fails the v4 handshake next.
    return Detected("4", websocket_only=True, how=V3_REFUSED)


def _short(text: str) -> str:
    return repr(text) if len(text) <= 80 else repr(text[:77] + "...")

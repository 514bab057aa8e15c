"""Which socket.io generation the exchange runs, from its Engine.IO polling handshake.

The docs say "the latest version of socket.io" in pages dated 2017, which could be 1.x/2.x
(Engine.IO protocol 3) or a later 3.x/4.x (Engine.IO protocol 4); the two do not speak to
each other. A handshake is one plain HTTP GET of `{socket_path}?EIO=N&transport=polling`:

- a 3.x/4.x server answers `0{"sid": ...}` (a v4 payload; packets separated by \\x1e);
- a 1.x/2.x server answers `<length>:0{"sid": ...}` (a v3 payload, length-prefixed), often
  followed by its namespace's connect packet;
- a 4.x server started with `allowEIO3` answers both; one without it refuses EIO=3 (400).

Both versions are asked, and the answer's framing (not the version asked for) decides,
since an old server may answer a v4 request in v3 framing. The sessions opened this way are
closed again at once.
"""

from __future__ import annotations

import json
import re
from contextlib import suppress
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

from recorder.probe.report import Finding

GENERATIONS = {"3": "socket.io 1.x/2.x", "4": "socket.io 3.x/4.x"}
"""Engine.IO protocol -> the socket.io servers that speak it."""
ANSWER_EXCERPT_CHARS = 120
_V3_PAYLOAD = re.compile(r"(\d+):")
_CLOSE_PACKET = {"3": "1:1", "4": "1"}


@dataclass(frozen=True, slots=True)
class Handshake:
    engine_io: str
    """"3" or "4": the framing the answer was in."""
    sid: str
    ping_interval_ms: int | None
    ping_timeout_ms: int | None


def read_handshake(body: str) -> Handshake | None:
    """The open packet of a polling handshake answer, in either framing; None if neither."""
    if body.startswith("0{"):
        engine_io, packet = "4", body.split("\x1e", 1)[0]
    else:
        prefix = _V3_PAYLOAD.match(body)
        if prefix is None:
            return None
        start = prefix.end()
        engine_io, packet = "3", body[start : start + int(prefix.group(1))]
    if not packet.startswith("0{"):
        return None
    try:
        opened = json.loads(packet[1:])
    except ValueError:
        return None
    if not isinstance(opened, dict) or not isinstance(opened.get("sid"), str):
        return None
    return Handshake(
        engine_io, opened["sid"], _int(opened.get("pingInterval")), _int(opened.get("pingTimeout"))
    )


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def polling_url(socket_url: str, socket_path: str) -> str:
    """Where the socket.io client connects: the URL's host, the path (as python-socketio does)."""
    parts = urlsplit(socket_url)
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    return f"{scheme}://{parts.netloc}/{socket_path.strip('/')}/"


async def socket_generation(http: httpx.AsyncClient, socket_url: str, socket_path: str) -> Finding:
    """The socket.io generation the server at `socket_url` speaks, as a finding."""
    url = polling_url(socket_url, socket_path)
    answers: dict[str, str] = {}
    shakes: dict[str, Handshake] = {}
    for asked in ("4", "3"):
        params = {"EIO": asked, "transport": "polling"} | ({"b64": "1"} if asked == "3" else {})
        try:
            response = await http.get(url, params=params)
        except httpx.HTTPError as exc:
            answers[f"EIO={asked}"] = f"no answer: {type(exc).__name__}: {exc}"
            continue
        shake = read_handshake(response.text) if response.status_code == 200 else None
        if shake is None:
            excerpt = response.text[:ANSWER_EXCERPT_CHARS].strip()
            answers[f"EIO={asked}"] = f"HTTP {response.status_code}: {excerpt}"
            continue
        answers[f"EIO={asked}"] = f"HTTP 200: an Engine.IO {shake.engine_io} open packet"
        shakes.setdefault(shake.engine_io, shake)
        await _close(http, url, shake)
    details: dict[str, Any] = {"url": url, "answers": answers}
    if not shakes:
        details["engine_io"] = None
        summary = "no Engine.IO handshake answered: " + "; ".join(
            f"{k}: {v}" for k, v in answers.items()
        )
        return Finding("socket.generation", "warn", summary, details)
    engine_io = "4" if "4" in shakes else "3"
    shake = shakes[engine_io]
    details |= {
        "engine_io": engine_io,
        "socket_io": GENERATIONS[engine_io],
        "also_engine_io_3": engine_io == "4" and "3" in shakes,
        "ping_interval_ms": shake.ping_interval_ms,
        "ping_timeout_ms": shake.ping_timeout_ms,
    }
    summary = f"Engine.IO {engine_io}: {GENERATIONS[engine_io]}"
    if details["also_engine_io_3"]:
        summary += " (also answers Engine.IO 3 clients)"
    summary += f"; ping every {shake.ping_interval_ms} ms, timeout {shake.ping_timeout_ms} ms"
    return Finding("socket.generation", "ok", summary, details)


async def _close(http: httpx.AsyncClient, url: str, shake: Handshake) -> None:
    # Not closed, the session would linger on the server until its ping timeout.
    params = {"EIO": shake.engine_io, "transport": "polling", "sid": shake.sid}
    if shake.engine_io == "3":
        params["b64"] = "1"
    with suppress(httpx.HTTPError):
        await http.post(url, params=params, content=_CLOSE_PACKET[shake.engine_io])

"""Which socket.io generation the exchange speaks, as the recorder itself decides it.

With `exchange.socketio_protocol = "auto"` the stream asks the server before every
connection (`recorder.exchange.sio.detect`); the probe asks the same way, once, and then
compares with the generation the stream actually connected with while listening. They
differ only when the server changed in between, or when a fixed `socketio_protocol` names
the other generation than the server's.
"""

from __future__ import annotations

from typing import Any

from recorder.config import ExchangeConfig
from recorder.exchange.sio.connection import ConnectFailed
from recorder.exchange.sio.detect import Detected, detect_generation
from recorder.probe.report import Finding, Outcome

SERVERS = {"2": "socket.io 1.x/2.x (Engine.IO 3)", "4": "socket.io 3.x/4.x (Engine.IO 4)"}
"""Each generation's name in `exchange.socketio_protocol` -> the servers that speak it."""


async def detect(config: ExchangeConfig) -> Detected | ConnectFailed:
    """What the stream's own detection decides (with the stream's timeout), or why it failed."""
    try:
        return await detect_generation(
            config.socket_url, config.socket_path, timeout_s=config.request_timeout_s
        )
    except ConnectFailed as exc:
        return exc
    except Exception as exc:  # an answer detection did not foresee: the report must still come
        return ConnectFailed(f"socket.io generation: {type(exc).__name__}: {exc}")


def generation_finding(
    detected: Detected | ConnectFailed, configured: str, connected_with: str | None
) -> Finding:
    """The detected generation, against `exchange.socketio_protocol` and the connection made.

    `connected_with` is the generation of the stream's first connection (`Connected`), None
    when it made none.
    """
    key = "socket.generation"
    details: dict[str, Any] = {"configured": configured, "connected_with": connected_with}
    connected = (
        f'the stream connected with "{connected_with}"'
        if connected_with is not None
        else "the stream did not connect (see socket.events)"
    )
    if isinstance(detected, ConnectFailed):
        details |= {"protocol": None, "error": str(detected)}
        if configured != "auto":
            text = f"not detected ({detected}); socketio_protocol = {configured!r}: {connected}"
            return Finding(key, "warn", text, details)
        # "auto" connects only after detection; a server that failed it here may have passed
        # it for the stream a moment later, but none that fails it for good can be recorded.
        outcome: Outcome = "warn" if connected_with is not None else "fail"
        return Finding(key, outcome, f"{detected}; {connected}", details)
    details |= {
        "protocol": detected.protocol,
        "socket_io": SERVERS[detected.protocol],
        "how": detected.how,
        "websocket_only": detected.websocket_only,
        "ping_interval_ms": detected.ping_interval_ms,
        "ping_timeout_ms": detected.ping_timeout_ms,
        "error": None,
    }
    text = f'"{detected.protocol}": {SERVERS[detected.protocol]}; detected by: {detected.how}'
    if detected.websocket_only:
        text += " (long-polling refused: websocket only)"
    if detected.ping_interval_ms is not None:
        text += (
            f"; ping every {detected.ping_interval_ms} ms, timeout {detected.ping_timeout_ms} ms"
        )
    if configured not in ("auto", detected.protocol):
        text += f"; but socketio_protocol = {configured!r} is set: {connected}"
        return Finding(key, "warn", text, details)
    if connected_with is not None and connected_with != detected.protocol:
        # The stream detected again before connecting, and was told otherwise: the server
        # changed in between, or one address leads to servers of both generations.
        text += f"; but {connected}: the server answered its detection otherwise"
        return Finding(key, "warn", text, details)
    return Finding(key, "ok", f"{text}; {connected}", details)

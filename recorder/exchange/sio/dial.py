"""A new socket.io connection of the generation the exchange speaks.

With `exchange.socketio_protocol = "auto"` the generation is asked of the server (`detect`)
before the first connection, then remembered: detection costs an HTTP request, and a
reconnect should be as fast as a connect can be. The stream forgets it (`failed()`) when a
connection fails to connect or ends before receiving anything (a client of the wrong
generation may be accepted, then dropped at its first heartbeat), so a server upgraded while
we were away is asked again at the next attempt.
"""

from __future__ import annotations

from dataclasses import dataclass

from recorder.exchange.sio.connection import Connection, Generation, OnEvent, OnOpen
from recorder.exchange.sio.detect import Detected, detect_generation
from recorder.exchange.sio.v2 import SocketIO2Connection
from recorder.exchange.sio.v4 import SocketIO4Connection
from recorder.logs import get_logger

log = get_logger(__name__)


@dataclass
class Dialer:
    socket_url: str
    socket_path: str
    socketio_protocol: str
    """"auto", "2" or "4"."""
    timeout_s: float
    detected: Detected | None = None
    """What the server said it speaks ("auto"), until a connection of it fails."""

    async def connection(self, on_open: OnOpen, on_event: OnEvent) -> Connection:
        """A connection, not yet connected; `ConnectFailed` if detection fails."""
        websocket_only = self.socket_url.startswith(("ws://", "wss://"))
        protocol: Generation
        if self.socketio_protocol == "auto":
            detected = self.detected
            if detected is None:
                detected = await detect_generation(
                    self.socket_url, self.socket_path, timeout_s=self.timeout_s
                )
                log.info(
                    "socket.io generation detected",
                    url=self.socket_url,
                    protocol=detected.protocol,
                    how=detected.how,
                )
                self.detected = detected
            protocol = detected.protocol
            websocket_only = websocket_only or detected.websocket_only
        else:
            protocol = "2" if self.socketio_protocol == "2" else "4"
        if protocol == "2":
            return SocketIO2Connection(
                self.socket_url,
                path=self.socket_path,
                timeout_s=self.timeout_s,
                on_open=on_open,
                on_event=on_event,
            )
        return SocketIO4Connection(
            self.socket_url,
            path=self.socket_path,
            timeout_s=self.timeout_s,
            on_open=on_open,
            on_event=on_event,
            websocket_only=websocket_only,
        )

    def failed(self) -> None:
        """A connection could not connect: ask the server again next time."""
        self.detected = None

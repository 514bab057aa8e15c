"""socket.io packets decoded exactly, each event's JSON text kept verbatim.

python-socketio decodes packets with `json.loads`, which would read `935.23` as a binary
float. `ExactPacket` decodes with `parse.load_json` (every number a Decimal) and hands each
event's JSON text along as a `Received`, so a payload that fails to decode or to classify
can be kept verbatim. Both generations' connections use it: the socket.io packet encoding
of an event (`2["book_BTC_USD",{...}]`) is the same in socket.io 2.x and 4.x; only the
Engine.IO transport under it differs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import socketio  # type: ignore[import-untyped]
from socketio import packet as sio_packet

from recorder.exchange.parse import load_json
from recorder.records import quick_init

EVENT: int = sio_packet.EVENT


class _ExactJson:
    """The json module the packets use: exact decimals in, plain JSON out."""

    def __init__(self) -> None:
        self.text: str | None = None

    def loads(self, text: str, **_: Any) -> Any:
        self.text = text
        return load_json(text)

    @staticmethod
    def dumps(value: Any, **kwargs: Any) -> str:
        # We only send channel names; a Decimal (in a fallback text) is written as a string.
        return json.dumps(value, default=str, **kwargs)


@quick_init
@dataclass(frozen=True, slots=True)
class Received:
    """What the packet layer hands the stream: the decoded arguments and the JSON text."""

    event: Any
    args: list[Any]
    text: str
    error: str | None = None
    """Why the packet could not be decoded; it is then kept as a raw message."""


UNDECODABLE = "\x00undecodable"
"""The event name under which a packet that could not be decoded reaches the handler."""


RESERVED_EVENTS = frozenset(socketio.AsyncClient.reserved_events)
"""Event names the client library handles itself instead of the catch-all handler."""


class ExactPacket(sio_packet.Packet):  # type: ignore[misc]
    """A socket.io packet decoded with exact decimals, its event's JSON text kept."""

    json = _ExactJson()

    def decode(self, encoded_packet: Any) -> int:
        if isinstance(encoded_packet, str) and encoded_packet[:2] == PLAIN_EVENT:
            # The packet of every book event: no namespace, no ack id, no attachments.
            self.packet_type, self.namespace, self.id = sio_packet.EVENT, None, None
            self.data = plain_event(encoded_packet)
            return 0
        self.json = _ExactJson()  # per packet: it remembers the text it decoded
        try:
            attachments: int = super().decode(encoded_packet)
        except Exception as exc:
            text = self.json.text or (encoded_packet if isinstance(encoded_packet, str) else "")
            if not (isinstance(encoded_packet, str) and encoded_packet[:1] == "2"):
                raise
            self.packet_type, self.namespace, self.id = sio_packet.EVENT, None, None
            self.data = [UNDECODABLE, Received(None, [], text, f"undecodable packet: {exc}")]
            return 0
        if self.packet_type == sio_packet.EVENT:
            self.data = _event(self.data, self.json.text or "")
        return attachments


PLAIN_EVENT = "2["
"""How the socket.io packet of an event without namespace, ack id or attachments begins."""


def plain_event(packet: str) -> list[Any]:
    """A `2[...]` packet's data as the catch-all handler takes it: `[name, Received]`.

    `name` is `UNDECODABLE` for a packet that cannot be decoded (`Received.error` says why)
    or whose event name is no usable one.
    """
    text = packet[1:]
    try:
        data = load_json(text)
    except Exception as exc:
        return [UNDECODABLE, Received(None, [], text, f"undecodable packet: {exc}")]
    return _event(data, text)


def _event(data: Any, text: str) -> list[Any]:
    data = data if isinstance(data, list) else [data]
    first = data[0] if data else None
    # An event named like one of the library's own (`disconnect`, `connect`) would run
    # that handler: a server's `2["disconnect"]` would end a healthy session unrecorded.
    # Such a name reaches the catch-all handler, which keeps it raw.
    usable = isinstance(first, str) and first not in RESERVED_EVENTS
    return [first if usable else UNDECODABLE, Received(first, data[1:], text)]


def event_text(event: str, data: Any) -> str:
    """The socket.io packet of an event we send (`2["subscribe","book_BTC_USD"]`)."""
    encoded: str = ExactPacket(EVENT, data=[event, data]).encode()
    return encoded

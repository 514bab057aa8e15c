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
from typing import Any

import socketio  # type: ignore[import-untyped]
from socketio import packet as sio_packet

from recorder.exchange.parse import load_json

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


_PENDING: Any = object()
"""What an undecoded `Received` holds in place of its event until it is read."""


class Received:
    """What the packet layer hands the stream: the decoded arguments and the JSON text.

    `Received.of_text` decodes on first use of `event`, `args` or `error`: with two
    connections every event comes twice, and the stream drops the second copy by its text
    alone (`BookStream.on_event`), so that copy is never decoded.
    """

    __slots__ = ("_args", "_error", "_event", "text")

    def __init__(self, event: Any, args: list[Any], text: str, error: str | None = None) -> None:
        self._event = event
        self._args = args
        self.text = text
        self._error = error

    @classmethod
    def of_text(cls, text: str) -> Received:
        """The arguments of an event packet's JSON text (`["book_BTC_USD",{...}]`), decoded
        when first asked for; `error` says why if they cannot be."""
        return cls(_PENDING, [], text)

    @property
    def event(self) -> Any:
        """The first argument (the event name as sent); None if undecodable."""
        if self._event is _PENDING:
            self._decode()
        return self._event

    @property
    def args(self) -> list[Any]:
        if self._event is _PENDING:
            self._decode()
        return self._args

    @property
    def error(self) -> str | None:
        """Why the packet could not be decoded; it is then kept as a raw message."""
        if self._event is _PENDING:
            self._decode()
        return self._error

    def _decode(self) -> None:
        try:
            data = load_json(self.text)
        except Exception as exc:
            self._event, self._error = None, f"undecodable packet: {exc}"
            return
        data = data if isinstance(data, list) else [data]
        self._event = data[0] if data else None
        self._args = data[1:]

    def _fields(self) -> tuple[Any, list[Any], str, str | None]:
        return (self.event, self.args, self.text, self.error)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Received):
            return NotImplemented
        return self._fields() == other._fields()

    __hash__ = None  # type: ignore[assignment]  # equal by value, and its args are a list

    def __repr__(self) -> str:
        fields = f"event={self.event!r}, args={self.args!r}, text={self.text!r}"
        return f"Received({fields}, error={self.error!r})"


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
    return _named(Received.of_text(packet[1:]))


def _event(data: Any, text: str) -> list[Any]:
    data = data if isinstance(data, list) else [data]
    return _named(Received(data[0] if data else None, data[1:], text))


def _named(received: Received) -> list[Any]:
    first = received.event
    # An event named like one of the library's own (`disconnect`, `connect`) would run
    # that handler: a server's `2["disconnect"]` would end a healthy session unrecorded.
    # Such a name reaches the catch-all handler, which keeps it raw.
    usable = received.error is None and isinstance(first, str) and first not in RESERVED_EVENTS
    return [first if usable else UNDECODABLE, received]


def event_text(event: str, data: Any) -> str:
    """The socket.io packet of an event we send (`2["subscribe","book_BTC_USD"]`)."""
    encoded: str = ExactPacket(EVENT, data=[event, data]).encode()
    return encoded

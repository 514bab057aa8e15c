"""The JSON the simulator sends: the docs' shapes, with Decimal values written exactly.

The standard `json` module can only write a Decimal through a float, which would change
the value (and the recorder must store exactly what the exchange sent). `dumps` writes a
Decimal's own digits as a JSON number literal instead. Where the docs show a number as a
string (`"936.00"` in a socket trade, `"1"` as a single order's status) the payload
builders below put a string.

Which field of a cancel names the cancelled order is not in the docs; the simulator speaks
either reading (`SimSettings.cancel_id`): under `oid` the payload's `oid` is the cancelled
order and `cancel_order_id` the cancel's own id, under `cancel_order_id` the other way round.

`SocketPacket` is a python-socketio packet class whose JSON is this module's, so socket
payloads get the same treatment. It is passed as the server's `serializer`, not as its
`json` argument: that one would replace the JSON module of every socket.io client and server
in the process (the recorder's own client under test included).
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import socketio  # type: ignore[import-untyped]

from recorder.book import Reading
from recorder.sim.candles import Candle
from recorder.sim.engine import Cancel, Event, Fill, NewOrder, Order

_encode_string = json.encoder.encode_basestring_ascii


def number(value: Decimal) -> str:
    """A Decimal as a JSON number literal, digits as they are (no exponent, no float)."""
    return format(value, "f")


def dumps(value: Any) -> str:
    """JSON text of dicts, lists, strings, ints, bools, None and Decimals (as numbers)."""
    parts: list[str] = []
    _write(value, parts)
    return "".join(parts)


def _write(value: Any, out: list[str]) -> None:
    if isinstance(value, str):
        out.append(_encode_string(value))
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif value is None:
        out.append("null")
    elif isinstance(value, Decimal):
        out.append(number(value))
    elif isinstance(value, int):
        out.append(str(value))
    elif isinstance(value, dict):
        out.append("{")
        for index, (key, item) in enumerate(value.items()):
            if index:
                out.append(",")
            out.append(_encode_string(str(key)))
            out.append(":")
            _write(item, out)
        out.append("}")
    elif isinstance(value, list | tuple):
        out.append("[")
        for index, item in enumerate(value):
            if index:
                out.append(",")
            _write(item, out)
        out.append("]")
    elif isinstance(value, float):
        out.append(json.dumps(value))
    else:
        raise TypeError(f"cannot write {type(value).__name__} as JSON")


class _SocketJson:
    """python-socketio's pluggable `json` module: exact Decimals out, Decimals in."""

    @staticmethod
    def dumps(value: Any, **_kwargs: Any) -> str:
        return dumps(value)

    @staticmethod
    def loads(text: str | bytes, **_kwargs: Any) -> Any:
        return json.loads(text, parse_float=Decimal)


class SocketPacket(socketio.packet.Packet):  # type: ignore[misc]
    json = _SocketJson


# --- payloads, as the docs show them -------------------------------------------------------


def new_order_payload(event: NewOrder) -> dict[str, Any]:
    """The socket.io new-order event (trade price and amount as strings, as in the docs)."""
    return {
        "success": True,
        "date": event.date,
        "oid": event.oid,
        "type": event.type,
        "price": event.price,
        "amount": event.amount,
        "trades": [
            {
                "tid": t.tid,
                "type": t.type,
                "price": str(t.price),
                "amount": str(t.amount),
                "o_id": t.o_id,
            }
            for t in event.trades
        ],
    }


def created_order_payload(event: NewOrder) -> dict[str, Any]:
    """The answer to POST /order/: the socket payload, but trade numbers as numbers."""
    payload = new_order_payload(event)
    payload["trades"] = [
        {"type": t.type, "price": t.price, "o_id": t.o_id, "amount": t.amount, "tid": t.tid}
        for t in event.trades
    ]
    return payload


def book_payload(event: Event, cancel_id: Reading = "oid") -> dict[str, Any]:
    """The socket.io payload of a book event (a cancel as read by `cancel_id`)."""
    if isinstance(event, Cancel):
        return cancel_payload(event, cancel_id)
    return new_order_payload(event)


def cancel_ids(event: Cancel, cancel_id: Reading = "oid") -> tuple[int, int]:
    """`oid` and `cancel_order_id` as the payload states them: `cancel_id` is the field that
    names the cancelled order, the other carries the cancel's own id."""
    if cancel_id == "oid":
        return event.oid, event.cancel_order_id
    return event.cancel_order_id, event.oid


def cancel_payload(event: Cancel, cancel_id: Reading = "oid") -> dict[str, Any]:
    oid, cancel_order_id = cancel_ids(event, cancel_id)
    return {
        "success": True,
        "date": event.date,
        "oid": oid,
        "cancel_order_id": cancel_order_id,
        "price": event.price,
        "type": event.type,
        "amount": event.amount,
        "pair": event.pair,
        "cancelled": True,
    }


def order_payload(order: Order, *, status_as_string: bool) -> dict[str, Any]:
    """An order as `/order/<pk>/` (status "1") or `/orders/own/` (status 3) shows it.

    `amount` is the amount the order was placed with, whatever has been filled since.
    """
    return {
        "amount": order.original_amount,
        "pair": order.pair,
        "type": order.side,
        "status": str(order.status) if status_as_string else order.status,
        "price": order.price,
        "id": order.oid,
    }


def trade_payload(trade: Fill) -> dict[str, Any]:
    return {
        "id": trade.tid,
        "price": trade.price,
        "pair": trade.pair,
        "type": trade.type,
        "timestamp": trade.timestamp,
        "amount": trade.amount,
    }


def candle_payload(candle: Candle) -> dict[str, Any]:
    return {
        "volume": candle.volume,
        "high": candle.high,
        "low": candle.low,
        "close": candle.close,
        "time": candle.time,
        "open": candle.open,
    }

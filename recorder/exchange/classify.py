"""Sort one socket.io event into a book update (new order + fills, or cancel) or a raw message.

Pure and total: whatever arrives, the answer is a record, never an exception, because one
odd payload must not stop the stream. What does not fit DESIGN §2's two shapes becomes a
`RawMessage` holding the verbatim text and the reason, for `raw_messages`.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from recorder.exchange.parse import Fields, ParseError, new_order_from
from recorder.records import BookEvent, BookFill, RawMessage, new_id

CHANNEL_PREFIX = "book_"
SOURCE = "socket"
_PAIR = re.compile(r"[A-Za-z0-9]+_[A-Za-z0-9]+")


@dataclass(frozen=True, slots=True)
class BookUpdate:
    """One book event of the stream; `fills` is empty for a cancel."""

    event: BookEvent
    fills: tuple[BookFill, ...]


def channel(pair: str) -> str:
    """The socket.io channel (and event name) of a pair's book: `book_BTC_USD`."""
    return CHANNEL_PREFIX + pair


def pair_of(event: Any) -> str:
    """The pair of a `book_<pair>` event name; ParseError for any other event."""
    if isinstance(event, str) and event.startswith(CHANNEL_PREFIX):
        pair = event.removeprefix(CHANNEL_PREFIX)
        if _PAIR.fullmatch(pair):
            return pair
    raise ParseError(f"unknown event {str(event)[:60]!r}")


def classify(
    event: Any,
    args: Sequence[Any],
    *,
    payload_text: str,
    received_at: datetime,
    session_id: uuid.UUID,
) -> BookUpdate | RawMessage:
    """`event` and its decoded arguments -> a `BookUpdate`, or a `RawMessage` saying why not."""
    try:
        return _book_update(event, args, received_at, session_id)
    except ParseError as exc:
        reason = str(exc)
    except Exception as exc:  # a payload we did not foresee must still not stop the stream
        reason = f"unexpected {type(exc).__name__}: {exc}"
    return RawMessage(
        id=new_id(),
        received_at=received_at,
        source=SOURCE,
        event=printable(str(event)[:200]) if event is not None else None,
        payload=payload_text,
        error=reason,
    )


def printable(text: str) -> str:
    """`text` with what a text column cannot hold (NUL, lone surrogates) written as escapes.

    The event name is any JSON string the server sent; kept as it was, a lone surrogate in
    it made the raw message itself unwritable (found by fuzzing: it stalled the writer).
    """
    return text.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")


def _book_update(
    event: Any, args: Sequence[Any], received_at: datetime, session_id: uuid.UUID
) -> BookUpdate:
    pair = pair_of(event)
    if len(args) != 1:
        raise ParseError(f"expected one payload object, got {len(args)} arguments")
    f = Fields(args[0], "")
    if "success" in f.data and f.data["success"] is not True:
        raise ParseError(f"success: {f.data['success']!r}, expected true")
    cancelled = f.data.get("cancelled", False)
    if cancelled is True:
        return BookUpdate(_cancel(f, pair, received_at, session_id), ())
    if cancelled is not False:
        raise ParseError(f"cancelled: expected a boolean, got {cancelled!r}"[:120])
    order = new_order_from(f, pair=pair, received_at=received_at)
    event_record = BookEvent(
        pair=pair,
        oid=order.oid,
        kind="new",
        ts=order.ts,
        type=order.type,
        price=order.price,
        amount=order.amount,
        cancel_order_id=None,
        received_at=received_at,
        session_id=session_id,
    )
    return BookUpdate(event_record, order.fills)


def _cancel(f: Fields, pair: str, received_at: datetime, session_id: uuid.UUID) -> BookEvent:
    if f.has("pair") and f.data["pair"] != pair:
        raise ParseError(f"pair: {str(f.data['pair'])[:40]!r} on channel {channel(pair)!r}")
    return BookEvent(
        pair=pair,
        oid=f.int("oid"),
        kind="cancel",
        ts=f.timestamp("date"),
        type=f.side("type"),
        price=f.decimal("price"),
        amount=f.decimal("amount"),
        cancel_order_id=f.int("cancel_order_id"),
        received_at=received_at,
        session_id=session_id,
    )

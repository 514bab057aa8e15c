"""Sort one socket.io event into a book update (new order + fills, or cancel) or a raw message.

Pure and total: whatever arrives, the answer is a record, never an exception, because one
odd payload must not stop the stream. What does not fit the docs' two shapes (a new order
with the trades it made, a cancel) becomes a `RawMessage` holding the verbatim text and the
reason, for `raw_messages`.

Which pair an event is about: the exchange's docs name the channels to subscribe
(`book_<pair>`) but not the event name their payloads arrive under, nor do new-order
payloads carry their pair. So a book payload is accepted under any event name, and its pair
is the first of these that tells one:

1. the event name: the channel's own (`book_BTC_USD`), or a bare pair (`BTC_USD`) that the
   connection subscribed;
2. a channel named in a leading string argument, the `(event, channel, data)` shape of Node
   broadcasters built on rooms (Laravel Echo Server: `emit("orderbook", "book_BTC_USD", {...})`);
3. the payload's own `pair` field (the docs' cancel sample has one);
4. the connection's one subscribed pair, when it subscribed exactly one.

A later source that contradicts an earlier one (a payload's `pair` unlike its channel) makes
the event raw: one of them is wrong, and guessing which would file it under the wrong book.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from recorder.exchange.parse import Fields, ParseError, new_order_from
from recorder.records import (
    BookEvent,
    BookFill,
    RawMessage,
    is_listed_pair_name,
    is_pair_name,
    new_id,
    quick_init,
)

CHANNEL_PREFIX = "book_"
SOURCE = "socket"


@quick_init
@dataclass(frozen=True, slots=True)
class BookUpdate:
    """One book event of the stream; `fills` is empty for a cancel.

    `event_name` is the socket.io event it arrived under, verbatim (what `recorder probe`
    reports: the docs do not say it).
    """

    event: BookEvent
    fills: tuple[BookFill, ...]
    event_name: str


def channel(pair: str) -> str:
    """The socket.io channel of a pair's book: `book_BTC_USD`."""
    return CHANNEL_PREFIX + pair


def pair_of(event: Any) -> str:
    """The pair of a `book_<pair>` event name; ParseError for any other event."""
    if isinstance(event, str) and event.startswith(CHANNEL_PREFIX):
        pair = event.removeprefix(CHANNEL_PREFIX)
        if is_pair_name(pair):
            return pair
    raise ParseError(f"unknown event {str(event)[:60]!r}")


def named_pair(name: Any, subscribed: frozenset[str] = frozenset()) -> str | None:
    """The pair a channel or event name stands for, or None.

    `book_<pair>` always names its pair; a bare pair name only when the connection
    subscribed that pair, or, with `subscribed` empty (not known), when it is written as
    the exchange writes pairs.
    """
    if not isinstance(name, str):
        return None
    if name.startswith(CHANNEL_PREFIX):
        pair = name.removeprefix(CHANNEL_PREFIX)
        return pair if is_pair_name(pair) else None
    if subscribed:
        return name if name in subscribed and is_pair_name(name) else None
    # Not knowing the subscribed pairs, a bare name is read as a pair only when written as
    # the exchange writes its pairs: `BTC_USD`, not `order_book`.
    return name if is_listed_pair_name(name) else None


def classify(
    event: Any,
    args: Sequence[Any],
    *,
    payload_text: str,
    received_at: datetime,
    session_id: uuid.UUID,
    subscribed: frozenset[str] = frozenset(),
) -> BookUpdate | RawMessage:
    """`event` and its decoded arguments -> a `BookUpdate`, or a `RawMessage` saying why not.

    `subscribed`: the pairs the connection subscribed (empty: not known), which decides
    whether a bare pair name is one (rule 1 above) and which pair rule 4 falls back to.
    """
    try:
        return _book_update(event, args, received_at, session_id, subscribed)
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
    it would make the raw message itself unwritable, and raw messages are what must always
    be written.
    """
    return text.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")


def _book_update(
    event: Any,
    args: Sequence[Any],
    received_at: datetime,
    session_id: uuid.UUID,
    subscribed: frozenset[str],
) -> BookUpdate:
    if not isinstance(event, str):
        raise ParseError(f"unknown event {str(event)[:60]!r}: its name is not a string")
    pair = named_pair(event, subscribed)
    payloads = list(args)
    if len(payloads) >= 2:
        # `(event, channel, data)`: the channel comes first, the payload after it
        by_channel = named_pair(payloads[0], subscribed)
        if by_channel is not None:
            if pair is not None and by_channel != pair:
                raise ParseError(f"channel {str(payloads[0])[:40]!r} under event {event[:60]!r}")
            pair = by_channel
            payloads = payloads[1:]
    if len(payloads) != 1:
        if pair is None and len(subscribed) != 1:
            raise _unattributed(event)
        reason = f"expected one payload object, got {len(payloads)} arguments"
        raise ParseError(reason if pair is not None else f"unknown event {event[:60]!r}: {reason}")
    f = Fields(payloads[0], "")
    if f.has("pair"):
        said = f.data["pair"]
        if pair is not None and said != pair:
            raise ParseError(f"pair: {str(said)[:40]!r} on channel {channel(pair)!r}")
        if not is_pair_name(said):
            raise ParseError(f"pair: not a pair name: {str(said)[:40]!r}")
        pair = said
    if pair is not None:
        return _update(f, pair, event, received_at, session_id)
    if len(subscribed) != 1:
        raise _unattributed(event)
    (only,) = subscribed
    try:
        return _update(f, only, event, received_at, session_id)
    except ParseError as exc:
        # Nothing in it named a pair: it may be no book event at all (a ticker, a notice),
        # so the reason names the event before what did not fit.
        raise ParseError(
            f"unknown event {event[:60]!r}, read as {only}'s (the one subscribed pair): {exc}"
        ) from None


def _unattributed(event: str) -> ParseError:
    return ParseError(
        f"unknown event {event[:60]!r}: cannot tell the pair (no subscribed channel in its "
        "name, no channel argument, no pair field in the payload)"
    )


def _update(
    f: Fields, pair: str, event_name: str, received_at: datetime, session_id: uuid.UUID
) -> BookUpdate:
    if "success" in f.data and f.data["success"] is not True:
        raise ParseError(f"success: {f.data['success']!r}, expected true")
    cancelled = f.data.get("cancelled", False)
    if cancelled is True:
        return BookUpdate(_cancel(f, pair, received_at, session_id), (), event_name)
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
    return BookUpdate(event_record, order.fills, event_name)


def _cancel(f: Fields, pair: str, received_at: datetime, session_id: uuid.UUID) -> BookEvent:
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

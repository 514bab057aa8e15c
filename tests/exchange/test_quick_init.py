"""`records.quick_init`: the faster `__init__` of the event path's records changes nothing
else about them (frozen, equal, hashable, defaults, `dataclasses.replace`)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from decimal import Decimal

import pytest

from recorder.exchange.sio.packets import Received
from recorder.records import BookEvent, BookFill, new_id, quick_init, utc_now


def event_fields() -> dict[str, object]:
    now = utc_now()
    return {
        "pair": "BTC_USD",
        "oid": 15234,
        "kind": "new",
        "ts": now,
        "type": "sell",
        "price": Decimal("935.23"),
        "amount": Decimal("1E-8"),
        "cancel_order_id": None,
        "received_at": now,
        "session_id": new_id(),
    }


@dataclass(frozen=True, slots=True)
class _Reference:
    """What dataclasses itself makes of BookEvent's fields: the record to compare with."""

    pair: str
    oid: int
    kind: str
    ts: object
    type: str
    price: Decimal
    amount: Decimal
    cancel_order_id: int | None
    received_at: object
    session_id: object


def test_a_record_holds_what_it_was_given_by_keyword_or_position() -> None:
    given = event_fields()
    by_keyword = BookEvent(**given)  # type: ignore[arg-type]
    by_position = BookEvent(*given.values())  # type: ignore[arg-type]
    assert by_keyword == by_position
    assert hash(by_keyword) == hash(by_position)
    assert dataclasses.astuple(by_keyword) == dataclasses.astuple(_Reference(**given))  # type: ignore[arg-type]
    assert repr(by_keyword).startswith("BookEvent(pair='BTC_USD', oid=15234, kind='new'")


def test_a_record_stays_frozen_and_replace_still_works() -> None:
    event = BookEvent(**event_fields())  # type: ignore[arg-type]
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.price = Decimal(1)  # type: ignore[misc]
    changed = dataclasses.replace(event, oid=1)
    assert (changed.oid, changed.price, event.oid) == (1, event.price, 15234)


def test_missing_or_unknown_arguments_are_refused_as_before() -> None:
    given = event_fields()
    del given["session_id"]
    with pytest.raises(TypeError, match="session_id"):
        BookEvent(**given)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="surplus"):
        BookFill(surplus=1)  # type: ignore[call-arg]


def test_defaults_are_kept() -> None:
    received = Received("book_BTC_USD", [], "[]")
    assert received.error is None
    assert Received(None, [], "x", "why").error == "why"


def test_a_default_factory_is_refused() -> None:
    @dataclass(frozen=True, slots=True)
    class WithFactory:
        items: list[int] = field(default_factory=list)

    with pytest.raises(TypeError, match="default_factory"):
        quick_init(WithFactory)

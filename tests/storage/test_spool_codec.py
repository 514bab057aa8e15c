"""The spool's encoding loses nothing: every record comes back equal, decimals exact."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from recorder import records as r
from recorder.storage.spool import decode, encode
from tests.storage.records_factory import one_of_each

decimals = st.decimals(allow_nan=False, allow_infinity=False)
times = st.datetimes(timezones=st.just(UTC))


def test_every_record_type_round_trips() -> None:
    for record in one_of_each():
        assert decode(encode(record)) == record


@given(price=decimals, amount=decimals, ts=times, tid=st.integers(0, 2**63 - 1))
def test_trades_round_trip_exactly(price: Decimal, amount: Decimal, ts: datetime, tid: int) -> None:
    record = r.Trade(
        pair="BTC_USD", tid=tid, ts=ts, type="sell", price=price, amount=amount, received_at=ts
    )
    back = decode(encode(record))
    assert back == record
    assert str(back.price) == str(price)  # same digits and exponent, not just equal value


@given(cancel=st.none() | st.integers(0, 2**62), payload=st.text())
def test_optional_fields_and_any_text_round_trip(cancel: int | None, payload: str) -> None:
    event = r.BookEvent(
        pair="BTC_USD", oid=1, kind="cancel", ts=datetime(2024, 1, 1, tzinfo=UTC), type="buy",
        price=Decimal("1"), amount=Decimal("2"), cancel_order_id=cancel,
        received_at=datetime(2024, 1, 1, tzinfo=UTC), session_id=uuid.uuid4(),
    )  # fmt: skip
    assert decode(encode(event)) == event
    raw = r.RawMessage(
        id=uuid.uuid4(), received_at=datetime(2024, 1, 1, tzinfo=UTC), source="socket",
        event=None, payload=payload, error="x",
    )  # fmt: skip
    assert decode(encode(raw)) == raw

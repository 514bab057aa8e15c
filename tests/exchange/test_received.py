"""`Received.of_text`: an event packet's JSON text, decoded when first read, so that the
stream drops a second connection's copy of an event without decoding it."""

from __future__ import annotations

from decimal import Decimal

import pytest

from recorder.exchange.classify import BookUpdate
from recorder.exchange.sio import packets
from recorder.exchange.sio.packets import UNDECODABLE, Received, plain_event
from recorder.exchange.stream import BookStream
from recorder.records import RawMessage, StreamSession, utc_now
from tests.exchange.streams import NEW_ORDER, assert_same_event

TEXT = f'["book_BTC_USD",{NEW_ORDER}]'


def test_a_text_decodes_exactly_when_read() -> None:
    got = Received.of_text(TEXT)
    assert got.text == TEXT
    assert (got.event, got.error) == ("book_BTC_USD", None)
    (payload,) = got.args
    assert payload["price"] == Decimal("935.23")
    assert str(payload["amount"]) == "1E-8"


@pytest.mark.parametrize("text", ['["book_BTC_USD",{"oid": 1', "[NaN]", '["x", ' + "9" * 61 + "]"])
def test_an_undecodable_text_says_why(text: str) -> None:
    got = Received.of_text(text)
    assert (got.event, got.args, got.text) == (None, [], text)
    assert got.error is not None
    assert got.error.startswith("undecodable packet: ")
    assert plain_event("2" + text) == [UNDECODABLE, got]


def test_plain_event_names_the_event_or_keeps_it_from_the_library() -> None:
    name, got = plain_event("2" + TEXT)
    assert (name, got.event) == ("book_BTC_USD", "book_BTC_USD")
    name, got = plain_event('2["disconnect",{}]')
    assert (name, got.event, got.args) == (UNDECODABLE, "disconnect", [{}])


def stream_of_two() -> BookStream:
    stream = BookStream("http://127.0.0.1:1", pairs=["BTC_USD"], connections=2)
    for link in stream._links:  # as if both connections were up and subscribed
        link.session = StreamSession(link.session_id, utc_now(), None, None)
        link.heard = frozenset(["BTC_USD"])
    return stream


def test_the_second_connections_copy_is_never_decoded(monkeypatch: pytest.MonkeyPatch) -> None:
    decoded: list[str] = []
    load_json = packets.load_json

    def counting(text: str | bytes) -> object:
        decoded.append(str(text))
        return load_json(text)

    monkeypatch.setattr(packets, "load_json", counting)
    stream = stream_of_two()
    first, second = stream._links
    stream.on_event(first, Received.of_text(TEXT))
    stream.on_event(second, Received.of_text(TEXT))
    assert decoded == [TEXT]
    update = stream.items.get_nowait()
    assert isinstance(update, BookUpdate)
    assert_same_event(update, NEW_ORDER, "BTC_USD")
    assert stream.items.empty()
    assert (first.received, second.received) == (1, 1)


def test_an_undecodable_text_on_both_connections_is_one_raw_message() -> None:
    stream = stream_of_two()
    first, second = stream._links
    text = '["book_BTC_USD",{"oid": 1'
    stream.on_event(first, Received.of_text(text))
    stream.on_event(second, Received.of_text(text))
    raw = stream.items.get_nowait()
    assert isinstance(raw, RawMessage)
    assert raw.payload == text
    assert raw.error is not None
    assert "undecodable" in raw.error
    assert stream.items.empty()

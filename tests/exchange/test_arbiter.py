"""The first copy of each event is kept, later copies dropped, and memory stays small."""

from __future__ import annotations

from recorder.exchange.arbiter import NOT_A_COPY, Arbiter
from tests.harness.fakeclock import FakeClock


def test_the_first_copy_wins_and_every_later_copy_is_dropped() -> None:
    arbiter = Arbiter()
    assert arbiter.first(("BTC_USD", 1, "new"), others=2)
    assert not arbiter.first(("BTC_USD", 1, "new"), others=2)
    assert not arbiter.first(("BTC_USD", 1, "new"), others=2)
    assert arbiter.first(("BTC_USD", 1, "cancel"), others=2)  # another event of that order
    assert arbiter.first(("ETH_USD", 1, "new"), others=2)  # another pair's
    assert arbiter.duplicates == 2


def test_an_identity_is_forgotten_once_every_other_connection_delivered_it() -> None:
    arbiter = Arbiter()
    for oid in range(1000):
        assert arbiter.first(oid, others=1)
        assert not arbiter.first(oid, others=1)
    assert len(arbiter) == 0


def test_copies_that_never_come_are_forgotten_after_the_window() -> None:
    clock = FakeClock()
    arbiter = Arbiter(window_s=60.0, clock=clock.monotonic)
    for oid in range(100):
        arbiter.first(oid, others=1)  # the other connection dropped: no copy comes
    assert len(arbiter) == 100
    clock.advance(61)
    arbiter.first("later", others=1)
    assert len(arbiter) == 1


def test_alone_nothing_is_remembered() -> None:
    arbiter = Arbiter()
    assert arbiter.first(1, others=0)
    assert len(arbiter) == 0


def test_a_copy_found_by_its_text_gives_what_the_first_copy_said() -> None:
    arbiter = Arbiter()
    text = '["book_BTC_USD", {"oid": 1}]'
    assert arbiter.copy(text) is NOT_A_COPY
    assert arbiter.first(("BTC_USD", 1, "new"), others=1)
    assert arbiter.first(text, others=1, value=("BTC_USD", 1, "new"))
    assert arbiter.copy(text) == ("BTC_USD", 1, "new")
    assert arbiter.expected(("BTC_USD", 1, "new")) is None  # the identity, once
    assert arbiter.duplicates == 1
    assert len(arbiter) == 0


def test_an_event_remembered_with_its_text_is_a_copy_by_either_key() -> None:
    arbiter = Arbiter()
    identity, text = ("BTC_USD", 1, "new"), '["book_BTC_USD", {"oid": 1}]'
    assert arbiter.first(identity, others=2, text=text, value="ts")
    assert arbiter.copy(text) == (identity, "ts")  # the second connection's copy, same text
    assert arbiter.expected(identity) is None
    assert not arbiter.first(identity, others=2, text=text, value="ts")  # the third's, other text
    assert arbiter.duplicates == 2
    assert arbiter.copy(text) == (identity, "ts")  # its text still expected once
    assert arbiter.copy(text) is NOT_A_COPY
    assert arbiter.copy(identity) is NOT_A_COPY

"""Garbage end to end: the real daemon, a loopback exchange over real sockets, real PostgreSQL.

Each hypothesis example starts the whole daemon (`Daemon.run`, in-process) against the
loopback exchange of `tests/exchange/loopback.py`, delivers a generated mix of valid and
damaged input, and then checks what reached the database:

- socket: valid book events, damaged ones, any JSON, events named like the library's own
  (`disconnect`), text cut or spliced, as raw socket.io packets; every event classified as a
  book update is stored exactly (events and fills, first write wins), every other one is in
  `raw_messages` verbatim (source `socket`) and counted in
  `recorder_malformed_messages_total{source="socket"}`, nothing else is in the tables, and
  the stream never reconnected because of what it received.
- REST: damaged answers with status 200 to currencies, pairs, order book, trades and chart
  requests, each served once among good ones; every one is in `raw_messages` verbatim
  (source `rest`, the endpoint as `event`) and counted, the tables hold only the good
  answers' rows, and the trade that follows the garbage is recorded.
- private (with API keys): the same for wallets, own orders and trades, deposits and
  withdrawals; the account tables hold only the good answers' rows.

PostgreSQL's text cannot hold NUL: a payload with one is kept by the writer instead (source
`writer`), as the record's JSON, from which the verbatim text decodes back.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, example, given, reject, settings
from hypothesis import strategies as st

from recorder.config import load_config
from recorder.daemon import Daemon
from recorder.exchange import parse
from recorder.exchange.classify import BookUpdate, classify
from recorder.exchange.stream import ExactPacket, Received
from recorder.records import RawMessage
from recorder.retry import Backoff
from recorder.storage.spool import decode
from recorder.supervisor import Supervisor
from tests.exchange.loopback import FakeExchange, Fault
from tests.fuzz import strategies as fz
from tests.harness.config import write_config
from tests.harness.daemon import start_daemon, stop_daemon
from tests.harness.metrics import sample
from tests.harness.postgres import empty_tables, query
from tests.harness.waiting import eventually

PAIR = "BTC_USD"
BOOK = json.dumps(
    {
        "sell": [{"price": "101.5", "id": 7, "amount": "2", "timestamp": 1700000000.5}],
        "buy": [{"price": "99", "id": 8, "amount": "1.25", "timestamp": 1700000001}],
    }
)
CURRENCIES = '[{"sign": "$", "short_name": "USD"}, {"sign": "B", "short_name": "BTC"}]'
PAIRS = ('[{"name": "BTC_USD", "currency1": "BTC", "currency2": "USD", "price_precision": 2, '
         '"minimum_order_size": "0.001", "maximum_order_size": "1000"}]')  # fmt: skip
ROUTES = {
    "currencies": ("/api/v1/currencies/", CURRENCIES),
    "pairs": ("/api/v1/pairs/", PAIRS),
    "orderbook": (f"/api/v1/orderbook/{PAIR}/", BOOK),
    "chart": (f"/api/charts/{PAIR}/1/chart", "[]"),
    "exchanges": ("/api/v1/exchanges/", None),  # the loopback's growing tape
}
NOW = datetime(2026, 1, 1, tzinfo=UTC)

PIPELINE = settings(
    max_examples=fz.examples(4, "RECORDER_FUZZ_PIPELINE_EXAMPLES"),
    deadline=None,
    # No shrinking: each example runs the daemon for seconds; the failing one is printed.
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
    suppress_health_check=list(HealthCheck),
)


def metric(source: str) -> float:
    return sample("recorder_malformed_messages_total", source=source)


def daemon_for(exchange: FakeExchange, dsn: str, data_dir: Path, *, keys: bool = False) -> Daemon:
    secrets = {"api_key": "fuzz-key", "api_secret": "fuzz-secret"} if keys else {}
    config = write_config(
        data_dir / "recorder.toml",
        base_url=exchange.url,
        dsn=dsn,
        data_dir=data_dir / "data",
        exchange={**secrets, "request_timeout_s": 5},
        recorder={
            "pairs": [PAIR],
            "candle_types": ["1"],
            "snapshot_interval_s": 0.3,
            "trades_poll_interval_s": 0.2,
            "candles_poll_interval_s": 0.3,
            "metadata_refresh_s": 0.3,
        },
    )
    daemon = Daemon(load_config(config))
    # Garbage makes sources fail and restart; restart quickly so an example stays short.
    daemon.supervisor = Supervisor(restart=Backoff(initial_s=0.05, max_s=0.2))
    return daemon


def exchange_with_good_answers() -> FakeExchange:
    exchange = FakeExchange()
    for path, body in ROUTES.values():
        if body is not None:
            exchange.bodies[path] = body
    return exchange


def kept_payloads(dsn: str, source: str) -> Counter[tuple[str | None, str]]:
    """(event, payload) of every raw message of `source`; NUL ones come back from the writer."""
    kept: Counter[tuple[str | None, str]] = Counter()
    for src, event, payload in query(dsn, "SELECT source, event, payload FROM raw_messages"):
        if src == "writer":
            record = decode(payload)
            assert isinstance(record, RawMessage), payload
            src, event, payload = record.source, record.event, record.payload
        if src == source:
            kept[(event, payload)] += 1
    return kept


def storable(text: str) -> bool:
    """Text the loopback can send at all (a lone surrogate cannot be encoded)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


# --- the socket ----------------------------------------------------------------------------------

event_names = st.sampled_from(
    ["book_BTC_USD", "book_BTC_USD", "book_BTC_USD", "book_ETH_USD", "disconnect", "connect",
     "connect_error", "__disconnect_final", "\ud800", "\x00", "book_", "message"]
)  # fmt: skip
socket_bodies = st.one_of(
    st.builds(lambda e, v: f"[{fz.render(e)}, {v.text}]", event_names, fz.book_event()),
    st.builds(lambda e, t: f"[{fz.render(e)}, {t}]", event_names,
              fz.damaged(fz.book_event()) | fz.json_anything),
    st.builds(lambda v, t: f'["book_BTC_USD", {v.text}{t}]', fz.book_event(),
              st.sampled_from([", 1", ", {}", ""])),
    fz.book_event().map(lambda v: f'["book_BTC_USD", {v.text}]').flatmap(fz.mutated_text),
).filter(storable)  # fmt: skip


SESSION = parse.new_id()
SENTINEL_OID = 2**62


def expected_from_socket(bodies: list[str]) -> tuple[dict[Any, Any], dict[Any, Any], list[Any]]:
    """What the recorder must store for these packets: events and fills (first write of a key
    wins), and the raw messages, as the stream's own decoding and classifier read them."""
    events: dict[Any, Any] = {}
    fills: dict[Any, Any] = {}
    raw: list[Any] = []
    for body in bodies:
        packet = ExactPacket(encoded_packet="2" + body)
        _, received = packet.data
        assert isinstance(received, Received)
        if received.error is not None:
            raw.append((None, received.text))
            continue
        # the daemon follows one pair: what names no pair is taken for that pair's
        item = classify(received.event, received.args, payload_text=received.text,
                        received_at=NOW, session_id=SESSION,
                        subscribed=frozenset({PAIR}))  # fmt: skip
        if isinstance(item, RawMessage):
            raw.append((item.event, item.payload))
            continue
        assert isinstance(item, BookUpdate)
        e = item.event
        events.setdefault((e.pair, e.oid, e.kind),
                          (e.ts, e.type, e.price, e.amount, e.cancel_order_id))  # fmt: skip
        for f in item.fills:
            fills.setdefault((f.pair, f.tid), (f.oid, f.o_id, f.type, f.price, f.amount, f.ts))
    return events, fills, raw


# Found by this fuzzing: an event named `disconnect` ended a healthy session unrecorded; an
# event name or an id no column can hold stalled the writer (nothing more was committed).
REGRESSIONS = [
    '["disconnect", {}]',
    '["\\ud800", {}]',
    '["book_BTC_USD", {"success": true, "date": 1, "oid": 9223372036854775808, "type": "buy",'
    ' "price": 1, "amount": 1, "trades": []}]',
]


@PIPELINE
@given(bodies=st.lists(socket_bodies, min_size=1, max_size=25))
@example(bodies=REGRESSIONS)
def test_socket_garbage_is_kept_raw_and_recording_goes_on(
    pg_dsn: str, tmp_path_factory: pytest.TempPathFactory, bodies: list[str]
) -> None:
    sentinel = (f'["book_BTC_USD", {{"success": true, "date": 1700000000, "oid": {SENTINEL_OID},'
                ' "type": "buy", "price": "1", "amount": "0", "trades": []}]')  # fmt: skip
    expected_events, expected_fills, expected_raw = expected_from_socket([*bodies, sentinel])
    empty_tables(pg_dsn)
    before = metric("socket")

    async def scenario() -> None:
        exchange = exchange_with_good_answers()
        await exchange.start()
        daemon = daemon_for(exchange, pg_dsn, tmp_path_factory.mktemp("socket"))
        try:
            running = await start_daemon(daemon)
            await eventually(lambda: exchange.subscriptions, what="a subscription")
            for body in [*bodies, sentinel]:
                await exchange.send_raw("2" + body)
            await eventually(
                lambda: query(pg_dsn, "SELECT 1 FROM book_events WHERE oid = %s", SENTINEL_OID),
                what="the valid event after the garbage",
            )
            await stop_daemon(daemon, running)
        finally:
            await exchange.stop()

    asyncio.run(scenario())

    stored_events = {
        (pair, oid, kind): tuple(rest)
        for pair, oid, kind, *rest in query(
            pg_dsn, "SELECT pair, oid, kind, ts, type, price, amount, cancel_order_id "
            "FROM book_events")
    }  # fmt: skip
    stored_fills = {
        (pair, tid): tuple(rest)
        for pair, tid, *rest in query(
            pg_dsn, "SELECT pair, tid, oid, o_id, type, price, amount, ts FROM book_fills")
    }  # fmt: skip
    assert stored_events == expected_events
    assert stored_fills == expected_fills
    assert kept_payloads(pg_dsn, "socket") == Counter(expected_raw)
    assert metric("socket") - before == len(expected_raw)
    # Nothing it received made the stream reconnect: one session per connection (two by
    # default), each closed by the stop.
    assert query(pg_dsn, "SELECT count(*), count(disconnected_at) FROM stream_sessions") == [(2, 2)]


# --- REST --------------------------------------------------------------------------------------

REFUSERS = {
    "currencies": lambda t: parse.parse_currencies(t, NOW),
    "pairs": lambda t: parse.parse_pairs(t, NOW),
    "orderbook": lambda t: parse.parse_orderbook(
        t, pair=PAIR, grouped=False, taken_at=NOW, received_at=NOW, reason="x"
    ),
    "chart": lambda t: parse.parse_candles(t, pair=PAIR, resolution="1", updated_at=NOW),
    "exchanges": lambda t: parse.parse_trades(t, NOW, PAIR),
}
VALID_OF = {
    "currencies": fz.currencies(),
    "pairs": fz.pairs(),
    "orderbook": fz.orderbook(grouped=False),
    "chart": fz.candles(),
    "exchanges": fz.trades_page(PAIR),
}


def refused(endpoint: str, text: str) -> bool:
    try:
        # As bytes, as the client parses them: JSON bytes may start with a byte-order mark.
        REFUSERS[endpoint](text.encode("utf-8"))
    except parse.ParseError:
        return True
    return False


@st.composite
def garbage_answer(draw: st.DrawFn) -> tuple[str, str]:
    """(endpoint, body): an answer its parser refuses (one it took would be believed)."""
    endpoint = draw(st.sampled_from(sorted(ROUTES)))
    body = draw(fz.any_input(VALID_OF[endpoint]).filter(lambda t: isinstance(t, str)))
    assert isinstance(body, str)
    body = body.strip() or "-"  # aiohttp serves an empty body as is; keep one to compare
    if not storable(body) or not refused(endpoint, body):  # storable first: refused encodes
        reject()
    return endpoint, body


@PIPELINE
@given(answers=st.lists(garbage_answer(), min_size=1, max_size=8))
def test_rest_garbage_is_kept_raw_and_recording_goes_on(
    pg_dsn: str, tmp_path_factory: pytest.TempPathFactory, answers: list[tuple[str, str]]
) -> None:
    empty_tables(pg_dsn)
    before = metric("rest")

    async def scenario() -> None:
        exchange = exchange_with_good_answers()
        exchange.add_trade(PAIR)
        for endpoint, body in answers:
            exchange.fail(ROUTES[endpoint][0], Fault(status=200, body=body))
        await exchange.start()
        daemon = daemon_for(exchange, pg_dsn, tmp_path_factory.mktemp("rest"))
        try:
            running = await start_daemon(daemon)
            await eventually(lambda: not any(exchange.faults.values()), what="every answer")
            # The good data that follows the garbage is recorded.
            tid = exchange.add_trade(PAIR)
            await eventually(lambda: query(pg_dsn, "SELECT 1 FROM trades WHERE tid = %s", tid),
                             what="the trade after the garbage")  # fmt: skip
            await eventually(lambda: query(pg_dsn, "SELECT 1 FROM book_snapshot_orders"),
                             what="a snapshot after the garbage")  # fmt: skip
            await eventually(
                lambda: sum(kept_payloads(pg_dsn, "rest").values()) >= len(answers),
                what="every garbage answer kept",
            )
            await stop_daemon(daemon, running)
        finally:
            await exchange.stop()
        good_trades = {(t["id"], Decimal(t["price"]), Decimal(t["amount"]))
                       for t in exchange.trades}  # fmt: skip
        stored = set(query(pg_dsn, "SELECT tid, price, amount FROM trades"))
        assert stored == good_trades

    asyncio.run(scenario())

    assert kept_payloads(pg_dsn, "rest") == Counter(answers)
    assert metric("rest") - before == len(answers)
    # Only the good answers' rows: the tables hold nothing from the garbage.
    assert query(pg_dsn, "SELECT short_name, sign FROM currencies ORDER BY 1") == [
        ("BTC", "B"), ("USD", "$")
    ]  # fmt: skip
    assert query(pg_dsn, "SELECT name, price_precision, minimum_order_size FROM pairs") == [
        (PAIR, 2, Decimal("0.001"))
    ]
    assert query(pg_dsn, "SELECT count(*) FROM candles") == [(0,)]
    levels = set(query(pg_dsn, "SELECT side, pos, order_id, price, amount FROM "
                       "book_snapshot_orders"))  # fmt: skip
    assert levels == {("sell", 0, 7, Decimal("101.5"), Decimal("2")),
                      ("buy", 0, 8, Decimal("99"), Decimal("1.25"))}  # fmt: skip
    assert query(pg_dsn, "SELECT count(*) FROM stream_sessions") == [(2,)]  # one per connection


# --- the private account -------------------------------------------------------------------------

WALLETS = '[{"currency": "BTC", "balance": "1.50", "reserve": "0.25"}]'
PRIVATE = {
    "wallets": ("/api/v1/wallets/", WALLETS, lambda t: parse.parse_wallets(t, NOW),
                fz.wallets()),
    "orders_own": ("/api/v1/orders/own/", "[]", lambda t: parse.parse_orders(t, NOW),
                   fz.account_orders()),
    "exchanges_own": ("/api/v1/exchanges/own/", "[]", lambda t: parse.parse_own_trades(t, NOW),
                      fz.own_trades()),
    "deposits": ("/api/v1/deposits/", "[]", lambda t: parse.parse_deposits(t, NOW),
                 fz.deposits()),
    "withdraws": ("/api/v1/withdraws/", "[]", lambda t: parse.parse_withdraws(t, NOW),
                  fz.deposits(with_status=True)),
}  # fmt: skip


@st.composite
def private_garbage(draw: st.DrawFn) -> tuple[str, str]:
    """(endpoint, body): an answer to a private request that its parser refuses."""
    endpoint = draw(st.sampled_from(sorted(PRIVATE)))
    _, _, parser, valid = PRIVATE[endpoint]
    body = draw(fz.any_input(valid).filter(lambda t: isinstance(t, str)))
    assert isinstance(body, str)
    body = body.strip() or "-"
    try:
        parser(body.encode("utf-8") if storable(body) else body)
    except parse.ParseError:
        if storable(body):
            return endpoint, body
    reject()


# Slower: the exchange's private limit (2 calls/s) makes each round of the account 2.5 s.
@settings(PIPELINE, max_examples=fz.examples(2, "RECORDER_FUZZ_PIPELINE_EXAMPLES"))
@given(answers=st.lists(private_garbage(), min_size=1, max_size=3))
def test_private_garbage_is_kept_raw_and_the_account_recorded(
    pg_dsn: str, tmp_path_factory: pytest.TempPathFactory, answers: list[tuple[str, str]]
) -> None:
    empty_tables(pg_dsn)
    before = metric("rest")

    async def scenario() -> None:
        exchange = exchange_with_good_answers()
        for path, body, _, _ in PRIVATE.values():
            exchange.bodies[path] = body
        for endpoint, body in answers:
            exchange.fail(PRIVATE[endpoint][0], Fault(status=200, body=body))
        await exchange.start()
        daemon = daemon_for(exchange, pg_dsn, tmp_path_factory.mktemp("private"), keys=True)
        try:
            running = await start_daemon(daemon)
            # Each account round is five private calls, at most 2/s: slow on a loaded machine.
            await eventually(lambda: not any(exchange.faults.values()), timeout_s=90,
                             what="every answer")  # fmt: skip
            # After the garbage, a whole round of the account is recorded.
            await eventually(lambda: query(pg_dsn, "SELECT 1 FROM account_wallets"),
                             timeout_s=90, what="the wallets after the garbage")  # fmt: skip
            await eventually(
                lambda: sum(kept_payloads(pg_dsn, "rest").values()) >= len(answers),
                what="every garbage answer kept",
            )
            await stop_daemon(daemon, running)
        finally:
            await exchange.stop()

    asyncio.run(scenario())

    assert kept_payloads(pg_dsn, "rest") == Counter(answers)
    assert metric("rest") - before == len(answers)
    assert set(query(pg_dsn, "SELECT currency, balance, reserve FROM account_wallets")) == {
        ("BTC", Decimal("1.50"), Decimal("0.25"))
    }
    for table in ("account_orders", "account_trades", "account_deposits", "account_withdraws"):
        assert query(pg_dsn, f"SELECT count(*) FROM {table}") == [(0,)], table  # noqa: S608

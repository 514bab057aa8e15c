"""The REST client against a real HTTP server on loopback: endpoints, signing, errors, retries."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import time
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import pytest
from pydantic import SecretStr

from recorder.config import CANDLE_TYPES, ExchangeConfig
from recorder.exchange.ratelimit import TokenBucket
from recorder.exchange.rest import (
    BadRequest,
    ConnectionFailed,
    ExchangeClient,
    Forbidden,
    HttpError,
    MalformedResponse,
    NoCredentials,
    NotFound,
    RateLimited,
    RetryPolicy,
    ServerError,
    Unauthorized,
    retry_after_s,
)
from recorder.records import RawMessage, utc_now
from recorder.retry import Backoff
from tests.exchange.loopback import FakeExchange, Fault
from tests.harness.metrics import sample

KEY = "key-0000-0000"
SECRET = "Z%2sec ret"
FAST_RETRY = RetryPolicy(attempts=4, backoff=Backoff(initial_s=0.01, max_s=0.05))


@pytest.fixture
async def client(exchange: FakeExchange, tmp_path: Path) -> AsyncIterator[ExchangeClient]:
    config = ExchangeConfig(
        base_url=exchange.url,
        request_timeout_s=0.5,
        api_key=SecretStr(KEY),
        api_secret=SecretStr(SECRET),
    )
    async with ExchangeClient.from_config(config, data_dir=tmp_path) as c:
        c.retry = FAST_RETRY
        c.private_limit = TokenBucket(1000)
        yield c


def count(endpoint: str, status: str) -> float:
    return sample("recorder_http_requests_total", endpoint=endpoint, status=status)


async def test_currencies_and_pairs_with_filters(
    exchange: FakeExchange, client: ExchangeClient
) -> None:
    exchange.bodies["/api/v1/currencies/"] = '[{"sign": "Ƀ", "short_name": "BTC"}]'
    exchange.bodies["/api/v1/pairs/"] = (
        '[{"currency2": "USD", "maximum_order_size": 100000000.00000000,'
        ' "minimum_order_size": 1e-08, "currency1": "BTC", "name": "BTC_USD",'
        ' "price_precision": 3}]'
    )
    assert [c.short_name for c in await client.currencies()] == ["BTC"]
    (pair,) = await client.pairs(currency1="BTC", currency2="USD")
    assert pair.minimum_order_size == Decimal("0.00000001")
    assert exchange.requests_to("/api/v1/pairs/")[0].query == {
        "currency1": "BTC",
        "currency2": "USD",
    }


async def test_orderbook_sends_the_tables_parameter_names(
    exchange: FakeExchange, client: ExchangeClient
) -> None:
    exchange.bodies["/api/v1/orderbook/BTC_USD/"] = (
        '{"sell": [{"price": 911.519, "id": 44667, "amount": 0.000446,'
        ' "timestamp": 1485777324.410015}], "buy": []}'
    )
    book = await client.orderbook("BTC_USD", limit_sell=5, limit_buy=7, reason="connect")
    assert book.snapshot.taken_at <= book.snapshot.received_at
    assert book.snapshot.reason == "connect"
    assert [(o.order_id, o.price) for o in book.orders] == [(44667, Decimal("911.519"))]
    assert exchange.seen[-1].query == {"limit_sell": "5", "limit_buy": "7", "group": "0"}
    exchange.bodies["/api/v1/orderbook/BTC_USD/"] = (
        '{"sell": [], "buy": [{"price": "1", "amount": 2}]}'
    )
    grouped = await client.orderbook("BTC_USD", grouped=True)
    assert exchange.seen[-1].query == {"group": "1"}
    assert [(o.side, o.order_id) for o in grouped.orders] == [("buy", None)]


async def test_order_trades_and_every_chart_type(
    exchange: FakeExchange, client: ExchangeClient
) -> None:
    exchange.bodies["/api/v1/order/11259/"] = (
        '{"amount": 0.125, "pair": "BTC_USD", "type": "buy", "status": "1",'
        ' "price": 870.69000000, "id": 11259}'
    )
    assert (await client.order(11259)).status == 1
    exchange.add_trade("BTC_USD", 5)
    trades = await client.trades("BTC_USD", limit=10, offset=0, ordering="id")
    assert [t.tid for t in trades] == [5]
    assert exchange.seen[-1].query == {
        "pair": "BTC_USD",
        "limit": "10",
        "offset": "0",
        "ordering": "id",
    }
    candle = '[{"volume": 0.26, "high": 2, "low": 1, "close": 1.5, "time": 1485777600, "open": 1}]'
    for resolution in CANDLE_TYPES:
        exchange.bodies[f"/api/charts/BTC_USD/{resolution}/chart"] = candle
        (got,) = await client.candles("BTC_USD", resolution, limit=2, since=10, until=20)
        assert (got.resolution, got.close) == (resolution, Decimal("1.5"))
        assert exchange.seen[-1].query == {"limit": "2", "since": "10", "until": "20"}
    with pytest.raises(ValueError, match="chart type"):
        await client.candles("BTC_USD", "2")
    with pytest.raises(ValueError, match="pair name"):
        await client.orderbook("../../etc")


def js_serialize(pairs: list[tuple[str, str]]) -> str:
    # Written out for the test rather than imported: the expected strings are spelled by hand.
    return "&".join(f"{k}={v}" for k, v in pairs)


async def test_private_calls_are_signed_as_the_docs_say(
    exchange: FakeExchange, client: ExchangeClient, tmp_path: Path
) -> None:
    exchange.bodies["/api/v1/wallets/"] = '[{"currency": "BTC", "balance": 1.5, "reserve": 0}]'
    exchange.bodies["/api/v1/order/"] = (
        '{"success": true, "type": "buy", "date": 1483721079.51632, "oid": 11268,'
        ' "price": 870.69, "amount": 0, "trades": []}'
    )
    exchange.bodies["/api/v1/order-cancel/"] = '{"order": 63568}'
    (wallet,) = await client.wallets()
    assert wallet.balance == Decimal("1.5")
    created = await client.create_order("BTC_USD", "buy", Decimal("1E-8"), Decimal("870.69"))
    assert created.oid == 11268
    assert await client.cancel_order(63568) == 63568

    get, post, cancel = exchange.seen
    assert get.headers["X-KEY"] == KEY
    assert get.headers["X-SIGN"] == hmac.new(SECRET.encode(), KEY.encode(), "sha256").hexdigest()
    assert post.form == {
        "type": "buy",
        "pair": "BTC_USD",
        "amount": "0.00000001",
        "price": "870.69",
    }
    message = KEY + js_serialize(
        [("amount", "0.00000001"), ("pair", "BTC_USD"), ("price", "870.69"), ("type", "buy")]
    )
    expected = hmac.new(SECRET.encode(), message.encode(), hashlib.sha256).hexdigest()
    assert post.headers["X-SIGN"] == expected
    assert (
        cancel.headers["X-SIGN"]
        == hmac.new(SECRET.encode(), (KEY + "order=63568").encode(), hashlib.sha256).hexdigest()
    )
    nonces = [int(s.headers["X-NONCE"]) for s in exchange.seen]
    assert nonces == sorted(set(nonces))

    # a new client on the same data directory (a restart) goes on above the last nonce
    config = ExchangeConfig(
        base_url=exchange.url, api_key=SecretStr(KEY), api_secret=SecretStr(SECRET)
    )
    async with ExchangeClient.from_config(config, data_dir=tmp_path) as again:
        await again.wallets()
    assert int(exchange.seen[-1].headers["X-NONCE"]) > nonces[-1]


async def test_secrets_never_reach_a_log_line(
    exchange: FakeExchange, client: ExchangeClient, caplog: pytest.LogCaptureFixture
) -> None:
    exchange.bodies["/api/v1/wallets/"] = "[]"
    exchange.fail("/api/v1/wallets/", Fault(status=502, body="down"))
    exchange.fail("/api/v1/order-cancel/", Fault(status=403, body="not yours"))
    with caplog.at_level(logging.DEBUG):
        await client.wallets()
        with pytest.raises(Forbidden, match="not yours"):
            await client.cancel_order(1)
    assert caplog.records  # httpx and httpcore did log the requests
    for record in caplog.records:
        assert KEY not in record.getMessage()
        assert SECRET not in record.getMessage()


async def test_private_lists(exchange: FakeExchange, client: ExchangeClient) -> None:
    exchange.bodies["/api/v1/orders/own/"] = (
        '[{"amount": 0.5, "pair": "ETH_USD", "type": "buy", "status": 3, "price": 0.00113,'
        ' "id": 1}]'
    )
    exchange.bodies["/api/v1/exchanges/own/"] = (
        '[{"id": 6030, "price": "839.36", "pair": "BTC_USD", "type": "sell",'
        ' "timestamp": 1483705817.735508, "amount": 0.00281167}]'
    )
    exchange.bodies["/api/v1/deposits/"] = (
        '[{"timestamp": 1485363039.18359, "id": 317, "currency": "BTC", "amount": 530}]'
    )
    exchange.bodies["/api/v1/withdraws/"] = (
        '[{"id": 403, "timestamp": 1485363466.868539, "currency": "BTC", "amount": 0.53,'
        ' "status": 20}]'
    )
    assert [o.status for o in await client.own_orders(pair="ETH_USD", status=3)] == [3]
    assert exchange.seen[-1].query == {"pair": "ETH_USD", "status": "3"}
    assert [t.id for t in await client.own_trades(pair="BTC_USD", ordering="-id")] == [6030]
    assert [d.id for d in await client.deposits()] == [317]
    assert [w.status for w in await client.withdraws(status=20)] == [20]
    assert all("X-SIGN" in s.headers for s in exchange.seen)


async def test_private_methods_need_keys(exchange: FakeExchange) -> None:
    async with ExchangeClient(exchange.url) as public:
        with pytest.raises(NoCredentials, match="wallets"):
            await public.wallets()
    assert exchange.seen == []


@pytest.mark.parametrize(
    ("status", "error"),
    [(400, BadRequest), (401, Unauthorized), (403, Forbidden), (404, NotFound), (418, HttpError)],
)
async def test_refusals_raise_at_once_with_the_reason(
    exchange: FakeExchange, client: ExchangeClient, status: int, error: type[HttpError]
) -> None:
    exchange.fail("/api/v1/wallets/", Fault(status=status, body='{"detail": "Invalid nonce"}'))
    with pytest.raises(error) as caught:
        await client.wallets()
    assert type(caught.value) is error
    assert caught.value.status == status
    assert caught.value.reason == '{"detail": "Invalid nonce"}'
    assert caught.value.url == f"{exchange.url}/api/v1/wallets/"
    assert len(exchange.seen) == 1
    for text in (str(caught.value), repr(caught.value), repr(client)):
        assert KEY not in text
        assert SECRET not in text


async def test_429_waits_for_retry_after(exchange: FakeExchange, client: ExchangeClient) -> None:
    exchange.bodies["/api/v1/currencies/"] = "[]"
    exchange.fail(
        "/api/v1/currencies/", Fault(status=429, body="slow down", headers={"Retry-After": "1"})
    )
    before = count("currencies", "429")
    started = time.monotonic()
    assert await client.currencies() == []
    first, second = exchange.seen
    assert second.at_s - first.at_s >= 1.0
    assert time.monotonic() - started < 5
    assert count("currencies", "429") == before + 1


async def test_5xx_truncated_bodies_and_timeouts_are_retried(
    exchange: FakeExchange, client: ExchangeClient
) -> None:
    exchange.bodies["/api/v1/currencies/"] = '[{"sign": "$", "short_name": "USD"}]'
    exchange.fail(
        "/api/v1/currencies/",
        Fault(status=502, body="<html><body>502 Bad Gateway</body></html>"),
        Fault(truncate=True, body='[{"sign": "$", "sh'),
        Fault(delay_s=2.0),  # the client's timeout is 0.5 s
    )
    before = count("currencies", "error")
    assert [c.short_name for c in await client.currencies()] == ["USD"]
    assert len(exchange.seen) == 4
    assert count("currencies", "error") == before + 2


async def test_retries_end(exchange: FakeExchange, client: ExchangeClient) -> None:
    exchange.fail("/api/v1/pairs/", *[Fault(status=503, body="down")] * 10)
    with pytest.raises(ServerError, match="HTTP 503: down"):
        await client.pairs()
    assert len(exchange.seen) == FAST_RETRY.attempts
    exchange.fail("/api/v1/currencies/", *[Fault(status=429)] * 10)
    with pytest.raises(RateLimited):
        await client.currencies()


async def test_connection_refused_is_retried_then_raised() -> None:
    async with ExchangeClient("http://127.0.0.1:9", retry=FAST_RETRY) as client:
        with pytest.raises(ConnectionFailed):
            await client.currencies()


async def test_malformed_success_keeps_the_verbatim_text(
    exchange: FakeExchange, client: ExchangeClient
) -> None:
    html = "<html><body>Maintenance</body></html>"
    exchange.bodies["/api/v1/currencies/"] = html
    exchange.bodies["/api/v1/pairs/"] = '[{"name": "BTC_USD", "price_precision": "x"}]'
    with pytest.raises(MalformedResponse) as caught:
        await client.currencies()
    assert caught.value.text == html
    assert "not valid JSON" in caught.value.reason
    assert len(exchange.seen) == 1  # not retried: the same body would come again
    with pytest.raises(MalformedResponse, match=r"pairs\[0\]\.currency1: missing"):
        await client.pairs()


async def test_malformed_answers_go_to_on_malformed_as_raw_messages(
    exchange: FakeExchange,
) -> None:
    html = "<html><body>Maintenance</body></html>"
    exchange.bodies["/api/v1/currencies/"] = html
    exchange.bodies["/api/v1/pairs/"] = "[]"
    kept: list[RawMessage] = []
    before = sample("recorder_malformed_messages_total", source="rest")
    async with ExchangeClient(exchange.url, on_malformed=kept.append) as client:
        sent_at = utc_now()
        with pytest.raises(MalformedResponse) as caught:
            await client.currencies()
        assert await client.pairs() == []  # a good answer is nobody's business
    (raw,) = kept
    assert (raw.source, raw.event, raw.payload) == ("rest", "currencies", html)
    assert raw.error == caught.value.reason
    assert sent_at <= raw.received_at <= utc_now()
    assert sample("recorder_malformed_messages_total", source="rest") - before == 1


async def test_rate_limits_hold_against_a_real_server(exchange: FakeExchange) -> None:
    exchange.bodies["/api/v1/currencies/"] = "[]"
    async with ExchangeClient(exchange.url, public_limit=TokenBucket(20)) as client:
        # The first call opens the connection, which delays its arrival and would make the
        # next ones look closer together than they were sent; it is left out of the count.
        await client.currencies()
        started = time.monotonic()
        await asyncio.gather(*(client.currencies() for _ in range(30)))
        elapsed_s = time.monotonic() - started
    arrivals = sorted(s.at_s for s in exchange.seen[1:])
    # The client spaces its sends exactly 50 ms apart, so 20 of them span 950 ms. A loaded
    # machine may delay one arrival, bringing it closer to the next ones: the window is
    # short of a second by the 100 ms that may take. Without the limiter all 30 arrive
    # within a few milliseconds.
    window_s = 0.9
    in_window = max(sum(1 for t in arrivals if a <= t < a + window_s) for a in arrivals)
    assert in_window <= 20
    assert elapsed_s >= 30 / 20 - 0.01


async def test_limits_keep_under_the_exchanges_and_are_configurable(tmp_path: Path) -> None:
    """The exchange allows 100 public and 2 private calls/s and counts them on arrival, so
    by default the client keeps a margin for jitter; the configuration sets its pace."""
    async with ExchangeClient("http://127.0.0.1:9") as client:
        assert 90 <= client.public_limit.rate_per_s < 100
        assert 1.5 <= client.private_limit.rate_per_s < 2
    config = ExchangeConfig(
        base_url="http://127.0.0.1:9", public_calls_per_s=20, private_calls_per_s=0.5
    )
    async with ExchangeClient.from_config(config, data_dir=tmp_path) as client:
        assert client.public_limit.rate_per_s == 20
        assert client.private_limit.rate_per_s == 0.5


async def test_private_calls_are_spaced_half_a_second(exchange: FakeExchange) -> None:
    exchange.bodies["/api/v1/deposits/"] = "[]"
    async with ExchangeClient(
        exchange.url, api_key=SecretStr(KEY), api_secret=SecretStr(SECRET)
    ) as client:
        await asyncio.gather(*(client.deposits() for _ in range(3)))
    first, _, third = sorted(s.at_s for s in exchange.seen)
    assert third - first >= 1.0 - 0.01


def test_retry_after_header_forms() -> None:
    assert retry_after_s("3") == 3.0
    assert retry_after_s(None) is None
    assert retry_after_s("soon") is None
    assert retry_after_s("Wed, 21 Oct 2015 07:28:10 GMT", now_s=1445412480.0) == 10.0


async def test_an_answer_after_the_exchange_was_down_is_told_once(exchange: FakeExchange) -> None:
    recovered: list[str] = []
    client = ExchangeClient(  # told as the daemon's stream is
        exchange.url, timeout_s=0.5, retry=FAST_RETRY, on_recovered=lambda: recovered.append("up")
    )
    exchange.bodies["/api/v1/currencies/"] = '[{"sign": "$", "short_name": "USD"}]'
    await client.currencies()
    assert recovered == []  # never down
    exchange.fail("/api/v1/currencies/", Fault(status=429), Fault(status=429))
    await client.currencies()
    assert recovered == []  # a 429 is a limit, not an outage
    exchange.fail("/api/v1/currencies/", Fault(status=502, body="down"), Fault(delay_s=2.0))
    await client.currencies()  # a 502, no answer, then an answer
    assert recovered == ["up"]
    await client.currencies()
    assert recovered == ["up"]  # once per outage
    await client.aclose()

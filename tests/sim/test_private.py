"""Private REST over real HTTP: HMAC checks, ownership, the private rate limit, shapes."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import aiohttp
import pytest

from recorder.sim.server import Simulator
from tests.harness.waiting import eventually
from tests.sim.conftest import auth_headers, private, shape, socket_client, unthrottled

DOCS = {
    "/api/v1/wallets/": '[{"currency": "BTC", "balance": 0.00000000, "reserve": 0.00000000}]',
    "/api/v1/deposits/": """[{"timestamp": 1485363039.18359, "id": 317, "currency": "BTC",
        "amount": 530.00000000}]""",
    "/api/v1/withdraws/": """[{"id": 403, "timestamp": 1485363466.868539, "currency": "BTC",
        "amount": 0.53000000, "status": 20}]""",
    "/api/v1/orders/own/": """[{"amount": 0.500000000, "pair": "ETH_USD", "type": "buy",
        "status": 3, "price": 0.00113000, "id": 11249}]""",
    "/api/v1/exchanges/own/": """[{"id": 6030, "price": 839.36000000, "pair": "BTC_USD",
        "type": "sell", "timestamp": 1483705817.735508, "amount": 0.00281167}]""",
}
CREATED = """{"success": true, "type": "buy", "date": 1483721079.51632, "oid": 11268,
  "price": 870.69000000, "amount": 0.00000000, "trades": [{"type": "sell",
  "price": 870.69000000, "o_id": 11266, "amount": 0.00010000, "tid": 6049}]}"""


def best(sim: Simulator, side: str) -> Decimal:
    price = sim.engine.books["BTC_USD"].best_price(side)  # type: ignore[arg-type]
    assert price is not None
    return price


async def test_create_order_trades_through_the_engine_and_the_socket(
    sim: Simulator, http: aiohttp.ClientSession
) -> None:
    sim.pause()
    client = socket_client()
    seen: list[Any] = []
    client.on("book_BTC_USD", seen.append)
    await client.connect(sim.base_url, transports=["websocket"])
    await client.call("subscribe", "book_BTC_USD")
    ask = best(sim, "sell")
    order = {"type": "buy", "pair": "BTC_USD", "amount": "0.00010000", "price": str(ask)}
    status, created = await private(http, sim, "/api/v1/order/", order)
    assert status == 200, created
    assert shape(json.loads(json.dumps(created, default=float))) == shape(json.loads(CREATED))
    assert created["amount"] == 0
    assert created["trades"][0]["price"] == ask
    await eventually(lambda: seen, what="the order on the socket")
    assert seen[0]["oid"] == created["oid"]
    assert seen[0]["trades"][0]["tid"] == created["trades"][0]["tid"]
    await client.disconnect()

    status, own = await private(http, sim, "/api/v1/exchanges/own/")
    assert status == 200
    assert own[0]["id"] == created["trades"][0]["tid"]
    assert own[0]["type"] == "buy"  # alice's side of the trade


@pytest.mark.parametrize("path", sorted(DOCS))
async def test_private_answers_have_the_docs_shape(
    sim: Simulator, http: aiohttp.ClientSession, path: str
) -> None:
    sim.pause()
    bid = best(sim, "buy")
    # one resting order and one trade of alice's, so the lists are not empty
    await private(
        http,
        sim,
        "/api/v1/order/",
        {"type": "sell", "pair": "BTC_USD", "amount": "0.001", "price": str(bid)},
    )
    status, body = await unthrottled(lambda: private(http, sim, path))  # 2 calls/s per key
    assert status == 200, body
    assert body
    assert shape(json.loads(json.dumps(body, default=float))) == shape(json.loads(DOCS[path]))


async def test_cancel_own_order_and_refuse_someone_elses(
    sim: Simulator, http: aiohttp.ClientSession
) -> None:
    sim.pause()
    low = best(sim, "buy") / 2
    order = {
        "type": "buy",
        "pair": "BTC_USD",
        "amount": "0.01",
        "price": str(low.quantize(Decimal("0.01"))),
    }
    status, created = await private(http, sim, "/api/v1/order/", order)
    assert status == 200, created
    oid = str(created["oid"])
    status, body = await private(http, sim, "/api/v1/order-cancel/", {"order": oid}, account="bob")
    assert status == 403, body
    cancel = {"order": oid}
    status, body = await unthrottled(lambda: private(http, sim, "/api/v1/order-cancel/", cancel))
    assert (status, body) == (200, {"order": int(oid)})
    status, body = await unthrottled(lambda: private(http, sim, "/api/v1/order-cancel/", cancel))
    assert status == 400
    assert "not active" in body["detail"]


@pytest.mark.parametrize(
    ("order", "reason"),
    [
        ({"type": "buy", "pair": "BTC_USD", "amount": "1"}, "missing"),
        ({"type": "buy", "pair": "BTC_USD", "amount": "1", "price": "1.001"}, "decimals"),
        ({"type": "buy", "pair": "BTC_USD", "amount": "x", "price": "1"}, "number"),
        ({"type": "hold", "pair": "BTC_USD", "amount": "1", "price": "1"}, "type"),
        ({"type": "buy", "pair": "BTC_USD", "amount": "99999999", "price": "100000"}, "funds"),
    ],
)
async def test_bad_orders_are_400_with_a_reason(
    sim: Simulator, http: aiohttp.ClientSession, order: dict[str, str], reason: str
) -> None:
    status, body = await private(http, sim, "/api/v1/order/", order)
    assert status == 400
    assert reason in body["detail"]


async def call(http: aiohttp.ClientSession, url: str, headers: dict[str, str]) -> tuple[int, Any]:
    async with http.get(url, headers=headers) as response:
        return response.status, await response.json()


async def test_bad_signature_stale_nonce_and_missing_headers_are_401(
    sim: Simulator, http: aiohttp.ClientSession
) -> None:
    creds = sim.accounts.by_name["alice"].credentials
    url = sim.base_url + "/api/v1/wallets/"
    good = auth_headers(creds.key, creds.secret, {})
    assert (await call(http, url, good))[0] == 200
    status, body = await unthrottled(lambda: call(http, url, good))  # the same nonce again
    assert status == 401
    assert "nonce" in body["detail"]
    wrong = auth_headers(creds.key, "not the secret", {})
    status, body = await unthrottled(lambda: call(http, url, wrong))
    assert status == 401
    assert "signature" in body["detail"]
    status, _ = await call(http, url, {})
    assert status == 401
    status, _ = await call(http, url, auth_headers("no-such-key", "x", {}))
    assert status == 401


async def test_json_body_and_javascript_encoding_are_accepted(
    sim: Simulator, http: aiohttp.ClientSession
) -> None:
    import hashlib
    import hmac
    import time
    from urllib.parse import quote

    sim.pause()
    creds = sim.accounts.by_name["bob"].credentials
    low = (best(sim, "buy") / 2).quantize(Decimal("0.01"))
    order: dict[str, Any] = {"type": "buy", "pair": "BTC_USD", "amount": "0.5", "price": str(low)}
    message = creds.key + "&".join(f"{k}={quote(str(order[k]), safe='')}" for k in sorted(order))
    signature = hmac.new(creds.secret.encode(), message.encode(), hashlib.sha256).hexdigest()
    headers = {"X-KEY": creds.key, "X-SIGN": signature, "X-NONCE": str(time.time_ns())}
    async with http.post(sim.base_url + "/api/v1/order/", json=order, headers=headers) as r:
        assert r.status == 200, await r.text()


async def test_private_rate_limit_is_two_calls_per_second_per_key(
    sim: Simulator, http: aiohttp.ClientSession
) -> None:
    statuses = [(await private(http, sim, "/api/v1/wallets/"))[0] for _ in range(4)]
    assert statuses[:2] == [200, 200]
    assert 429 in statuses[2:]
    # another key has its own budget
    assert (await private(http, sim, "/api/v1/wallets/", account="carol"))[0] == 200
    # a second later its budget is back
    assert (await unthrottled(lambda: private(http, sim, "/api/v1/wallets/")))[0] == 200

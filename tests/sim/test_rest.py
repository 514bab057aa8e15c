"""Public REST over real HTTP: the docs' shapes, query parameters, errors, exact numbers."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import aiohttp
import pytest

from recorder.sim.rest import MAX_LIMIT
from recorder.sim.server import Simulator, run_sim
from tests.sim.conftest import FAST, get_json, shape

# The docs' sample outputs, verbatim: our answers must have the same keys and JSON types.
DOCS = {
    "currencies": '[{"sign": "Ƀ", "short_name": "BTC"}]',
    "pairs": """[{"currency2": "USD", "maximum_order_size": 100000000.00000000,
        "minimum_order_size": 0.00000001, "currency1": "BTC", "name": "BTC_USD",
        "price_precision": 3}]""",
    "book": """{"sell": [{"price": 911.519, "id": 44667, "amount": 0.000446,
        "timestamp": 1485777324.410015}], "buy": [{"price": 911.122, "id": 44647,
        "amount": 0.001233, "timestamp": 1485777124.415542}]}""",
    "grouped": """{"sell": [{"price": 911.519, "amount": 0.000446}],
        "buy": [{"price": 911.122, "amount": 0.001233}]}""",
    "order": """{"amount": 0.1250000, "pair": "BTC_USD", "type": "buy", "status": "1",
        "price": 870.69000000, "id": 11259}""",
    "exchanges": """[{"id": 6030, "price": 839.36000000, "pair": "BTC_USD", "type": "sell",
        "timestamp": 1483705817.735508, "amount": 0.00281167}]""",
    "chart": """[{"volume": 0.262929, "high": 912.236, "low": 910.086, "close": 911.915,
        "time": 1485777600, "open": 910.424}]""",
}


def docs(name: str) -> Any:
    return shape(json.loads(DOCS[name]))


async def raw(http: aiohttp.ClientSession, url: str) -> tuple[int, Any]:
    async with http.get(url) as response:
        return response.status, json.loads(await response.text())


@pytest.mark.parametrize(
    ("path", "sample"),
    [
        ("/api/v1/currencies/", "currencies"),
        ("/api/v1/pairs/", "pairs"),
        ("/api/v1/orderbook/BTC_USD/", "book"),
        ("/api/v1/orderbook/BTC_USD/?group=1", "grouped"),
        ("/api/v1/order/1/", "order"),
        ("/api/v1/exchanges/", "exchanges"),
        ("/api/charts/BTC_USD/60/chart", "chart"),
    ],
)
async def test_public_answers_have_the_docs_shape(
    sim: Simulator, http: aiohttp.ClientSession, path: str, sample: str
) -> None:
    status, body = await raw(http, sim.base_url + path)
    assert status == 200
    assert shape(body) == docs(sample)


async def test_numbers_are_exact_and_use_the_pair_precision(
    sim: Simulator, http: aiohttp.ClientSession
) -> None:
    async with http.get(sim.base_url + "/api/v1/orderbook/ETH_BTC/?limit_sell=5") as response:
        text = await response.text()
    body = json.loads(text, parse_float=Decimal)
    engine_sell = sim.engine.books["ETH_BTC"].orders("sell")[:5]
    assert [(o["id"], o["price"], o["amount"]) for o in body["sell"]] == [
        (o.oid, o.price, o.amount) for o in engine_sell
    ]
    # ETH_BTC has price_precision 6 and amounts 8 decimals, written out in full
    first = engine_sell[0]
    assert f'"price":{first.price:f},' in text
    assert len(str(body["sell"][0]["price"]).split(".")[1]) == 6
    assert len(str(body["sell"][0]["amount"]).split(".")[1]) == 8


async def test_pairs_filter(sim: Simulator, http: aiohttp.ClientSession) -> None:
    _, body = await get_json(http, sim.base_url + "/api/v1/pairs/?currency2=BTC")
    assert [p["name"] for p in body] == ["ETH_BTC"]
    _, body = await get_json(http, sim.base_url + "/api/v1/pairs/?currency1=BTC&currency2=USD")
    assert [(p["name"], p["price_precision"]) for p in body] == [("BTC_USD", 2)]


async def test_orderbook_limits_and_grouping(sim: Simulator, http: aiohttp.ClientSession) -> None:
    sim.pause()
    _, body = await get_json(
        http, sim.base_url + "/api/v1/orderbook/BTC_USD/?limit_sell=3&limit_buy=2"
    )
    assert (len(body["sell"]), len(body["buy"])) == (3, 2)
    sells = [o["price"] for o in body["sell"]]
    buys = [o["price"] for o in body["buy"]]
    assert sells == sorted(sells)
    assert buys == sorted(buys, reverse=True)
    assert buys[0] < sells[0]
    _, grouped = await get_json(http, sim.base_url + "/api/v1/orderbook/BTC_USD/?group=1")
    _, full = await get_json(http, sim.base_url + "/api/v1/orderbook/BTC_USD/")
    for side in ("sell", "buy"):
        assert sum(level["amount"] for level in grouped[side]) == sum(
            o["amount"] for o in full[side]
        )
        assert len({level["price"] for level in grouped[side]}) == len(grouped[side])


async def test_single_order_status_is_a_string(sim: Simulator, http: aiohttp.ClientSession) -> None:
    resting = sim.engine.books["BTC_USD"].orders("buy")[0]
    _, body = await get_json(http, f"{sim.base_url}/api/v1/order/{resting.oid}/")
    assert body == {
        "amount": resting.original_amount,
        "pair": "BTC_USD",
        "type": "buy",
        "status": "1",
        "price": resting.price,
        "id": resting.oid,
    }


async def test_exchanges_paging_ordering_and_pair(
    sim: Simulator, http: aiohttp.ClientSession
) -> None:
    sim.pause()
    base = sim.base_url + "/api/v1/exchanges/"
    _, newest = await get_json(http, base)
    assert len(newest) == 100
    ids = [t["id"] for t in newest]
    assert ids == sorted(ids, reverse=True)
    assert ids[0] == sim.engine.trades[-1].tid
    _, oldest = await get_json(http, base + "?ordering=id&limit=5&offset=2")
    assert [t["id"] for t in oldest] == [t.tid for t in sim.engine.trades[2:7]]
    _, page = await get_json(http, base + "?limit=3&offset=1")
    assert [t["id"] for t in page] == ids[1:4]
    _, eth = await get_json(http, base + "?pair=ETH_BTC&limit=50")
    assert {t["pair"] for t in eth} == {"ETH_BTC"}
    _, capped = await get_json(http, base + "?limit=100000&ordering=id")
    assert len(capped) == min(MAX_LIMIT, len(sim.engine.trades))


@pytest.mark.parametrize("max_page", [1, 7, 100])
async def test_exchanges_pages_stop_at_max_page(max_page: int, http: aiohttp.ClientSession) -> None:
    async with run_sim(FAST, max_page=max_page) as sim:
        sim.pause()
        base = sim.base_url + "/api/v1/exchanges/"
        tape = [t.tid for t in sim.engine.trades]
        assert len(tape) > max_page + 10
        _, page = await get_json(http, base + "?limit=1000&ordering=id&offset=3")
        assert [t["id"] for t in page] == tape[3 : 3 + max_page]
        _, newest = await get_json(http, base + "?limit=1000")
        assert [t["id"] for t in newest] == tape[::-1][:max_page]
        _, smaller = await get_json(http, base + f"?limit={max_page - 1}&ordering=id")
        assert [t["id"] for t in smaller] == tape[: max_page - 1]


async def test_every_fill_appears_in_exchanges(sim: Simulator, http: aiohttp.ClientSession) -> None:
    sim.pause()
    tape: dict[int, Any] = {}
    offset = 0
    while True:
        _, page = await get_json(
            http, f"{sim.base_url}/api/v1/exchanges/?ordering=id&limit=1000&offset={offset}"
        )
        if not page:
            break
        tape.update({t["id"]: t for t in page})
        offset += len(page)
    assert len(tape) == len(sim.engine.trades) > 0
    for fill in sim.engine.trades:
        row = tape[fill.tid]
        assert (row["pair"], row["price"], row["amount"], row["type"]) == (
            fill.pair,
            fill.price,
            fill.amount,
            fill.type,
        )


@pytest.mark.parametrize("chart_type", ["1", "5", "15", "30", "60", "240", "D"])
async def test_candle_totals_equal_the_trades(
    sim: Simulator, http: aiohttp.ClientSession, chart_type: str
) -> None:
    sim.pause()
    _, chart = await get_json(http, f"{sim.base_url}/api/charts/BTC_USD/{chart_type}/chart")
    trades = sim.engine.trades_by_pair["BTC_USD"]
    assert len(chart) <= 720
    covered = [t for t in trades if t.timestamp >= chart[0]["time"]]
    assert sum(c["volume"] for c in chart) == sum(t.amount for t in covered)
    assert chart[-1]["close"] == trades[-1].price
    assert all(
        c["low"] <= min(c["open"], c["close"]) <= max(c["open"], c["close"]) <= c["high"]
        for c in chart
    )


async def test_chart_since_until_limit(sim: Simulator, http: aiohttp.ClientSession) -> None:
    sim.pause()
    url = f"{sim.base_url}/api/charts/BTC_USD/1/chart"
    _, every = await get_json(http, url)
    assert len(every) > 5
    _, last2 = await get_json(http, url + "?limit=2")
    assert last2 == every[-2:]
    since, until = every[1]["time"], every[3]["time"]
    _, window = await get_json(http, f"{url}?since={since}&until={until}")
    assert [c["time"] for c in window] == [c["time"] for c in every if since <= c["time"] <= until]


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/api/v1/orderbook/NOPE_USD/", 404),
        ("/api/v1/order/999999999/", 404),
        ("/api/v1/order/abc/", 404),
        ("/api/charts/BTC_USD/7/chart", 404),
        ("/api/charts/NOPE_USD/60/chart", 404),
        ("/api/v1/nothing/", 404),
        ("/api/v1/orderbook/BTC_USD/?group=2", 400),
        ("/api/v1/orderbook/BTC_USD/?limit_sell=x", 400),
        ("/api/v1/orderbook/BTC_USD/?limit_buy=-1", 400),
        ("/api/v1/exchanges/?ordering=price", 400),
        ("/api/v1/exchanges/?limit=ten", 400),
        ("/api/v1/exchanges/?pair=NOPE_USD", 400),
        ("/api/charts/BTC_USD/60/chart?since=yesterday", 400),
    ],
)
async def test_errors_carry_a_reason(
    sim: Simulator, http: aiohttp.ClientSession, path: str, status: int
) -> None:
    got, body = await raw(http, sim.base_url + path)
    assert got == status
    assert isinstance(body["detail"], str)
    assert body["detail"]

"""The sources on their tickers, on a fake clock: what each tick does, and what a failed one
is tried again as.

The exchange is the real loopback server of the client's tests (snapshots, trades, account)
or the in-memory chart that keeps to the documented rule (candles); the writer is a list of
what the source handed it, which is what these tests are about. The clock runs the test's
next action each time a ticker waits, that is before each tick, so each test is a script of
ticks.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from prometheus_client import REGISTRY
from pydantic import SecretStr

from recorder.config import TradesBackfill
from recorder.exchange.paging import CANDLE_LIMIT
from recorder.exchange.ratelimit import TokenBucket
from recorder.exchange.rest import ExchangeClient, RetryPolicy
from recorder.exchange.stream import BookStream, Connected
from recorder.records import AccountWallet, BookSnapshot, Candle, StreamSession, Trade, utc_now
from recorder.retry import TASK_RESTART
from recorder.sources.account import AccountRecorder
from recorder.sources.book import BookRecorder
from recorder.sources.candles import CandleRecorder
from recorder.sources.trades import TradeRecorder
from tests.exchange import conftest as exchange_tests
from tests.exchange.chart import Chart
from tests.exchange.loopback import FakeExchange, Fault
from tests.harness.fakeclock import FakeClock

PAIR = "BTC_USD"
ORDERBOOK = f"/api/v1/orderbook/{PAIR}/"
TAPE = "/api/v1/exchanges/"
BOOK = json.dumps(
    {
        "sell": [{"price": "101.5", "id": 7, "amount": "2", "timestamp": 1700000000.5}],
        "buy": [{"price": "99", "id": 8, "amount": "1.25", "timestamp": 1700000001}],
    }
)
ONE_TRY = RetryPolicy(attempts=1)
"""The client does not retry: a failed request fails the tick at once."""
FIRST_RETRY_S = (TASK_RESTART.initial_s / 2, TASK_RESTART.initial_s)
"""The bounds of the first retry's delay (equal jitter: half fixed, half random)."""


class ScriptedClock(FakeClock):
    """A fake clock that runs the next of `actions` whenever a ticker waits (before its first
    tick too); once they are spent, `done` is set and waiting never ends (the test then
    stops the source)."""

    def __init__(self, *actions: Callable[[], object]) -> None:
        super().__init__()
        self.actions = list(actions)
        self.done = asyncio.Event()

    async def wait(self, event: asyncio.Event, timeout_s: float) -> bool:
        if not self.actions:
            self.done.set()
            await asyncio.Event().wait()
        self.actions.pop(0)()
        return await super().wait(event, timeout_s)


def nothing() -> None:
    pass


class Handed:
    """Stands for the writer: the records a source handed it, in order."""

    def __init__(self) -> None:
        self.records: list[Any] = []

    def put(self, record: Any) -> None:
        self.records.append(record)

    def put_many(self, records: Iterable[Any]) -> None:
        self.records.extend(records)

    def of(self, kind: type[Any]) -> list[Any]:
        return [r for r in self.records if isinstance(r, kind)]


async def run_script(work: Awaitable[object], clock: ScriptedClock) -> None:
    """Run a source until its clock's script is spent, then stop it."""
    task = asyncio.ensure_future(work)
    done = asyncio.ensure_future(clock.done.wait())
    try:
        await asyncio.wait([task, done], timeout=10, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            task.result()  # the source ended: show why
        assert clock.done.is_set(), "the script did not run to its end"
    finally:
        for running in (task, done):
            running.cancel()
        await asyncio.gather(task, done, return_exceptions=True)


exchange = exchange_tests.exchange
"""The fixture of a real loopback exchange, as the client's tests have it."""


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_a_snapshot_that_fails_after_a_reconnect_is_retried_as_a_connect_resync(
    exchange: FakeExchange,
) -> None:
    exchange.bodies[ORDERBOOK] = BOOK
    handed = Handed()
    session = StreamSession(uuid.uuid4(), utc_now(), None, None)

    def reconnect_while_the_exchange_fails_once() -> None:
        exchange.fail(ORDERBOOK, Fault(status=503, body="busy"))
        recorder.handle(Connected(session, protocol="4"))

    clock = ScriptedClock(
        nothing,  # tick 1: start
        reconnect_while_the_exchange_fails_once,  # tick 2: connect, fails
        nothing,  # tick 3: connect again, after the backoff
        nothing,  # tick 4: interval
    )
    failures = metric("recorder_task_failures_total", task=f"snapshots:{PAIR}")
    resyncs = metric("recorder_book_resyncs_total", pair=PAIR, reason="connect")
    async with ExchangeClient(exchange.url, retry=ONE_TRY) as client:
        stream = BookStream(exchange.url, pairs=[PAIR])  # never run: only the REST side here
        recorder = BookRecorder(client, stream, handed, snapshot_interval_s=60, clock=clock)
        await run_script(recorder.snapshots(PAIR), clock)
    assert [s.reason for s in handed.of(BookSnapshot)] == ["start", "connect", "interval"]
    assert len(exchange.requests_to(ORDERBOOK)) == 4  # the failed one too
    assert metric("recorder_task_failures_total", task=f"snapshots:{PAIR}") == failures + 1
    assert metric("recorder_book_resyncs_total", pair=PAIR, reason="connect") == resyncs + 1
    # At once; woken by the reconnect (no wait); the retry's backoff; the interval again.
    first_s, retry_s, interval_s = clock.waits
    assert first_s == 0
    assert FIRST_RETRY_S[0] <= retry_s <= FIRST_RETRY_S[1]
    assert interval_s == 60


async def test_only_catch_ups_count_as_backfilled_even_when_a_poll_is_retried(
    exchange: FakeExchange,
) -> None:
    for _ in range(5):
        exchange.add_trade(PAIR)
    handed = Handed()

    def trades_then_a_failed_poll() -> None:
        exchange.add_trade(PAIR)
        exchange.add_trade(PAIR)
        exchange.fail(TAPE, Fault(status=503, body="busy"))

    def a_reconnect() -> None:
        exchange.add_trade(PAIR)
        recorder.catch_up_now()

    clock = ScriptedClock(
        nothing,  # tick 1: the start's catch-up: 4 and 5
        trades_then_a_failed_poll,  # tick 2: a poll that fails
        nothing,  # tick 3: the poll again, after the backoff: 6 and 7
        a_reconnect,  # tick 4: a catch-up: 8
        lambda: exchange.add_trade(PAIR),  # tick 5: a poll: 9
    )
    backfilled = metric("recorder_trades_backfilled_total", pair=PAIR)
    failures = metric("recorder_task_failures_total", task=f"trades:{PAIR}")
    async with ExchangeClient(exchange.url, retry=ONE_TRY) as client:
        recorder = TradeRecorder(
            client,
            handed,
            poll_interval_s=2.0,
            backfill=TradesBackfill.parse("all"),
            last_tids={PAIR: 3},
            clock=clock,
        )
        await run_script(recorder.run(PAIR), clock)
    assert [t.tid for t in handed.of(Trade)] == [4, 5, 6, 7, 8, 9]
    # the start's catch-up (4, 5) and the reconnect's (8); not the retried poll's (6, 7)
    assert metric("recorder_trades_backfilled_total", pair=PAIR) == backfilled + 3
    assert metric("recorder_task_failures_total", task=f"trades:{PAIR}") == failures + 1
    assert clock.waits[:2] == [0, 2.0]
    assert FIRST_RETRY_S[0] <= clock.waits[2] <= FIRST_RETRY_S[1]


def minutes_to_now(count: int) -> list[int]:
    """The starts of the last `count` one-minute buckets, the open one included."""
    now_s = int(utc_now().timestamp())
    newest = now_s - now_s % 60
    return [newest - 60 * i for i in range(count)][::-1]


def handed_buckets(handed: Handed) -> Counter[int]:
    return Counter(int(c.bucket.timestamp()) for c in handed.of(Candle))


async def test_a_backfill_that_fails_halfway_resumes_before_its_oldest_candle() -> None:
    history = minutes_to_now(2000)  # three pages of 720
    chart = Chart(history, fail_at={1})  # the second page fails
    handed = Handed()
    clock = ScriptedClock(nothing, nothing)  # the first try, and the one after the failure
    recorder = CandleRecorder(chart, handed, poll_interval_s=30, stored={}, clock=clock)
    await run_script(recorder.run(PAIR, "1"), clock)
    taken = handed_buckets(handed)
    assert sorted(taken) == history
    # each once; the open candle twice: the forward read refreshes it
    assert taken == Counter(history) + Counter([history[-1]])
    first_until = history[-CANDLE_LIMIT] - 1
    assert [until for _, until, _ in chart.requests[:3]] == [None, first_until, first_until]
    assert recorder.last_buckets[(PAIR, "1")].timestamp() == history[-1]


async def test_a_backfill_a_stop_interrupted_goes_on_at_the_next_start() -> None:
    history = minutes_to_now(2000)
    chart = Chart(history)
    handed = Handed()
    clock = ScriptedClock(nothing)
    # The last run stored the newest page of the backfill, then it was killed.
    stored_from = history[-CANDLE_LIMIT]
    stored = {(PAIR, "1"): (datetime.fromtimestamp(stored_from, UTC),
                            datetime.fromtimestamp(history[-1], UTC))}  # fmt: skip
    recorder = CandleRecorder(chart, handed, poll_interval_s=30, stored=stored, clock=clock)
    await run_script(recorder.run(PAIR, "1"), clock)
    taken = handed_buckets(handed)
    # Everything older than what was stored, each once; the open candle, refreshed.
    assert taken == Counter(history[:-CANDLE_LIMIT]) + Counter([history[-1]])
    assert chart.requests[0][1] == stored_from - 1  # the backfill reads before it


async def test_a_finished_backfill_costs_a_start_one_empty_request() -> None:
    history = minutes_to_now(100)
    chart = Chart(history)
    handed = Handed()
    clock = ScriptedClock(nothing)
    stored = {(PAIR, "1"): (datetime.fromtimestamp(history[0], UTC),
                            datetime.fromtimestamp(history[-1], UTC))}  # fmt: skip
    recorder = CandleRecorder(chart, handed, poll_interval_s=30, stored=stored, clock=clock)
    await run_script(recorder.run(PAIR, "1"), clock)
    assert chart.requests[0][1] == history[0] - 1
    assert handed_buckets(handed) == Counter([history[-1]])  # only the open candle again


async def test_a_forward_window_that_fails_halfway_is_read_again_whole() -> None:
    history = minutes_to_now(1000)
    # The exchange serves 100 candles a page: a window of 720 buckets takes 8 requests.
    chart = Chart(history, cap=100, fail_at={3})
    handed = Handed()
    clock = ScriptedClock(nothing, nothing)  # the first try, and the one after the failure
    first = datetime.fromtimestamp(history[0], UTC)
    stored = {(PAIR, "1"): (first, first)}
    recorder = CandleRecorder(chart, handed, poll_interval_s=30, stored=stored, clock=clock)
    await run_script(recorder.run(PAIR, "1"), clock)
    taken = handed_buckets(handed)
    assert taken == Counter(history)  # every candle, each once: nothing of the failed try
    assert recorder.last_buckets[(PAIR, "1")].timestamp() == history[-1]


PRIVATE = {
    "/api/v1/wallets/": '[{"currency": "BTC", "balance": "1.50", "reserve": "0.25"}]',
    "/api/v1/orders/own/": "[]",
    "/api/v1/exchanges/own/": "[]",
    "/api/v1/deposits/": "[]",
    "/api/v1/withdraws/": "[]",
}


async def test_an_account_round_that_fails_is_tried_again_after_the_backoff(
    exchange: FakeExchange,
) -> None:
    exchange.bodies.update(PRIVATE)
    handed = Handed()
    clock = ScriptedClock(
        nothing,  # round 1: at once
        lambda: exchange.fail("/api/v1/wallets/", Fault(status=503, body="busy")),  # round 2
        nothing,  # round 3: round 2 again, after the backoff
        nothing,  # round 4: the interval again
    )
    failures = metric("recorder_task_failures_total", task="account")
    async with ExchangeClient(
        exchange.url,
        api_key=SecretStr("key"),
        api_secret=SecretStr("secret"),
        private_limit=TokenBucket(1000),  # not the exchange's 2 calls/s: this test is quick
        retry=ONE_TRY,
    ) as client:
        recorder = AccountRecorder(client, handed, interval_s=60, clock=clock)
        await run_script(recorder.run(), clock)
    assert len(handed.of(AccountWallet)) == 3  # rounds 1, 3 and 4
    assert metric("recorder_task_failures_total", task="account") == failures + 1
    first_s, interval_s, retry_s, *_ = clock.waits
    assert (first_s, interval_s) == (0, 60)
    assert FIRST_RETRY_S[0] <= retry_s <= FIRST_RETRY_S[1]

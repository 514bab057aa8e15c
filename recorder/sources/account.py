"""The owner's private account, when `api_key`/`api_secret` are set: wallet balances,
own orders, own trades, deposits and withdrawals, all on one interval (the `account`
ticker: a round that fails is tried again after a backoff).

The client's private token bucket keeps every call within the exchange's 2 calls/s; one
round of five calls therefore takes at least two seconds, whatever the interval. Own trades
are paged newest first until a page reaches the last one recorded.
"""

from __future__ import annotations

from typing import NoReturn

from recorder.clock import REAL_CLOCK, Clock
from recorder.exchange.rest import ExchangeClient
from recorder.logs import get_logger
from recorder.storage.writer import Writer
from recorder.ticker import Ticker

log = get_logger(__name__)

INTERVAL_S = 60.0
OWN_TRADES_PAGE = 100


class AccountRecorder:
    def __init__(
        self,
        client: ExchangeClient,
        writer: Writer,
        *,
        interval_s: float = INTERVAL_S,
        clock: Clock = REAL_CLOCK,
    ) -> None:
        self._client = client
        self._writer = writer
        self._last_own_trade: int | None = None
        self._ticker = Ticker("account", interval_s, clock=clock)

    async def run(self) -> NoReturn:
        """A round at once, then one every interval."""

        async def step(reason: str) -> None:
            await self.record_once()

        await self._ticker.run(step)

    async def record_once(self) -> None:
        self._writer.put_many(await self._client.wallets())
        self._writer.put_many(await self._client.own_orders())
        await self._own_trades()
        self._writer.put_many(await self._client.deposits())
        self._writer.put_many(await self._client.withdraws())

    async def _own_trades(self) -> None:
        offset = 0
        newest: int | None = None
        while True:
            page = await self._client.own_trades(
                limit=OWN_TRADES_PAGE, offset=offset, ordering="-id"
            )
            self._writer.put_many(page)
            if page and newest is None:
                newest = page[0].id
            reached_known = self._last_own_trade is not None and any(
                trade.id <= self._last_own_trade for trade in page
            )
            if len(page) < OWN_TRADES_PAGE or reached_known:
                break
            offset += len(page)
        if newest is not None:
            self._last_own_trade = max(newest, self._last_own_trade or newest)

"""Pairs and currencies: recorded at start and refreshed periodically; with `pairs = ["*"]`
the set of recorded pairs follows what the exchange lists, so a pair listed later is picked
up without a restart.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from recorder.exchange.rest import ExchangeClient
from recorder.logs import get_logger
from recorder.storage.writer import Writer

log = get_logger(__name__)

REFRESH_S = 300.0


class MetadataRecorder:
    def __init__(
        self,
        client: ExchangeClient,
        writer: Writer,
        *,
        configured_pairs: tuple[str, ...],
        follow_all: bool,
        on_new_pairs: Callable[[list[str]], Awaitable[None]],
        refresh_s: float = REFRESH_S,
    ) -> None:
        self._client = client
        self._writer = writer
        self._configured = configured_pairs
        self._follow_all = follow_all
        self._on_new_pairs = on_new_pairs
        self._refresh_s = refresh_s
        self.pairs: set[str] = set()

    async def refresh(self) -> list[str]:
        """Record currencies and pairs; start recording pairs not followed yet."""
        self._writer.put_many(await self._client.currencies())
        listed = await self._client.pairs()
        self._writer.put_many(listed)
        names = {pair.name for pair in listed}
        if self._follow_all:
            wanted = names
        else:
            wanted = set(self._configured)
            for missing in sorted(wanted - names):
                log.warning("a configured pair is not listed by the exchange", pair=missing)
        new = sorted(wanted - self.pairs)
        if new:
            self.pairs.update(new)
            log.info("recording pairs", pairs=new)
            await self._on_new_pairs(new)
        return new

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self._refresh_s)
            await self.refresh()

"""Pairs and currencies: recorded at start and refreshed periodically, and the set of pairs
recorded kept to what the exchange lists.

The pairs recorded are the listed ones that the configuration wants (all of them with
`pairs = ["*"]`). At every refresh a pair that appears is followed (`on_new_pairs`), without
a restart; a followed pair that left the list (delisted) is unfollowed (`on_delisted`), so
that its tasks stop instead of failing against an exchange that no longer knows it. Each
delisting is logged once and counted in `recorder_pairs_delisted_total{pair}`;
`recorder_pairs_followed` is how many are recorded. A pair listed again is followed again.
The stored `pairs` rows tell the story afterwards: each refresh stores the whole list, so a
pair whose `updated_at` lags the others' left the list after then (`recorder coverage`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import NoReturn

from recorder import metrics
from recorder.exchange.rest import ExchangeClient
from recorder.logs import get_logger
from recorder.storage.writer import Writer
from recorder.ticker import Ticker

log = get_logger(__name__)

REFRESH_S = 300.0

PairsChange = Callable[[list[str]], Awaitable[None]]


class MetadataRecorder:
    def __init__(
        self,
        client: ExchangeClient,
        writer: Writer,
        *,
        configured_pairs: tuple[str, ...],
        follow_all: bool,
        on_new_pairs: PairsChange,
        on_delisted: PairsChange,
        refresh_s: float = REFRESH_S,
    ) -> None:
        self._client = client
        self._writer = writer
        self._configured = configured_pairs
        self._follow_all = follow_all
        self._on_new_pairs = on_new_pairs
        self._on_delisted = on_delisted
        self._refresh_s = refresh_s
        self.pairs: set[str] = set()
        """The pairs followed now."""
        self._unlisted: set[str] = set()
        """Configured pairs the exchange does not list (each warned about once)."""

    async def refresh(self) -> list[str]:
        """Record currencies and pairs; follow pairs newly listed, unfollow pairs delisted.
        Returns the pairs followed from now on."""
        self._writer.put_many(await self._client.currencies())
        listed = await self._client.pairs()
        self._writer.put_many(listed)
        names = {pair.name for pair in listed}
        wanted = names if self._follow_all else set(self._configured) & names
        gone = sorted(self.pairs - wanted)
        new = sorted(wanted - self.pairs)
        self._note_unlisted(names, delisted=gone)
        if gone:
            log.warning("pairs delisted by the exchange: recording them stopped", pairs=gone)
            # Forgotten only once unfollowed: if that fails, the retried refresh tries again.
            await self._on_delisted(gone)
            self.pairs.difference_update(gone)
            for pair in gone:
                metrics.pairs_delisted.labels(pair).inc()
        if new:
            self.pairs.update(new)
            log.info("recording pairs", pairs=new)
            await self._on_new_pairs(new)
        metrics.pairs_followed.set(len(self.pairs))
        return new

    def _note_unlisted(self, listed: set[str], *, delisted: list[str]) -> None:
        """Warn once about each configured pair that is not listed (a delisted one is told
        as such)."""
        if self._follow_all:
            return
        unlisted = set(self._configured) - listed
        for pair in sorted(unlisted - self._unlisted - set(delisted)):
            log.warning(
                "a configured pair is not listed by the exchange; recording it once it is",
                pair=pair,
            )
        self._unlisted = unlisted

    async def run(self) -> NoReturn:
        """Refresh every `refresh_s` (the daemon did the first one at start)."""

        async def refresh(reason: str) -> None:
            await self.refresh()

        await Ticker("metadata", self._refresh_s, first=None).run(refresh)

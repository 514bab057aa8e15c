"""The probe's order of work: public REST first (it says which pairs there are), then the
socket for N seconds while the trade page and the signed calls are tried, then the clocks.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

from recorder.config import Config
from recorder.exchange.ratelimit import TokenBucket
from recorder.exchange.rest import ExchangeClient, RetryPolicy
from recorder.probe import clock
from recorder.probe.cancels import cancel_reading, cancel_reading_finding
from recorder.probe.endpoints import check_public_endpoints, largest_trade_page
from recorder.probe.generation import detect, generation_finding
from recorder.probe.listen import Heard, event_names_finding, listen, socket_events_finding
from recorder.probe.observe import ObservingTransport
from recorder.probe.report import Finding, Report
from recorder.probe.signed import signed_checks
from recorder.records import utc_now

ONCE = RetryPolicy(attempts=1)
"""Each call once: the report shows what the exchange answered, not what a retry got."""


def followed_pairs(config: Config, listed: Sequence[str] | None) -> tuple[str, ...]:
    """The pairs recording would follow: the configured ones, or every listed one for "*"."""
    if not config.recorder.all_pairs:
        return config.recorder.pairs
    return tuple(listed or ())


async def probe(config: Config, seconds: float) -> Report:
    """Run every check against the configured exchange; never raises for what it answers."""
    started_at = utc_now()
    exchange = config.exchange
    transport = ObservingTransport()
    async with ExchangeClient(
        exchange.base_url,
        timeout_s=exchange.request_timeout_s,
        public_limit=TokenBucket(exchange.public_calls_per_s),
        retry=ONCE,
        transport=transport,
    ) as client:
        public = await check_public_endpoints(client, transport, config)
        detected = await detect(exchange)
        pairs = followed_pairs(config, public.listed_pairs)

        async def hear() -> Heard:
            if not pairs:
                return Heard(pairs, 0.0)
            try:
                return await listen(exchange, client, pairs, seconds)
            except Exception as exc:  # whatever broke, the report must still come
                broken = Heard(pairs, seconds)
                broken.error = f"{type(exc).__name__}: {exc}"
                return broken

        async def sign() -> list[Finding]:
            try:
                return await signed_checks(config, ONCE)
            except Exception as exc:  # the nonce file under data_dir, for one
                return [Finding("signed.wallets", "fail", f"could not sign: {exc}")]

        heard, page, signed = await asyncio.gather(
            hear(), guarded("trades.page", lambda: largest_trade_page(client)), sign()
        )
    tally = cancel_reading(heard.seeds, heard.updates)
    findings = [
        *public.findings,
        page,
        generation_finding(detected, exchange.socketio_protocol, heard.protocol),
        socket_events_finding(heard),
        event_names_finding(heard),
        cancel_reading_finding(tally, len(heard.seeds)),
        clock.http_date_finding(clock.http_date_skew(transport.exchanges)),
        clock.dated_finding(
            "clock.trade_date",
            "trades",
            clock.lags((t.ts, t.received_at) for t in public.newest_trades),
            newest_only=True,
        ),
        clock.dated_finding(
            "clock.event_date",
            "book events",
            clock.lags((u.event.ts, u.event.received_at) for u in heard.updates),
        ),
        *signed,
    ]
    return Report(
        base_url=exchange.base_url,
        socket_url=exchange.socket_url.rstrip("/") + exchange.socket_path,
        started_at=started_at,
        listened_s=heard.listened_s,
        findings=tuple(findings),
    )


async def guarded(key: str, check: Callable[[], Awaitable[Finding]]) -> Finding:
    """A check's finding, or a failing one if the check itself broke on an answer."""
    try:
        return await check()
    except Exception as exc:  # an answer no check foresaw must still end in a report
        return Finding(key, "fail", f"the probe could not check: {type(exc).__name__}: {exc}")

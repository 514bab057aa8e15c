"""The exchange's REST API (v1) on httpx: one method per endpoint, typed results.

Every call goes through one path: wait for a token of its rate limit (public or private),
sign it when private, send, count it in `recorder_http_requests_total{endpoint,status}` and
time it, then either parse the body into records or raise a precise error. 429, 5xx,
timeouts and connection errors are retried (tenacity) after the REST backoff
(`recorder.retry.REST_RETRY`), waiting at least what `Retry-After` asks; 400/401/403/404
raise at once with the exchange's reason. A 200 whose body does not parse raises
`MalformedResponse` carrying the verbatim text and the reason; with `on_malformed`, the
client first hands it over as the `RawMessage` that keeps it (the daemon's writer stores it
in `raw_messages`), counted in `recorder_malformed_messages_total{source="rest"}`.

The endpoint label is the route's name (`orderbook`, `chart`), never a pair or an id, so
the metric's label values stay bounded. The API key and secret are read only to sign and
never appear in a log line, an exception or a repr.
"""

from __future__ import annotations

import asyncio
import email.utils
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self, TypeVar
from urllib.parse import quote

import httpx
from pydantic import SecretStr
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_after_attempt
from tenacity.wait import wait_base

from recorder import metrics
from recorder.config import CANDLE_TYPES, ExchangeConfig
from recorder.exchange import parse
from recorder.exchange.parse import NewOrder, OrderBook, ParseError
from recorder.exchange.ratelimit import PRIVATE_CALLS_PER_S, PUBLIC_CALLS_PER_S, TokenBucket
from recorder.exchange.signing import (
    DEFAULT_SIGN_ENCODING,
    NonceSource,
    PayloadValue,
    SignEncoding,
    auth_headers,
    payload_text,
)
from recorder.records import (
    AccountDeposit,
    AccountOrder,
    AccountTrade,
    AccountWallet,
    AccountWithdraw,
    Candle,
    Currency,
    Pair,
    RawMessage,
    Side,
    Trade,
    is_pair_name,
    new_id,
    utc_now,
)
from recorder.retry import REST_RETRY, Backoff

Ordering = Literal["id", "-id"]
MAX_REASON_CHARS = 500
T = TypeVar("T")


# --- errors ---------------------------------------------------------------------------------


class ExchangeError(Exception):
    """A REST call did not give a usable answer."""

    def __init__(self, endpoint: str, message: str) -> None:
        super().__init__(f"{endpoint}: {message}")
        self.endpoint = endpoint


class HttpError(ExchangeError):
    """The exchange refused the request with this status; not retried."""

    def __init__(self, endpoint: str, status: int, reason: str, *, url: str = "") -> None:
        super().__init__(endpoint, f"HTTP {status}: {reason}")
        self.status = status
        self.reason = reason
        self.url = url
        """The request's URL (no secret is ever in one: private calls sign in headers)."""


class BadRequest(HttpError):
    """400: the request's input is wrong; `reason` is what the exchange said."""


class Unauthorized(HttpError):
    """401: the authentication headers were not accepted."""


class Forbidden(HttpError):
    """403: not allowed, for example cancelling another account's order."""


class NotFound(HttpError):
    """404: no such pair, order or route."""


class RetryableError(ExchangeError):
    """A failure worth trying again (429, 5xx, timeout, connection); raised once retries end."""


class RateLimited(RetryableError):
    """429: over the exchange's rate limit; `retry_after_s` is its Retry-After, if any."""

    def __init__(self, endpoint: str, reason: str, retry_after_s: float | None) -> None:
        super().__init__(endpoint, f"HTTP 429: {reason}")
        self.status = 429
        self.retry_after_s = retry_after_s


class ServerError(RetryableError):
    """5xx: the exchange failed or is overloaded."""

    def __init__(self, endpoint: str, status: int, reason: str) -> None:
        super().__init__(endpoint, f"HTTP {status}: {reason}")
        self.status = status


class ConnectionFailed(RetryableError):
    """No answer: timeout, refused or dropped connection, truncated body."""


class MalformedResponse(ExchangeError):
    """A success status whose body does not parse; `text` is the body verbatim."""

    def __init__(self, endpoint: str, text: str, reason: str) -> None:
        super().__init__(endpoint, f"malformed answer: {reason}")
        self.text = text
        self.reason = reason


class NoCredentials(ExchangeError):
    """A private method was called on a client without an API key and secret."""


_REFUSALS: dict[int, type[HttpError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
}


# --- policy ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    attempts: int = 5
    """Tries in all, the first included."""
    backoff: Backoff = REST_RETRY
    max_retry_after_s: float = 60.0
    """A longer Retry-After is capped to this; the exchange's limits are per second."""


def retry_after_s(value: str | None, now_s: float | None = None) -> float | None:
    """The Retry-After header (seconds, or an HTTP date) as seconds from now; None if absent."""
    if value is None:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - (time.time() if now_s is None else now_s))


class _WaitRetryAfter(wait_base):
    """The backoff's delay, or what a 429's `Retry-After` asks (up to `max_s`) if longer."""

    def __init__(self, backoff: wait_base, max_s: float) -> None:
        self._backoff = backoff
        self._max_s = max_s

    def __call__(self, retry_state: RetryCallState) -> float:
        delay_s = float(self._backoff(retry_state))
        outcome = retry_state.outcome
        error = outcome.exception() if outcome is not None else None
        if isinstance(error, RateLimited) and error.retry_after_s is not None:
            delay_s = max(delay_s, min(error.retry_after_s, self._max_s))
        return delay_s


@dataclass(frozen=True, slots=True)
class Answer:
    """A successful response: its body and when the request was sent and answered."""

    content: bytes
    sent_at: datetime
    received_at: datetime

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")


def _reason(response: httpx.Response) -> str:
    text = response.content.decode("utf-8", errors="replace").strip()
    return (text[:MAX_REASON_CHARS] + "...") if len(text) > MAX_REASON_CHARS else text or "-"


def _check_pair(pair: str) -> str:
    if not is_pair_name(pair):
        raise ValueError(f"not a pair name like BTC_USD: {pair[:40]!r}")
    return pair


def _unix_s(value: datetime | int) -> int:
    return int(value.timestamp()) if isinstance(value, datetime) else int(value)


def _params(**values: Any) -> dict[str, str]:
    """Query parameters, leaving out the ones not given."""
    return {k: payload_text(v) for k, v in values.items() if v is not None}


# --- the client -----------------------------------------------------------------------------


class ExchangeClient:
    """The exchange's REST API. Use as `async with ExchangeClient(...) as client:`."""

    def __init__(
        self,
        base_url: str,
        *,
        timeout_s: float = 10.0,
        api_key: SecretStr | None = None,
        api_secret: SecretStr | None = None,
        nonce: NonceSource | None = None,
        sign_encoding: SignEncoding = DEFAULT_SIGN_ENCODING,
        public_limit: TokenBucket | None = None,
        private_limit: TokenBucket | None = None,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], Awaitable[None]] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        on_malformed: Callable[[RawMessage], None] | None = None,
        on_recovered: Callable[[], None] | None = None,
    ) -> None:
        """`on_malformed`: given each answer that did not parse, kept verbatim as a raw message.
        `on_recovered`: called when the exchange answers again after a request found it down
        (no answer, or a 5xx): the stream reconnects at once rather than after its backoff."""
        if (api_key is None) != (api_secret is None):
            raise ValueError("api_key and api_secret go together")
        self._http = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            timeout=httpx.Timeout(timeout_s),
            transport=transport,
            headers={"Accept": "application/json"},
        )
        self._key = api_key
        self._secret = api_secret
        self._nonce = nonce or NonceSource()
        self.sign_encoding = sign_encoding
        self.public_limit = public_limit or TokenBucket(PUBLIC_CALLS_PER_S)
        self.private_limit = private_limit or TokenBucket(PRIVATE_CALLS_PER_S)
        self.retry = retry or RetryPolicy()
        self._sleep = sleep or asyncio.sleep
        self._on_malformed = on_malformed
        self._on_recovered = on_recovered
        self._down = False
        """The last request found the exchange down (no answer, or a 5xx)."""

    @classmethod
    def from_config(
        cls,
        config: ExchangeConfig,
        *,
        data_dir: Path,
        on_malformed: Callable[[RawMessage], None] | None = None,
        on_recovered: Callable[[], None] | None = None,
    ) -> ExchangeClient:
        """The daemon's client; the nonce's high-water mark is kept under `data_dir`."""
        return cls(
            config.base_url,
            timeout_s=config.request_timeout_s,
            api_key=config.api_key,
            api_secret=config.api_secret,
            nonce=NonceSource(data_dir),
            public_limit=TokenBucket(config.public_calls_per_s),
            private_limit=TokenBucket(config.private_calls_per_s),
            on_malformed=on_malformed,
            on_recovered=on_recovered,
        )

    def __repr__(self) -> str:
        private = "with keys" if self._key is not None else "public only"
        return f"ExchangeClient({str(self._http.base_url)!r}, {private})"

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    @property
    def private_enabled(self) -> bool:
        return self._key is not None

    # --- one request, retried ---------------------------------------------------------------

    async def request(
        self,
        endpoint: str,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        form: Mapping[str, PayloadValue] | None = None,
        private: bool = False,
    ) -> Answer:
        """Send one request, retrying what is retryable; the answer of a 2xx status."""
        if private and (self._key is None or self._secret is None):
            raise NoCredentials(endpoint, "needs exchange.api_key and exchange.api_secret")
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.retry.attempts),
            wait=_WaitRetryAfter(self.retry.backoff.wait(), self.retry.max_retry_after_s),
            retry=retry_if_exception_type(RetryableError),
            reraise=True,
            sleep=self._sleep,
        )
        async for attempt in retrying:
            with attempt:
                return await self._once(endpoint, method, path, params, form, private)
        raise AssertionError("unreachable: tenacity re-raises the last error")  # pragma: no cover

    async def _once(
        self,
        endpoint: str,
        method: str,
        path: str,
        params: Mapping[str, str] | None,
        form: Mapping[str, PayloadValue] | None,
        private: bool,
    ) -> Answer:
        await (self.private_limit if private else self.public_limit).acquire()
        body = {k: payload_text(v) for k, v in (form or {}).items()}
        headers = self._auth_headers(form or {}) if private else {}
        sent_at = utc_now()
        started_s = time.perf_counter()
        try:
            response = await self._http.request(
                method, path, params=params, data=body or None, headers=headers
            )
        except httpx.TimeoutException as exc:
            self._count(endpoint, "error", started_s)
            self._down = True
            raise ConnectionFailed(endpoint, f"timed out ({type(exc).__name__})") from None
        except httpx.TransportError as exc:
            self._count(endpoint, "error", started_s)
            self._down = True
            raise ConnectionFailed(endpoint, f"{type(exc).__name__}: {exc}") from None
        received_at = utc_now()
        self._count(endpoint, str(response.status_code), started_s)
        self._note_up_or_down(response.status_code)
        self._raise_for_status(endpoint, response)
        return Answer(response.content, sent_at, received_at)

    def _note_up_or_down(self, status: int) -> None:
        if status >= 500:
            self._down = True
        elif 200 <= status < 300 and self._down:
            self._down = False
            if self._on_recovered is not None:
                self._on_recovered()

    def _auth_headers(self, payload: Mapping[str, PayloadValue]) -> dict[str, str]:
        assert self._key is not None
        assert self._secret is not None
        return auth_headers(
            self._key.get_secret_value(),
            self._secret.get_secret_value(),
            payload,
            self._nonce.next(),
            self.sign_encoding,
        )

    @staticmethod
    def _count(endpoint: str, status: str, started_s: float) -> None:
        metrics.http_requests.labels(endpoint=endpoint, status=status).inc()
        metrics.http_request_duration.labels(endpoint=endpoint).observe(
            time.perf_counter() - started_s
        )

    @staticmethod
    def _raise_for_status(endpoint: str, response: httpx.Response) -> None:
        status = response.status_code
        if 200 <= status < 300:
            return
        reason = _reason(response)
        if status == 429:
            wait_s = retry_after_s(response.headers.get("Retry-After"))
            raise RateLimited(endpoint, reason, wait_s)
        if status >= 500:
            raise ServerError(endpoint, status, reason)
        refusal = _REFUSALS.get(status, HttpError)
        raise refusal(endpoint, status, reason, url=str(response.url))

    async def _get(
        self,
        endpoint: str,
        path: str,
        build: Callable[[Answer], T],
        *,
        private: bool = False,
        **params: Any,
    ) -> T:
        answer = await self.request(
            endpoint, "GET", path, params=_params(**params), private=private
        )
        return self._parsed(endpoint, answer, build)

    def _parsed(self, endpoint: str, answer: Answer, build: Callable[[Answer], T]) -> T:
        try:
            return build(answer)
        except ParseError as exc:
            malformed = MalformedResponse(endpoint, answer.text, str(exc))
            if self._on_malformed is not None:
                metrics.malformed_messages.labels("rest").inc()
                self._on_malformed(
                    RawMessage(
                        id=new_id(),
                        received_at=answer.received_at,
                        source="rest",
                        event=endpoint,
                        payload=malformed.text,
                        error=malformed.reason,
                    )
                )
            raise malformed from None

    # --- public endpoints -------------------------------------------------------------------

    async def currencies(self) -> list[Currency]:
        return await self._get(
            "currencies",
            "/api/v1/currencies/",
            lambda a: parse.parse_currencies(a.content, a.received_at),
        )

    async def pairs(self, currency1: str | None = None, currency2: str | None = None) -> list[Pair]:
        return await self._get(
            "pairs",
            "/api/v1/pairs/",
            lambda a: parse.parse_pairs(a.content, a.received_at),
            currency1=currency1,
            currency2=currency2,
        )

    async def orderbook(
        self,
        pair: str,
        *,
        grouped: bool = False,
        limit_sell: int | None = None,
        limit_buy: int | None = None,
        reason: str = "interval",
    ) -> OrderBook:
        """A snapshot; `taken_at` is when the request went out, `received_at` its answer."""
        return await self._get(
            "orderbook",
            f"/api/v1/orderbook/{_check_pair(pair)}/",
            lambda a: parse.parse_orderbook(
                a.content,
                pair=pair,
                grouped=grouped,
                taken_at=a.sent_at,
                received_at=a.received_at,
                reason=reason,
            ),
            limit_sell=limit_sell,
            limit_buy=limit_buy,
            group=int(grouped),
        )

    async def order(self, order_id: int) -> AccountOrder:
        return await self._get(
            "order",
            f"/api/v1/order/{int(order_id)}/",
            lambda a: parse.parse_order(a.content, a.received_at),
        )

    async def trades(
        self,
        pair: str | None = None,
        *,
        limit: int | None = None,
        offset: int | None = None,
        ordering: Ordering | None = None,
    ) -> list[Trade]:
        """The trade tape (`/exchanges/`); with `pair`, only that pair's trades."""
        return await self._get(
            "exchanges",
            "/api/v1/exchanges/",
            lambda a: parse.parse_trades(a.content, a.received_at, pair),
            pair=_check_pair(pair) if pair is not None else None,
            limit=limit,
            offset=offset,
            ordering=ordering,
        )

    async def candles(
        self,
        pair: str,
        resolution: str,
        *,
        limit: int | None = None,
        since: datetime | int | None = None,
        until: datetime | int | None = None,
    ) -> list[Candle]:
        """Chart candles of one resolution (`1 5 15 30 60 240 D`); `since`/`until` unix s."""
        if resolution not in CANDLE_TYPES:
            raise ValueError(f"not a chart type ({' '.join(CANDLE_TYPES)}): {resolution!r}")
        return await self._get(
            "chart",
            f"/api/charts/{_check_pair(pair)}/{quote(resolution)}/chart",
            lambda a: parse.parse_candles(
                a.content, pair=pair, resolution=resolution, updated_at=a.received_at
            ),
            limit=limit,
            since=_unix_s(since) if since is not None else None,
            until=_unix_s(until) if until is not None else None,
        )

    # --- private endpoints ------------------------------------------------------------------

    async def wallets(self, currency_id: int | str | None = None) -> list[AccountWallet]:
        return await self._get(
            "wallets",
            "/api/v1/wallets/",
            lambda a: parse.parse_wallets(a.content, a.received_at),
            private=True,
            currency_id=currency_id,
        )

    async def own_orders(
        self,
        *,
        type: Side | None = None,  # the API's name
        pair: str | None = None,
        status: int | None = None,
        limit: int | None = None,
    ) -> list[AccountOrder]:
        return await self._get(
            "orders_own",
            "/api/v1/orders/own/",
            lambda a: parse.parse_orders(a.content, a.received_at),
            private=True,
            type=type,
            pair=pair,
            status=status,
            limit=limit,
        )

    async def create_order(
        self, pair: str, side: Side, amount: Decimal, price: Decimal
    ) -> NewOrder:
        """Place an order; the answer tells what remains of it and the trades it made."""
        form: dict[str, PayloadValue] = {
            "type": side,
            "pair": _check_pair(pair),
            "amount": amount,
            "price": price,
        }
        answer = await self.request(
            "order_create", "POST", "/api/v1/order/", form=form, private=True
        )
        return self._parsed(
            "order_create",
            answer,
            lambda a: parse.parse_created_order(a.content, pair=pair, received_at=a.received_at),
        )

    async def cancel_order(self, order_id: int) -> int:
        """Cancel an active order of the account; the id the exchange confirms."""
        answer = await self.request(
            "order_cancel",
            "POST",
            "/api/v1/order-cancel/",
            form={"order": int(order_id)},
            private=True,
        )
        return self._parsed(
            "order_cancel", answer, lambda a: parse.parse_cancelled_order(a.content)
        )

    async def own_trades(
        self,
        *,
        type: Side | None = None,  # the API's name
        pair: str | None = None,
        limit: int | None = None,
        offset: int | None = None,
        ordering: Ordering | None = None,
    ) -> list[AccountTrade]:
        return await self._get(
            "exchanges_own",
            "/api/v1/exchanges/own/",
            lambda a: parse.parse_own_trades(a.content, a.received_at),
            private=True,
            type=type,
            pair=pair,
            limit=limit,
            offset=offset,
            ordering=ordering,
        )

    async def deposits(self) -> list[AccountDeposit]:
        return await self._get(
            "deposits",
            "/api/v1/deposits/",
            lambda a: parse.parse_deposits(a.content, a.received_at),
            private=True,
        )

    async def withdraws(
        self, *, currency_id: int | str | None = None, status: int | None = None
    ) -> list[AccountWithdraw]:
        return await self._get(
            "withdraws",
            "/api/v1/withdraws/",
            lambda a: parse.parse_withdraws(a.content, a.received_at),
            private=True,
            currency_id=currency_id,
            status=status,
        )

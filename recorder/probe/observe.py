"""What the probe needs to see of each HTTP exchange that the REST client hides.

The probe uses the recorder's own `ExchangeClient`, so that it tests exactly what recording
will do; this transport underneath it notes each answer's status, its `Date` header (the
exchange's clock) and our clock when the request went out and the answer came back.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import httpx


@dataclass(frozen=True, slots=True)
class HttpExchange:
    path: str
    status: int
    date: str | None
    """The answer's `Date` header, verbatim."""
    sent_s: float
    """Our clock (unix seconds) when the request went out."""
    received_s: float
    """Our clock when the answer's headers arrived."""


class ObservingTransport(httpx.AsyncBaseTransport):
    """An httpx transport that keeps an `HttpExchange` for every answer it passes on."""

    def __init__(self, inner: httpx.AsyncBaseTransport | None = None) -> None:
        self._inner = inner or httpx.AsyncHTTPTransport()
        self.exchanges: list[HttpExchange] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        sent_s = time.time()
        response = await self._inner.handle_async_request(request)
        self.exchanges.append(
            HttpExchange(
                request.url.path,
                response.status_code,
                response.headers.get("date"),
                sent_s,
                time.time(),
            )
        )
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()

"""Fixtures for the simulator's tests: a running simulator on a free loopback port."""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from decimal import Decimal
from typing import Any

import aiohttp
import pytest
import socketio

from recorder.sim.auth import sign
from recorder.sim.server import SimSettings, Simulator, run_sim
from tests.harness.waiting import eventually

FAST = SimSettings(seed=3, pairs=("BTC_USD", "ETH_BTC"), rate_per_s=40.0, history_hours=0.5,
                   record_deliveries=True)  # fmt: skip
"""Noting what each connection was sent, so that a test can wait until its client got it."""


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with run_sim(FAST) as running:
        yield running


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        yield session


async def get_json(http: aiohttp.ClientSession, url: str) -> tuple[int, Any]:
    """Status and body, the body parsed with exact decimals."""
    async with http.get(url) as response:
        text = await response.text()
        return response.status, json.loads(text, parse_float=Decimal)


_nonces = itertools.count(int(time.time() * 1000))


def auth_headers(key: str, secret: str, payload: dict[str, str]) -> dict[str, str]:
    return {"X-KEY": key, "X-SIGN": sign(key, secret, payload), "X-NONCE": str(next(_nonces))}


async def private(
    http: aiohttp.ClientSession,
    sim: Simulator,
    path: str,
    payload: dict[str, str] | None = None,
    account: str = "alice",
) -> tuple[int, Any]:
    """A signed call as `account`: a POST with a form body when `payload` is given."""
    credentials = sim.accounts.by_name[account].credentials
    headers = auth_headers(credentials.key, credentials.secret, payload or {})
    url = sim.base_url + path
    request = (
        http.post(url, data=payload, headers=headers) if payload else http.get(url, headers=headers)
    )
    async with request as response:
        return response.status, json.loads(await response.text(), parse_float=Decimal)


class DecimalPacket(socketio.packet.Packet):  # type: ignore[misc]
    """Client side: read socket payloads with exact decimals."""

    class json:
        @staticmethod
        def dumps(value: Any, **kwargs: Any) -> str:
            return json.dumps(value, **kwargs)

        @staticmethod
        def loads(text: str | bytes, **_kwargs: Any) -> Any:
            return json.loads(text, parse_float=Decimal)


def socket_client() -> socketio.AsyncClient:
    return socketio.AsyncClient(serializer=DecimalPacket, reconnection=False)


def shape(value: Any) -> Any:
    """Keys and JSON types, recursively (a list: the shape of its first item)."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [shape(value[0])] if value else []
    return type(value).__name__


def delivered(sim: Simulator) -> int:
    """Items (events and garbage) the simulator has handed to socket.io for any client."""
    assert sim.deliveries is not None, "the simulator must run with record_deliveries=True"
    return sum(len(c.items) for c in sim.deliveries.connections.values())


async def unthrottled(call: Callable[[], Awaitable[tuple[int, Any]]]) -> tuple[int, Any]:
    """`call()`'s status and body once it is not answered 429: called again while the rate
    limit's window is full (a refused call does not count against it)."""

    async def answer() -> tuple[int, Any] | None:
        status, body = await call()
        return None if status == 429 else (status, body)

    return await eventually(answer, timeout_s=5, what="an answer other than 429")

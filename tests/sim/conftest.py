"""Fixtures for the simulator's tests: a running simulator on a free loopback port."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import aiohttp
import pytest
import socketio

from recorder.sim.auth import sign
from recorder.sim.server import SimSettings, Simulator, run_sim

FAST = SimSettings(seed=3, pairs=("BTC_USD", "ETH_BTC"), rate_per_s=40.0, history_hours=0.5)


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


async def until(condition: Any, timeout_s: float = 5.0) -> None:
    """Wait until `condition()` holds (what a socket client collected, say)."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.01)

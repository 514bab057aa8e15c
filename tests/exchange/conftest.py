"""Fixtures of the exchange tests: a real loopback exchange; every test here is quick."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.exchange.loopback import FakeExchange

TEST_TIMEOUT_S = 60


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/exchange/" in str(item.path).replace("\\", "/"):
            item.add_marker(pytest.mark.timeout(TEST_TIMEOUT_S))


@pytest.fixture
async def exchange() -> AsyncIterator[FakeExchange]:
    server = FakeExchange()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()

"""Shared fixtures: a real PostgreSQL for the suite, a fresh database for each test module.

The server is the one at RECORDER_TEST_DSN when that is set (its role needs CREATEDB);
otherwise an embedded PostgreSQL (pgserver) in a temporary directory, started once for the
session and stopped at its end. Each test module gets a database of its own, dropped after
the module, so no test sees another module's rows. A test that crashes its database gets a
server of its own (`own_pg`). The parts behind these live in tests/harness/postgres.py.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator

import pytest

from tests.dialects import DIALECTS
from tests.harness.postgres import EmbeddedPostgres, embedded_postgres, fresh_database

TEST_DSN_VARIABLE = "RECORDER_TEST_DSN"


@pytest.fixture(scope="session")
def pg_server_dsn() -> Iterator[str]:
    """DSN of a PostgreSQL server on which the suite may create and drop databases."""
    external = os.environ.get(TEST_DSN_VARIABLE, "").strip()
    if external:
        yield external
        return
    with embedded_postgres() as server:
        yield server.dsn


@pytest.fixture(scope="module")
def pg_dsn(pg_server_dsn: str, request: pytest.FixtureRequest) -> Iterator[str]:
    """DSN of a fresh, empty database that belongs to the requesting test module."""
    with fresh_database(pg_server_dsn, request.module.__name__) as dsn:
        yield dsn


@pytest.fixture
def db(pg_server_dsn: str, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh database for one test (tests that compare a run with its own simulator)."""
    with fresh_database(pg_server_dsn, request.node.name) as dsn:
        yield dsn


@pytest.fixture
def own_pg() -> Iterator[EmbeddedPostgres]:
    """A PostgreSQL of the test's own, which it may `crash()` and `restart()`; deleted after."""
    with embedded_postgres("recorder-test-own-pg-") as server:
        yield server


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """Put the root logger's handlers and level back after a test that configured logging
    (`configure_logging`, or `main()` pointing it at the test's captured stderr)."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture(params=list(DIALECTS))
def dialect(request: pytest.FixtureRequest) -> str:
    """Each reading of what the exchange's docs leave open, in turn (tests/dialects.py)."""
    return str(request.param)

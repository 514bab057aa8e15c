"""Shared fixtures: a real PostgreSQL for the suite, a fresh database for each test module.

The server is the one at RECORDER_TEST_DSN when that is set (its role needs CREATEDB);
otherwise an embedded PostgreSQL (pgserver) in a temporary directory, started once for the
session and stopped at its end. Each test module gets a database of its own, dropped after
the module, so no test sees another module's rows.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

TEST_DSN_VARIABLE = "RECORDER_TEST_DSN"


@pytest.fixture(scope="session")
def pg_server_dsn() -> Iterator[str]:
    """DSN of a PostgreSQL server on which the suite may create and drop databases."""
    external = os.environ.get(TEST_DSN_VARIABLE, "").strip()
    if external:
        yield external
        return
    import pgserver

    # Under /tmp rather than pytest's tmp_path: as root, pgserver runs postgres as an
    # unprivileged user, who cannot enter pytest's private (0700) temporary directories.
    data_dir = Path(tempfile.mkdtemp(prefix="recorder-test-pg-"))
    server = pgserver.get_server(data_dir, cleanup_mode="delete")
    try:
        yield server.get_uri()
    finally:
        server.cleanup()
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def pg_dsn(pg_server_dsn: str, request: pytest.FixtureRequest) -> Iterator[str]:
    """DSN of a fresh, empty database that belongs to the requesting test module."""
    with fresh_database(pg_server_dsn, request.module.__name__) as dsn:
        yield dsn


@contextmanager
def fresh_database(server_dsn: str, owner: str) -> Iterator[str]:
    """Create a database named after `owner` (a test module) on the server; drop it after."""
    module = re.sub(r"[^a-z0-9]+", "_", owner.rsplit(".", 1)[-1].lower())
    name = f"t_{module[:40]}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server_dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield make_conninfo(server_dsn, dbname=name)
    finally:
        with psycopg.connect(server_dsn, autocommit=True) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


@pytest.fixture
def db(pg_server_dsn: str, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh database for one test (tests that compare a run with its own simulator)."""
    with fresh_database(pg_server_dsn, request.node.name) as dsn:
        yield dsn


@pytest.fixture
def own_pg_server() -> Iterator[Any]:
    """A PostgreSQL of the test's own, which it may kill (`pg_ctl -m immediate stop`) and
    start again (`ensure_postgres_running()`); deleted after the test."""
    import pgserver

    data_dir = Path(tempfile.mkdtemp(prefix="recorder-test-own-pg-"))
    server = pgserver.get_server(data_dir / "pg", cleanup_mode="delete")
    try:
        yield server
    finally:
        server.cleanup()
        shutil.rmtree(data_dir, ignore_errors=True)


def crash(server: Any) -> None:
    """Stop `server` the way a crash does: no checkpoint, connections cut."""
    import pgserver

    pgserver.pg_ctl(["-m", "immediate", "stop"], pgdata=server.pgdata, user=server.system_user)

"""Storage tests run twice: on plain PostgreSQL and on PostgreSQL with TimescaleDB.

The TimescaleDB server is the build in ../shared/timescaledb (see its README), started once
per session in a temporary directory. Where that folder is absent (a checkout without the
project's shared tools) the TimescaleDB half is skipped, saying why; in CI it is present.
"""

from __future__ import annotations

import os
import runpy
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness.postgres import fresh_database

TSDB_SCRIPT = Path(__file__).resolve().parents[2].parent / "shared" / "timescaledb" / "tsdb.py"


@pytest.fixture(scope="session")
def tsdb_server_dsn() -> Iterator[str]:
    if not TSDB_SCRIPT.exists():
        if os.environ.get("CI"):
            pytest.fail(f"CI must test TimescaleDB too, but there is no build at {TSDB_SCRIPT}")
        pytest.skip(f"no TimescaleDB build at {TSDB_SCRIPT}")
    tsdb = runpy.run_path(str(TSDB_SCRIPT))
    # Under /tmp: as root, the server runs as an unprivileged user (see tests/harness/postgres.py).
    data_dir = Path(tempfile.mkdtemp(prefix="recorder-test-tsdb-"))
    dsn: str = tsdb["start"](str(data_dir))
    try:
        yield dsn
    finally:
        tsdb["stop"](str(data_dir))
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture(scope="module", params=["postgres", "timescaledb"])
def db_dsn(request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh empty database, on plain PostgreSQL and then on TimescaleDB."""
    server_fixture = "pg_server_dsn" if request.param == "postgres" else "tsdb_server_dsn"
    server_dsn: str = request.getfixturevalue(server_fixture)
    with fresh_database(server_dsn, request.module.__name__) as dsn:
        yield dsn

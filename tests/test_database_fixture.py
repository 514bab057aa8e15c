"""The suite's database fixture gives a real PostgreSQL, a fresh database per module.

The same checks live in test_database_isolation.py: whichever module runs second would find
the first one's table and row if modules shared a database.
"""

from __future__ import annotations

import psycopg
import pytest

SEEN_DATABASES: set[str] = set()


def check_fresh_database(pg_dsn: str) -> None:
    with psycopg.connect(pg_dsn) as conn:
        (name,) = conn.execute("SELECT current_database()").fetchone() or ("",)
        assert name not in SEEN_DATABASES
        SEEN_DATABASES.add(name)
        # Without IF NOT EXISTS: fails if another module's table is visible here.
        conn.execute("CREATE TABLE isolation_probe (v numeric NOT NULL)")
        conn.execute("INSERT INTO isolation_probe VALUES ('100000000.00000001')")
        (count,) = conn.execute("SELECT count(*) FROM isolation_probe").fetchone() or (0,)
        assert count == 1


def test_module_gets_a_fresh_database(pg_dsn: str) -> None:
    check_fresh_database(pg_dsn)


def test_real_postgres_round_trips_exact_decimals(pg_dsn: str) -> None:
    with psycopg.connect(pg_dsn) as conn:
        (major,) = conn.execute("SHOW server_version_num").fetchone() or ("0",)
        assert int(major) >= 140000
        row = conn.execute("SELECT '0.1'::numeric + '0.2'::numeric = '0.3'::numeric").fetchone()
        assert row == (True,)


def test_server_outlives_modules(pg_server_dsn: str, pg_dsn: str) -> None:
    with psycopg.connect(pg_server_dsn) as conn:
        names = {r[0] for r in conn.execute("SELECT datname FROM pg_database").fetchall()}
    with psycopg.connect(pg_dsn) as conn:
        (mine,) = conn.execute("SELECT current_database()").fetchone() or ("",)
    assert mine in names


@pytest.mark.parametrize("attempt", [1, 2])
def test_tests_within_a_module_share_its_database(pg_dsn: str, attempt: int) -> None:
    with psycopg.connect(pg_dsn) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS shared_within_module (attempt int)")
        conn.execute("INSERT INTO shared_within_module VALUES (%s)", (attempt,))
        (count,) = conn.execute("SELECT count(*) FROM shared_within_module").fetchone() or (0,)
        assert count == attempt

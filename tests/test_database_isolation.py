"""A second module on the shared server: it must not see test_database_fixture.py's rows."""

from __future__ import annotations

from tests.test_database_fixture import check_fresh_database


def test_second_module_gets_its_own_database(pg_dsn: str) -> None:
    check_fresh_database(pg_dsn)

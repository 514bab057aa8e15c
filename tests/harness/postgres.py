"""PostgreSQL for tests and benches: an embedded server that can be crashed, databases on it.

`EmbeddedPostgres` is a pgserver PostgreSQL in a temporary directory of its own. The suite
starts one for the session (unless RECORDER_TEST_DSN names a server); a test or bench that
means to kill the database starts its own, so that the crash hurts nobody else.
`fresh_database` makes one database per test module or bench run and drops it after.
"""

from __future__ import annotations

import re
import shutil
import tempfile
import uuid
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

# pgserver asks platformdirs for a runtime directory, which root sessions lack: harmless.
warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")


class EmbeddedPostgres:
    """A PostgreSQL server of its own, started at construction; `crash()` and `restart()`
    take it down the way a crash does and bring it back; `cleanup()` deletes it."""

    def __init__(self, prefix: str = "recorder-test-pg-") -> None:
        import pgserver  # type: ignore[import-untyped]

        # Under /tmp rather than pytest's tmp_path: as root, pgserver runs postgres as an
        # unprivileged user, who cannot enter pytest's private (0700) temporary directories.
        self.root = Path(tempfile.mkdtemp(prefix=prefix))
        self._server: Any = pgserver.get_server(self.root / "pg", cleanup_mode="delete")
        self.dsn: str = self._server.get_uri()
        self.pgdata = Path(self._server.pgdata)

    def crash(self) -> None:
        """Stop the server as a crash does: no checkpoint, every connection cut."""
        import pgserver

        pgserver.pg_ctl(
            ["-m", "immediate", "stop"], pgdata=self._server.pgdata, user=self._server.system_user
        )

    def restart(self) -> None:
        """Start it again (after `crash()`); it recovers from its write-ahead log."""
        self._server.ensure_postgres_running()

    def postmaster_pid(self) -> int:
        return int((self.pgdata / "postmaster.pid").read_text().split()[0])

    def cleanup(self) -> None:
        self._server.cleanup()
        shutil.rmtree(self.root, ignore_errors=True)


@contextmanager
def embedded_postgres(prefix: str = "recorder-test-pg-") -> Iterator[EmbeddedPostgres]:
    server = EmbeddedPostgres(prefix)
    try:
        yield server
    finally:
        server.cleanup()


@contextmanager
def fresh_database(server_dsn: str, owner: str, prefix: str = "t") -> Iterator[str]:
    """Create a database named after `owner` (a test module, a bench run) on the server;
    drop it after."""
    label = re.sub(r"[^a-z0-9]+", "_", owner.rsplit(".", 1)[-1].lower())
    name = f"{prefix}_{label[:40]}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server_dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield make_conninfo(server_dsn, dbname=name)
    finally:
        with psycopg.connect(server_dsn, autocommit=True) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def query(dsn: str, statement: str, *params: Any) -> list[tuple[Any, ...]]:
    """Every row `statement` gives, on a connection of its own."""
    with psycopg.connect(dsn) as conn:
        return conn.execute(statement.encode(), params or None).fetchall()


def count_rows(dsn: str, table: str) -> int:
    statement = sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))
    with psycopg.connect(dsn) as conn:
        row = conn.execute(statement).fetchone()
    return int(row[0]) if row else 0


def empty_tables(dsn: str) -> None:
    """Empty every table but the migrations' own, for the next run on the same database."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        names = conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
            "AND tablename <> 'schema_migrations'"
        ).fetchall()
        if names:
            tables = sql.SQL(", ").join(sql.Identifier(name) for (name,) in names)
            conn.execute(sql.SQL("TRUNCATE {}").format(tables))


def is_timescaledb(db: str | psycopg.Connection[Any]) -> bool:
    """Whether the database (a DSN, or a connection to it) has the TimescaleDB extension."""
    if isinstance(db, str):
        with psycopg.connect(db) as conn:
            return is_timescaledb(conn)
    return bool(db.execute("SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'").rowcount)


def pause_columnstore_policies(conn: psycopg.Connection[Any]) -> None:
    """Stop TimescaleDB's columnstore policies converting chunks in this database.

    On a new database their scheduler usually runs them during the migration, on empty
    tables; on a loaded machine it may start later, once a test's recording (from 2024, past
    every policy's `after`) is stored, and convert every chunk. A test that converts chunks
    itself, or counts the converted ones, would race it: it pauses the policies before
    storing what it converts."""
    conn.execute(
        "SELECT alter_job(job_id, scheduled => false) FROM timescaledb_information.jobs "
        "WHERE proc_name = 'policy_compression'"
    )


NOT_MIGRATED = (psycopg.errors.UndefinedTable,)
"""What a query raises before the recorder has migrated: "not yet" to `eventually`."""

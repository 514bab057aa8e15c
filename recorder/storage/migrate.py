"""Apply the SQL migrations in `migrations/`: ordered, checksummed, one transaction each.

Files are named `NNNN_description.sql` and applied in the order of NNNN. Each applied file
is recorded in `schema_migrations` with the SHA-256 of its text; an applied file whose text
has changed since is an error, never silently re-run (write a new migration instead). A
database that has applied a migration this recorder does not know (a newer recorder ran
there) is an error too: this code would not know the schema it writes to.

Two recorders starting at once take turns on a session advisory lock, so each file runs
exactly once.

Why our own runner: the whole job is ~100 lines on psycopg, which we use anyway. Alembic
would bring SQLAlchemy and Python migration files; yoyo-migrations brings its own lock and
bookkeeping tables and does not refuse edited files. Plain SQL files are what a database
administrator can read and apply by hand.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import psycopg

from recorder.logs import get_logger

log = get_logger(__name__)

# An arbitrary constant: the key of the advisory lock that serialises migration runs.
MIGRATION_LOCK_KEY = 7_361_824_019_122_605_101

_FILE_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


class MigrationError(Exception):
    """The migrations cannot be applied safely; the message says why."""


@dataclass(frozen=True, slots=True)
class Migration:
    version: str
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def migrations_dir() -> Path:
    """Where the SQL files are: inside the installed package, or the source checkout's."""
    packaged = Path(__file__).resolve().parent.parent / "migrations"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[2] / "migrations"


def load_migrations(directory: Path | None = None) -> list[Migration]:
    directory = directory or migrations_dir()
    found: list[Migration] = []
    for path in sorted(directory.glob("*.sql")):
        match = _FILE_NAME.match(path.name)
        if not match:
            raise MigrationError(f"{path}: migration files are named NNNN_description.sql")
        found.append(Migration(match[1], match[2], path.read_text(encoding="utf-8")))
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"{directory}: two migration files share a version number")
    if not found:
        raise MigrationError(f"{directory}: no migrations found")
    return found


def migrate(dsn: str, directory: Path | None = None) -> list[str]:
    """Apply every pending migration; return the versions applied (empty when up to date)."""
    migrations = load_migrations(directory)
    with psycopg.connect(dsn, autocommit=True) as conn:
        # psycopg drops the server's NOTICEs (RAISE NOTICE, "already exists, skipping")
        # unless a handler takes them; this one, for the connection's whole life, logs each.
        conn.add_notice_handler(
            lambda notice: log.info("migration notice", text=notice.message_primary)
        )
        conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_KEY,))
        try:
            return _apply_pending(conn, migrations)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK_KEY,))


def _apply_pending(conn: psycopg.Connection, migrations: list[Migration]) -> list[str]:
    exists = conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL").fetchone()
    if not (exists and exists[0]):
        conn.execute(
            """CREATE TABLE schema_migrations (
                   version    text PRIMARY KEY,
                   name       text NOT NULL,
                   checksum   text NOT NULL,
                   applied_at timestamptz NOT NULL DEFAULT now())"""
        )
    rows = conn.execute("SELECT version, checksum FROM schema_migrations").fetchall()
    applied: dict[str, str] = {str(version): str(checksum) for version, checksum in rows}
    known = {m.version: m for m in migrations}
    for version in sorted(applied):
        if version not in known:
            raise MigrationError(
                f"the database has migration {version}, which this recorder does not have "
                "(was it migrated by a newer version?)"
            )
        if applied[version] != known[version].checksum:
            raise MigrationError(
                f"migration {version}_{known[version].name}.sql was edited after it was "
                "applied; add a new migration instead of changing an applied one"
            )
    done: list[str] = []
    for migration in migrations:
        if migration.version in applied:
            continue
        log.info("applying migration", version=migration.version, name=migration.name)
        with conn.transaction():
            conn.execute(migration.sql.encode())
            conn.execute(
                "INSERT INTO schema_migrations (version, name, checksum) VALUES (%s, %s, %s)",
                (migration.version, migration.name, migration.checksum),
            )
        done.append(migration.version)
    return done


def timescaledb_enabled(dsn: str) -> bool:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'").fetchone()
        return row is not None

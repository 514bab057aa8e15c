"""The embedded default: with `database.dsn` empty, the recorder owns a PostgreSQL.

pgserver ships PostgreSQL binaries in a wheel; the server's data lives in
`<data_dir>/postgres`, it listens on a Unix socket only, and it is stopped when the
recorder exits. When run as root, pgserver runs the server as an unprivileged user of its
own, so every directory above `data_dir` must be traversable by others.

Creating and starting the server takes seconds (initdb, pg_ctl), all of it blocking: the
daemon uses `serving_database`, which does it in a thread so that its event loop (and the
demo's simulator on that loop) runs on meanwhile; the one-shot commands use
`database_dsn`.
"""

from __future__ import annotations

import asyncio
import logging
import warnings
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

from recorder.config import DatabaseConfig
from recorder.logs import get_logger

log = get_logger(__name__)


def _start(data_dir: Path) -> Any:
    """Start (or reuse) the PostgreSQL under `data_dir`; blocks for seconds."""
    with warnings.catch_warnings():
        # platformdirs warns on import when XDG_RUNTIME_DIR is unset (services, containers).
        warnings.simplefilter("ignore")
        import pgserver  # imported here: starting it is the only use, and the import is slow
    # pgserver logs every pg_ctl command line at INFO; keep its warnings and errors only.
    logging.getLogger("pgserver").setLevel(logging.WARNING)

    pgdata = (data_dir / "postgres").resolve()
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    log.info("starting the embedded PostgreSQL", data=str(pgdata))
    return pgserver.get_server(pgdata, cleanup_mode="stop")  # type: ignore[attr-defined]


def _stop(server: Any) -> None:
    log.info("stopping the embedded PostgreSQL", data=str(server.pgdata))
    server.cleanup()


@contextmanager
def embedded_postgres(data_dir: Path) -> Iterator[str]:
    """Start (or reuse) the PostgreSQL under `data_dir`; yield its DSN; stop it after."""
    server = _start(data_dir)
    try:
        yield server.get_uri()
    finally:
        _stop(server)


@contextmanager
def database_dsn(database: DatabaseConfig, data_dir: Path) -> Iterator[str]:
    """The DSN to use: the configured one, or the embedded server's while it runs."""
    if not database.embedded:
        yield database.dsn.get_secret_value()
        return
    with embedded_postgres(data_dir) as dsn:
        yield dsn


@asynccontextmanager
async def serving_database(database: DatabaseConfig, data_dir: Path) -> AsyncIterator[str]:
    """`database_dsn` for code on an event loop: the embedded server starts and stops in a
    thread, and the loop runs on meanwhile."""
    if not database.embedded:
        yield database.dsn.get_secret_value()
        return
    # Shielded: a start cancelled half-way would leave a server running that nobody stops.
    server = await asyncio.shield(asyncio.to_thread(_start, data_dir))
    try:
        yield server.get_uri()
    finally:
        await asyncio.shield(asyncio.to_thread(_stop, server))

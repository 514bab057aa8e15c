"""The migrations: from empty, re-run, refused edits, concurrent starts, the schema itself."""

from __future__ import annotations

import logging
import shutil
import threading
from pathlib import Path

import psycopg
import pytest

from recorder.storage.migrate import MigrationError, load_migrations, migrate, migrations_dir
from tests.harness.postgres import fresh_database, is_timescaledb

# Every table, its key, and the columns researchers rely on, with their types: the schema's
# promise (migrations/0001_schema.sql, docs/research.md), pinned here apart from the code.
SCHEMA_TABLES: dict[str, dict[str, str]] = {
    "currencies": {"short_name": "text", "sign": "text", "first_seen_at": "timestamptz",
                   "updated_at": "timestamptz"},
    "pairs": {"name": "text", "currency1": "text", "currency2": "text",
              "price_precision": "int4", "minimum_order_size": "numeric",
              "maximum_order_size": "numeric", "first_seen_at": "timestamptz",
              "updated_at": "timestamptz"},
    "trades": {"pair": "text", "tid": "int8", "ts": "timestamptz", "type": "text",
               "price": "numeric", "amount": "numeric", "received_at": "timestamptz"},
    "book_events": {"pair": "text", "oid": "int8", "kind": "text", "ts": "timestamptz",
                    "type": "text", "price": "numeric", "amount": "numeric",
                    "cancel_order_id": "int8", "received_at": "timestamptz",
                    "session_id": "uuid"},
    "book_fills": {"pair": "text", "tid": "int8", "oid": "int8", "o_id": "int8",
                   "type": "text", "price": "numeric", "amount": "numeric",
                   "ts": "timestamptz", "received_at": "timestamptz"},
    "book_snapshots": {"snapshot_id": "uuid", "pair": "text", "taken_at": "timestamptz",
                       "received_at": "timestamptz", "grouped": "bool", "reason": "text"},
    "book_snapshot_orders": {"snapshot_id": "uuid", "side": "text", "pos": "int4",
                             "order_id": "int8", "price": "numeric", "amount": "numeric",
                             "order_ts": "timestamptz"},
    "candles": {"pair": "text", "resolution": "text", "bucket": "timestamptz",
                "open": "numeric", "high": "numeric", "low": "numeric", "close": "numeric",
                "volume": "numeric", "updated_at": "timestamptz"},
    "stream_sessions": {"session_id": "uuid", "connected_at": "timestamptz",
                        "disconnected_at": "timestamptz", "reason": "text"},
    "raw_messages": {"id": "uuid", "received_at": "timestamptz", "source": "text",
                     "event": "text", "payload": "text", "error": "text"},
}  # fmt: skip

SCHEMA_KEYS = {
    "currencies": ["short_name"],
    "pairs": ["name"],
    "trades": ["pair", "tid"],
    "book_events": ["pair", "oid", "kind"],
    "book_fills": ["pair", "tid"],
    "book_snapshots": ["snapshot_id"],
    "book_snapshot_orders": ["snapshot_id", "side", "pos"],
    "candles": ["pair", "resolution", "bucket"],
    "stream_sessions": ["session_id"],
    "raw_messages": ["id"],
}
# Views over the table that holds the key (migrations/0020_scaled_prices.sql).
STORED_IN = {"trades": "trades_stored", "book_fills": "book_fills_stored"}


@pytest.fixture(scope="module")
def migrated(db_dsn: str) -> str:
    assert migrate(db_dsn) == [m.version for m in load_migrations()]
    return db_dsn


def test_rerun_applies_nothing(migrated: str) -> None:
    assert migrate(migrated) == []


def test_tables_have_the_promised_columns_and_types(migrated: str) -> None:
    with psycopg.connect(migrated) as conn:
        for table, columns in SCHEMA_TABLES.items():
            rows = conn.execute(
                """SELECT a.attname, t.typname FROM pg_attribute a
                   JOIN pg_type t ON t.oid = a.atttypid
                   WHERE a.attrelid = %s::regclass AND a.attnum > 0 AND NOT a.attisdropped""",
                (table,),
            ).fetchall()
            assert {name: typ for name, typ in rows if name in columns} == columns, table


def test_keys_are_the_promised_keys(migrated: str) -> None:
    """The promised primary key (of the stored table, for a view); on TimescaleDB a
    hypertable's key also holds its time (book_fills' and trades' before their trade id, the
    order their readers read: migrations/0021_hypertable_indexes.sql and
    0022_trades_key_in_time_order.sql)."""
    hypertable_key = {
        "trades": ["pair", "ts", "tid"],
        "book_events": ["pair", "oid", "kind", "ts"],
        "book_fills": ["pair", "ts", "tid"],
        "book_snapshot_orders": ["snapshot_id", "side", "pos", "taken_at"],
    }
    timescale = is_timescaledb(migrated)
    with psycopg.connect(migrated) as conn:
        for table, key in SCHEMA_KEYS.items():
            row = conn.execute(
                """SELECT array_agg(a.attname ORDER BY k.ord) FROM pg_index i
                   CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
                   JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
                   WHERE i.indrelid = %s::regclass AND i.indisprimary""",
                (STORED_IN.get(table, table),),
            ).fetchone()
            assert row is not None
            expected = hypertable_key[table] if timescale and table in hypertable_key else key
            # the promised key's columns, and the time: the same rows are unique
            assert set(expected) - set(key) <= {"ts", "taken_at"}, table
            assert row[0] == expected, table


def test_timescaledb_objects_exist_only_with_the_extension(migrated: str) -> None:
    with psycopg.connect(migrated) as conn:
        if not is_timescaledb(migrated):
            kinds = dict(
                conn.execute(
                    "SELECT relname, relkind FROM pg_class WHERE relname LIKE 'ohlcv_%'"
                ).fetchall()
            )
            assert kinds == {"ohlcv_1m": "v", "ohlcv_1h": "v", "ohlcv_1d": "v"}
            return
        hypertables = {
            r[0]
            for r in conn.execute(
                "SELECT hypertable_name FROM timescaledb_information.hypertables "
                "WHERE compression_enabled"
            )
        }
        stored = {"trades_stored", "book_events", "book_fills_stored", "candles"}
        assert stored <= hypertables
        assert not {"trades", "book_fills"} & hypertables  # views over the stored tables
        # 0003's columnstore policy (after 7 days) on each stored table, none left elsewhere
        policies = dict(
            conn.execute(
                "SELECT hypertable_name, config->>'compress_after' "
                "FROM timescaledb_information.jobs WHERE proc_name = 'policy_compression'"
            ).fetchall()
        )
        assert policies["trades_stored"] == policies["book_fills_stored"] == "7 days"
        assert set(policies) <= {*stored, "book_snapshot_orders"}
        caggs = {
            r[0]
            for r in conn.execute(
                "SELECT view_name FROM timescaledb_information.continuous_aggregates"
            )
        }
        assert caggs == {"ohlcv_1m", "ohlcv_1h", "ohlcv_1d"}
        jobs = {
            r[0]
            for r in conn.execute("SELECT DISTINCT proc_name FROM timescaledb_information.jobs")
        }
        assert {"policy_compression", "policy_refresh_continuous_aggregate"} <= jobs


def test_research_role_reads_only_and_writer_role_has_no_ddl(migrated: str) -> None:
    with psycopg.connect(migrated, autocommit=True) as conn:
        conn.execute("SET ROLE recorder_research")
        conn.execute("SELECT count(*) FROM trades")
        conn.execute("SELECT * FROM book_at('BTC_USD', now())")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(
                "INSERT INTO raw_messages VALUES (gen_random_uuid(), now(), 's', NULL, 'p', 'e')"
            )
        conn.execute("RESET ROLE")
        conn.execute("SET ROLE recorder_writer")
        conn.execute(
            "INSERT INTO raw_messages VALUES (gen_random_uuid(), now(), 's', NULL, 'p', 'e')"
        )
        for ddl in (
            "CREATE TABLE sneaky (x int)",
            "DROP TABLE trades_stored",
            "DROP VIEW trades",
            "ALTER TABLE trades_stored ADD x int",
            "TRUNCATE trades_stored",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(ddl)


def copy_migrations(tmp_path: Path) -> Path:
    directory = tmp_path / "migrations"
    shutil.copytree(migrations_dir(), directory)
    return directory


def test_an_edited_applied_migration_is_refused(pg_server_dsn: str, tmp_path: Path) -> None:
    directory = copy_migrations(tmp_path)
    with fresh_database(pg_server_dsn, "edited") as dsn:
        migrate(dsn, directory)
        first = directory / "0001_schema.sql"
        first.write_text(first.read_text() + "\n-- an innocent-looking edit\n")
        with pytest.raises(MigrationError, match=r"0001_schema\.sql was edited"):
            migrate(dsn, directory)


def test_a_migration_unknown_to_this_recorder_is_refused(
    pg_server_dsn: str, tmp_path: Path
) -> None:
    directory = copy_migrations(tmp_path)
    with fresh_database(pg_server_dsn, "newer") as dsn:
        (directory / "0999_from_the_future.sql").write_text("SELECT 1;")
        migrate(dsn, directory)
        (directory / "0999_from_the_future.sql").unlink()
        with pytest.raises(MigrationError, match="0999"):
            migrate(dsn, directory)


def test_a_failing_migration_leaves_nothing_half_done(pg_server_dsn: str, tmp_path: Path) -> None:
    directory = copy_migrations(tmp_path)
    (directory / "0999_broken.sql").write_text("CREATE TABLE half (x int);\nSELECT 1/0;")
    with fresh_database(pg_server_dsn, "broken") as dsn:
        with pytest.raises(psycopg.errors.DivisionByZero):
            migrate(dsn, directory)
        with psycopg.connect(dsn) as conn:
            assert conn.execute("SELECT to_regclass('half')").fetchone() == (None,)
            versions = [r[0] for r in conn.execute("SELECT version FROM schema_migrations")]
            assert "0999" not in versions
            assert "0001" in versions


def test_concurrent_starts_apply_each_file_once(pg_server_dsn: str) -> None:
    with fresh_database(pg_server_dsn, "concurrent") as dsn:
        results: list[list[str]] = []
        errors: list[BaseException] = []

        def run() -> None:
            try:
                results.append(migrate(dsn))
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=run) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        applied = sorted(v for result in results for v in result)
        assert applied == [m.version for m in load_migrations()]


def test_bad_file_names_are_refused(tmp_path: Path) -> None:
    (tmp_path / "1_oops.sql").write_text("SELECT 1;")
    with pytest.raises(MigrationError, match="NNNN_description"):
        load_migrations(tmp_path)


def test_recorder_migrate_command_on_the_embedded_database() -> None:
    """`recorder migrate` with no DSN starts the embedded server, migrates, and stops it."""
    import subprocess
    import sys
    import tempfile

    data_dir = Path(tempfile.mkdtemp(prefix="recorder-test-migrate-"))
    try:
        env = {"RECORDER_RECORDER__DATA_DIR": str(data_dir), "PATH": "/usr/bin:/bin"}
        command = [sys.executable, "-m", "recorder", "migrate"]
        first = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
        assert first.returncode == 0, first.stderr
        assert '"migrations applied"' in first.stderr
        second = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
        assert second.returncode == 0, second.stderr
        assert "up to date" in second.stderr
        assert "pg_ctl" not in second.stderr  # pgserver's chatter stays out of our logs
        pid_file = data_dir / "postgres" / "postmaster.pid"
        assert not pid_file.exists(), "the embedded server was left running"
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


def test_recorder_migrate_exits_3_when_the_database_cannot_be_reached() -> None:
    import subprocess
    import sys

    env = {"RECORDER_DATABASE__DSN": "postgresql://rec:hunter22@127.0.0.1:9/x", "PATH": "/usr/bin"}
    done = subprocess.run([sys.executable, "-m", "recorder", "migrate"], env=env,
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 3
    assert "cannot reach the database" in done.stderr
    assert "hunter22" not in done.stderr + done.stdout


def test_each_notice_of_a_migration_is_logged_once(
    pg_server_dsn: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "0001_notice.sql").write_text(
        "DO $$ BEGIN RAISE NOTICE 'a notice from a migration'; END $$;"
    )
    caplog.set_level(logging.INFO)
    with fresh_database(pg_server_dsn, "notices") as dsn:
        assert migrate(dsn, tmp_path) == ["0001"]
    notices = [
        record.fields["text"]  # type: ignore[attr-defined]
        for record in caplog.records
        if record.getMessage() == "migration notice"
    ]
    assert notices == ["a notice from a migration"]

"""The installed `recorder` command."""

from __future__ import annotations

import shutil
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

from recorder import exitcodes
from recorder.cli import main


def test_console_script_shows_help() -> None:
    # The script beside this interpreter, i.e. in the virtualenv under test.
    exe = shutil.which("recorder") or str(Path(sys.executable).parent / "recorder")
    result = subprocess.run(
        [exe, "--help"], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0
    assert "config" in result.stdout


def test_version() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "recorder", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.stdout.strip() == version("bitexbit-recorder")


def test_sql_prints_the_rows_as_a_table(
    pg_dsn: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("RECORDER_DATABASE__DSN", pg_dsn)
    code = main(["sql", "SELECT 1.10::numeric AS price, 'BTC_USD' AS pair, NULL AS nothing"])
    assert code == exitcodes.OK
    assert capsys.readouterr().out.splitlines() == [
        "price | pair    | nothing",
        "------+---------+--------",
        "1.10  | BTC_USD |        ",
        "(1 rows)",
    ]
    assert main(["sql", "SET TIME ZONE 'UTC'"]) == exitcodes.OK  # a statement without rows
    assert capsys.readouterr().out.endswith("(0 rows)\n")


@pytest.mark.parametrize(
    "command",
    [["sql", "SELECT 1"], ["coverage"], ["export", "--table", "trades", "--format", "csv"]],
)
def test_commands_exit_3_when_the_database_cannot_be_reached(
    command: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("RECORDER_DATABASE__DSN", "postgresql://rec:hunter22@127.0.0.1:9/x")
    if command[0] == "export":
        command = [*command, "--out", str(tmp_path / "trades.csv")]
    assert main(command) == exitcodes.STARTUP_FAILURE
    err = capsys.readouterr().err
    assert err.startswith(f"recorder {command[0]}: cannot use the database: ")
    assert "hunter22" not in err


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        ("SELEC 1", "syntax error"),
        ("SELECT * FROM no_such_table", "does not exist"),
        ("CREATE TABLE t (x int)", "read-only transaction"),
    ],
)
def test_sql_exits_2_when_the_database_refuses_the_query(
    pg_dsn: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    query: str,
    reason: str,
) -> None:
    # The query is an argument: a bad one is the caller's to fix, not a database failure.
    monkeypatch.setenv("RECORDER_DATABASE__DSN", pg_dsn)
    assert main(["sql", query]) == exitcodes.BAD_CONFIG
    err = capsys.readouterr().err
    assert err.startswith("recorder sql: the database refused the query: ")
    assert reason in err

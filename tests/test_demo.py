"""What `recorder demo` tells a new user to paste into another terminal works there."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from recorder.config import load_config
from recorder.demo import QUERIES, recorder_command, welcome
from recorder.storage.migrate import migrate

# A new user's other terminal: the system's PATH, no virtualenv activated.
BARE_PATH = "/usr/bin:/bin"


def test_the_suggested_queries_run_from_a_shell_without_the_virtualenv(
    pg_dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    migrate(pg_dsn)
    monkeypatch.chdir(tmp_path)  # the demo's data directory is relative to where it started
    config = load_config(None)
    commands = [
        line.strip()
        for line in welcome("http://127.0.0.1:1", pg_dsn, config).splitlines()
        if " sql " in line
    ]
    assert len(commands) == len(QUERIES)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for command in commands:
        data_dir = shlex.split(command)[0]
        assert data_dir == f"RECORDER_RECORDER__DATA_DIR={tmp_path / config.recorder.data_dir}"
        # The database is the test's (the variable wins over the embedded one): what is
        # tested here is that the shell finds the command and the query runs.
        done = subprocess.run(
            ["/bin/sh", "-c", command],
            cwd=elsewhere,
            env={"PATH": BARE_PATH, "RECORDER_DATABASE__DSN": pg_dsn},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, (command, done.stderr)
        assert done.stdout.endswith(" rows)\n")


def test_without_a_script_beside_the_interpreter_the_module_is_run(tmp_path: Path) -> None:
    command = recorder_command(bin_dir=tmp_path)
    assert command == f"{shlex.quote(sys.executable)} -m recorder"
    done = subprocess.run(
        ["/bin/sh", "-c", f"{command} --version"],
        cwd=tmp_path,
        env={"PATH": BARE_PATH},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip()

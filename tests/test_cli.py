"""The installed `recorder` command."""

from __future__ import annotations

import shutil
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path


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

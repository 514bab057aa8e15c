#!/usr/bin/env python3
"""The project's one entry point for people and CI; needs nothing but Python 3.11+.

    python3 dev.py demo     set up .venv, then run `recorder demo` (Ctrl-C stops it)
    python3 dev.py test     set up .venv, then lint (ruff), type-check (mypy), test (pytest)
    python3 dev.py bench NAME [ARGS]
                            set up .venv, then run bench/NAME.py (`bench` alone lists them)

Extra arguments after `test` go to pytest (`python3 dev.py test -k config -x`).
The virtualenv lives in .venv and is reinstalled only when what the install builds from
changes: pyproject.toml, and the C encoder with its build hook (BUILT_FROM).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
STAMP = VENV / ".installed-from"
BUILT_FROM = ("pyproject.toml", "hatch_build.py", "recorder/storage/_numeric.c")

PYTEST_NO_TESTS_COLLECTED = 5


def say(message: str) -> None:
    print(f"dev.py: {message}", file=sys.stderr, flush=True)


def run(*command: str | Path) -> int:
    say("$ " + " ".join(str(part) for part in command))
    with subprocess.Popen([str(part) for part in command], cwd=ROOT) as child:
        while True:
            try:
                return child.wait()
            except KeyboardInterrupt:
                # Ctrl-C reached the child too (same process group): let it stop in its own
                # time. subprocess.call would SIGKILL it 0.25 s later, before `recorder demo`
                # has committed its buffer and stopped its PostgreSQL.
                continue


def ensure_venv() -> None:
    """Create .venv and install the package with its dev extra, unless already up to date."""
    if sys.version_info < (3, 11):  # noqa: UP036 - dev.py may be run by an older python3
        sys.exit(f"dev.py: Python 3.11 or newer is needed; this is {sys.version.split()[0]}")
    wanted = hashlib.sha256(b"".join((ROOT / name).read_bytes() for name in BUILT_FROM)).hexdigest()
    if STAMP.exists() and STAMP.read_text() == wanted and (BIN / "recorder").exists():
        return
    if not (BIN / "python").exists():
        say(f"creating a virtualenv in {VENV}")
        try:
            venv.create(VENV, with_pip=True)
        except (subprocess.CalledProcessError, OSError) as exc:
            sys.exit(
                f"dev.py: could not create a virtualenv ({exc}); on Debian/Ubuntu install "
                "python3-venv first"
            )
    say("installing the recorder and its development tools into .venv")
    pip = [BIN / "python", "-m", "pip", "install", "--disable-pip-version-check", "--quiet"]
    if run(*pip, "--editable", ".[dev]") != 0:
        sys.exit("dev.py: installation failed (see pip's output above)")
    STAMP.write_text(wanted)


def cmd_demo(args: list[str]) -> int:
    ensure_venv()
    return run(BIN / "recorder", "demo", *args)


def cmd_test(args: list[str]) -> int:
    ensure_venv()
    steps = [
        ("ruff check", [BIN / "ruff", "check", "."]),
        ("ruff format", [BIN / "ruff", "format", "--check", "."]),
        ("mypy", [BIN / "mypy"]),
    ]
    for name, command in steps:
        if run(*command) != 0:
            say(f"FAILED: {name}")
            return 1
    code = run(BIN / "python", "-m", "pytest", *args)
    if code == PYTEST_NO_TESTS_COLLECTED:
        say("FAILED: pytest collected no tests; a run that tests nothing is not a pass")
        return 1
    if code != 0:
        say(f"FAILED: pytest exited {code}")
    return code


def cmd_bench(args: list[str]) -> int:
    scripts = sorted(p.stem for p in (ROOT / "bench").glob("[!_]*.py"))
    if not args or args[0] not in scripts:
        say(f"usage: python3 dev.py bench NAME [ARGS]; NAME is one of: {', '.join(scripts)}")
        return 2
    ensure_venv()
    return run(BIN / "python", ROOT / "bench" / f"{args[0]}.py", *args[1:])


COMMANDS = {"demo": cmd_demo, "test": cmd_test, "bench": cmd_bench}


def main() -> int:
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        print(__doc__, file=sys.stderr)
        return 2
    return COMMANDS[sys.argv[1]](sys.argv[2:])


if __name__ == "__main__":
    sys.exit(main())

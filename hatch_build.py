"""Builds `recorder/storage/_numeric.c`, the writer's numeric encoder, into the package.

Hatchling builds no C by itself; this hook compiles the one small file with the compiler
Python was built with. Where there is none (a slim container, a machine without gcc), the
package is built without it and the writer uses psycopg's encoder instead
(recorder/storage/numeric.py), with a warning here. For an editable install the module is
put next to its source, where the checkout's `recorder` package is imported from.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

SOURCE = Path("recorder/storage/_numeric.c")


def compile_extension(source: Path, target: Path) -> str | None:
    """Compile `source` into the shared object `target`; the error text if it could not."""
    # LDSHARED is how this Python links its own extensions ("gcc -shared ..." on Linux,
    # "-bundle -undefined dynamic_lookup" on macOS): compiled and linked in one step.
    link = shlex.split(sysconfig.get_config_var("LDSHARED") or "cc -shared")
    command = [
        *link, "-O2", "-fPIC", "-Wall", f"-I{sysconfig.get_paths()['include']}",
        str(source), "-o", str(target),
    ]  # fmt: skip
    try:
        done = subprocess.run(command, capture_output=True, text=True, check=False)
    except OSError as exc:
        return str(exc)
    return None if done.returncode == 0 else (done.stderr or done.stdout).strip()


class CustomBuildHook(BuildHookInterface):
    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        root = Path(self.root)
        name = "_numeric" + (sysconfig.get_config_var("EXT_SUFFIX") or ".so")
        if version == "editable":
            target = root / SOURCE.parent / name
        else:
            target = Path(tempfile.mkdtemp(prefix="recorder-build-")) / name
        target.unlink(missing_ok=True)  # never an old build of an older source
        error = compile_extension(root / SOURCE, target)
        if error is not None:
            print(
                f"warning: {SOURCE} not compiled ({error.splitlines()[-1] if error else '?'}); "
                "the writer will use psycopg's slower numeric encoder",
                file=sys.stderr,
            )
            return
        build_data["pure_python"] = False
        build_data["infer_tag"] = True
        if version != "editable":
            build_data["force_include"][str(target)] = f"{SOURCE.parent}/{name}"

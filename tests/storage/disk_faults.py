"""A failing disk under one directory, as the operating system reports it, for the writer's tests.

A full disk cannot be had for real in the test suite: mounting a small tmpfs needs
privileges a container lacks, and root ignores permissions. So the calls the spool makes
(`Path.open`, a file's `write`, `os.fsync`, `os.rename`, `os.unlink`) are wrapped to answer
for paths under one directory exactly as a full or failing disk answers: `OSError(ENOSPC)`
or `OSError(EIO)`. Everything else passes through untouched. A stalled fsync (a slow disk)
blocks in the calling thread until the test releases it.
"""

from __future__ import annotations

import errno
import os
import pathlib
import threading
from pathlib import Path
from typing import Any

import pytest

OPERATIONS = ("create", "write", "fsync", "rename", "directory fsync", "read", "delete")
"""Each call the spool makes, in the order a spill and then a drain make them."""

STALL_LIMIT_S = 10.0
"""A stalled fsync gives up after this long and says so (`stalled_too_long`)."""


class DiskFaults:
    def __init__(self, monkeypatch: pytest.MonkeyPatch, directory: Path) -> None:
        self.directory = directory.resolve()
        self.failing: dict[str, int] = {}
        """Operation -> errno it fails with, while armed."""
        self._failures_left: dict[str, int] = {}
        """Operation -> how many more times it fails, for one armed with `times`."""
        self.failures: dict[str, int] = dict.fromkeys(OPERATIONS, 0)
        """How many times each operation failed."""
        self.stall_fsync = False
        self.fsync_entered = threading.Event()
        self.fsync_release = threading.Event()
        self.stalled_too_long = threading.Event()
        self._real_open = pathlib.Path.open
        self._real_fsync = os.fsync
        self._real_rename = os.rename
        self._real_unlink = os.unlink
        faults = self

        def open_path(path: Path, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
            return faults._open(path, mode, *args, **kwargs)  # a function, to bind as a method

        monkeypatch.setattr(pathlib.Path, "open", open_path)
        monkeypatch.setattr(os, "fsync", self._fsync)
        monkeypatch.setattr(os, "rename", self._rename)
        monkeypatch.setattr(os, "unlink", self._unlink)

    def fail(self, operation: str, code: int = errno.ENOSPC, times: int | None = None) -> None:
        """Make `operation` fail with `code` until heal(), or only its next `times` calls."""
        assert operation in OPERATIONS, operation
        self.failing[operation] = code
        if times is not None:
            self._failures_left[operation] = times

    def heal(self) -> None:
        self.failing.clear()
        self._failures_left.clear()
        self.fsync_release.set()

    def _ours(self, path: Any) -> bool:
        return Path(path).resolve().is_relative_to(self.directory)

    def _maybe_fail(self, operation: str, path: Any) -> None:
        code = self.failing.get(operation)
        if code is not None:
            self.failures[operation] += 1
            if operation in self._failures_left:
                self._failures_left[operation] -= 1
                if not self._failures_left[operation]:
                    del self._failures_left[operation], self.failing[operation]
            raise OSError(code, os.strerror(code), str(path))

    def _open(self, path: Path, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        if not self._ours(path):
            return self._real_open(path, mode, *args, **kwargs)
        writing = any(flag in mode for flag in "wax+")
        self._maybe_fail("create" if writing else "read", path)
        file = self._real_open(path, mode, *args, **kwargs)
        return _FullDiskFile(self, file, path) if writing else file

    def _fsync(self, fd: int) -> None:
        path = Path(os.readlink(f"/proc/self/fd/{fd}"))
        if self._ours(path):
            # A stalled fsync may fail once released, as a dying disk's does.
            if self.stall_fsync and not path.is_dir():
                self.fsync_entered.set()
                if not self.fsync_release.wait(STALL_LIMIT_S):
                    self.stalled_too_long.set()
            self._maybe_fail("directory fsync" if path.is_dir() else "fsync", path)
        self._real_fsync(fd)

    def _rename(self, source: Any, target: Any, **kwargs: Any) -> None:
        if self._ours(source):
            self._maybe_fail("rename", source)
        self._real_rename(source, target, **kwargs)

    def _unlink(self, path: Any, **kwargs: Any) -> None:
        # Only the deletion of a committed segment: cleaning up a failed write must work.
        if self._ours(path) and str(path).endswith(".jsonl"):
            self._maybe_fail("delete", path)
        self._real_unlink(path, **kwargs)


class _FullDiskFile:
    """A file open for writing whose writes fail while "write" is armed (the file exists)."""

    def __init__(self, faults: DiskFaults, file: Any, path: Path) -> None:
        self._faults = faults
        self._file = file
        self._path = path

    def write(self, data: Any) -> int:
        self._faults._maybe_fail("write", self._path)
        return int(self._file.write(data))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._file, name)

    def __enter__(self) -> _FullDiskFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self._file.close()

"""A durable, ordered on-disk queue of records for when the database cannot take them.

The writer spills its oldest buffered records here when its memory buffer is full (the
database is down or slower than the exchange) and on shutdown when the database is
unreachable; it drains the spool, oldest segment first, before anything newer.

Each spill is one segment file of JSON lines, `<sequence>.jsonl`, written to a temporary
name, fsynced and renamed, so a crash leaves either a whole segment or none. Values are
encoded losslessly: Decimals and datetimes as their exact text, UUIDs as strings. A segment
is deleted only after its rows are committed.

Every method that touches the disk blocks: the writer calls them in a worker thread, so a
slow fsync does not stall the event loop. What the spool holds (segments, rows, bytes) is
kept in memory, behind a lock, so the writer's gauges never touch the disk. A failed write
raises its `OSError` and leaves no segment behind: the caller still has the rows.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import types
import typing
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from recorder import records
from recorder.records import Record
from recorder.storage.tables import SPECS

SNAPSHOT_TIMES_KEPT = 10_000

_RECORD_TYPES: dict[str, type[Any]] = {cls.__name__: cls for cls in SPECS}


def _decoder(hint: Any) -> Callable[[Any], Any]:
    """How to turn the JSON value of a field with type `hint` back into its Python value."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        (inner,) = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        decode_inner = _decoder(inner)
        return lambda value: None if value is None else decode_inner(value)
    if hint is Decimal:
        return Decimal
    if hint is datetime:
        return datetime.fromisoformat
    if hint is uuid.UUID:
        return uuid.UUID
    return lambda value: value  # str, int, bool and Literal[...] of str survive JSON as is


_DECODERS: dict[str, list[tuple[str, Callable[[Any], Any]]]] = {
    name: [
        (field.name, _decoder(typing.get_type_hints(cls, vars(records))[field.name]))
        for field in fields(cls)
    ]
    for name, cls in _RECORD_TYPES.items()
}


def _encode_value(value: Any) -> Any:
    if isinstance(value, Decimal | uuid.UUID):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def encode(record: Record) -> str:
    values = [_encode_value(getattr(record, field.name)) for field in fields(record)]
    # ASCII only: a string the file's UTF-8 (or a text column) cannot hold, such as a lone
    # surrogate or NUL, is written as a JSON escape and decodes back to the same string.
    return json.dumps([type(record).__name__, values], separators=(",", ":"))


def decode(line: str, snapshot_times: dict[uuid.UUID, datetime] | None = None) -> Record:
    """The record of a spool line, also one spilled by an older recorder (`_upgraded`).

    `snapshot_times` (snapshot id to its `taken_at`, from the snapshots read before) gives a
    snapshot order spilled without its time the time of its snapshot.
    """
    name, values = json.loads(line)
    decoders = _DECODERS[name]
    values = _upgraded(name, values, len(decoders), snapshot_times or {})
    kwargs = {
        field: decode_value(value)
        for (field, decode_value), value in zip(decoders, values, strict=True)
    }
    record: Record = _RECORD_TYPES[name](**kwargs)
    return record


def _upgraded(
    name: str, values: list[Any], expected: int, snapshot_times: dict[uuid.UUID, datetime]
) -> list[Any]:
    """`values` with the fields a newer recorder added filled in, for a line spilled before
    an upgrade: the spool outlives the version that wrote it."""
    if len(values) == expected:
        return values
    if name == "BookSnapshot" and expected - 2 <= len(values) < expected:
        # events_through (None: unknown) and in_sync (True: book_at's rule until then), the
        # fields recorders before them did not spill.
        return [*values, *[None, True][len(values) - expected :]]
    if name == "SnapshotOrder" and len(values) == expected - 1:
        # taken_at, the table's time column, is the snapshot's; its header is spilled first.
        taken_at = snapshot_times.get(uuid.UUID(values[0]))
        if taken_at is None:
            raise ValueError("a SnapshotOrder spilled without its time, and its snapshot unknown")
        return [*values, taken_at.isoformat()]
    raise ValueError(f"a {name} record has {expected} fields, this line {len(values)}")


@dataclass(frozen=True, slots=True)
class _Segment:
    rows: int
    bytes: int


class UnencodableRecord(Exception):
    """A record with a value JSON cannot hold (bytes, a set): a bug where it was made."""

    def __init__(self, record: Record) -> None:
        super().__init__(f"cannot encode {record!r}")
        self.record = record


class Spool:
    """Segments of spilled records under `directory`, in the order they were spilled.

    One caller at a time writes (the writer's worker); the lock only keeps the bookkeeping
    whole for readers of `rows`, `bytes` and `segments()`, and is never held during I/O.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.opened = False
        """True once `open()` has read what an earlier run left; until then nothing is known."""
        self._segments: dict[Path, _Segment] = {}
        self._next_sequence = 1
        self._lock = threading.Lock()
        self._snapshot_times: dict[uuid.UUID, datetime] = {}
        """The time of the snapshots read last (at most `SNAPSHOT_TIMES_KEPT`), for their
        orders in the lines an older recorder spilled without it."""

    def open(self) -> None:
        """Drop interrupted spills, learn the segments already there (the directory is made
        by the first write)."""
        if self.opened:
            return
        for leftover in self.directory.glob("*.tmp"):  # a spill interrupted before its rename
            leftover.unlink()
        found = {
            path: _Segment(_count_lines(path), path.stat().st_size)
            for path in sorted(self.directory.glob("*.jsonl"))
            if path.stem.isdigit()  # ours are numbered; anything else is not ours to replay
        }
        with self._lock:
            self._segments = found
            self._next_sequence = int(max(found).stem) + 1 if found else 1
            self.opened = True

    def segments(self) -> list[Path]:
        """The segments, oldest first."""
        with self._lock:
            return sorted(self._segments)

    @property
    def rows(self) -> int:
        with self._lock:
            return sum(segment.rows for segment in self._segments.values())

    @property
    def bytes(self) -> int:
        with self._lock:
            return sum(segment.bytes for segment in self._segments.values())

    def probe(self) -> None:
        """Write, sync and remove a small file here; OSError if the spool cannot be written.

        For when no spill is due to find out (`open()` removes a probe a crash left)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / "probe.tmp"
        try:
            with path.open("wb") as out:
                out.write(b"probe\n")
                out.flush()
                os.fsync(out.fileno())
        finally:
            _unlink_quietly(path)

    def append(self, batch: Sequence[Record]) -> Path | None:
        """Write `batch` durably as the newest segment; return it (None for an empty batch).

        When this returns, the rows are on disk; when it raises, no segment was added
        (`UnencodableRecord` names a record that can never be written here).
        """
        if not batch:
            return None
        self.open()  # never number a segment without knowing those already there
        data = ("\n".join(_encode_each(batch)) + "\n").encode("ascii")
        final = self._take_name()
        temporary = final.with_suffix(".tmp")
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            with temporary.open("wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            temporary.rename(final)
            _fsync_directory(self.directory)
        except BaseException:
            # Whatever got written goes: the caller keeps the rows and writes them again.
            _unlink_quietly(temporary)
            _unlink_quietly(final)
            raise
        with self._lock:
            self._segments[final] = _Segment(len(batch), len(data))
        return final

    def read(self, segment: Path) -> tuple[list[Record], list[tuple[str, str]]]:
        """The segment's records, and the lines that could not be decoded (with the reason)."""
        good: list[Record] = []
        bad: list[tuple[str, str]] = []
        for raw in segment.read_bytes().splitlines():
            if not raw.strip():
                continue
            line = raw.decode("utf-8", errors="backslashreplace")
            try:
                # Spool lines are ASCII; any other byte is damage, kept with the line.
                raw.decode("ascii")
                record = decode(line, self._snapshot_times)
            except (ValueError, KeyError, TypeError) as exc:
                bad.append((line, f"{type(exc).__name__}: {exc}"))
                continue
            if isinstance(record, records.BookSnapshot):
                self._remember_snapshot(record)
            good.append(record)
        return good, bad

    def _remember_snapshot(self, snapshot: records.BookSnapshot) -> None:
        times = self._snapshot_times
        times[snapshot.snapshot_id] = snapshot.taken_at
        if len(times) > SNAPSHOT_TIMES_KEPT:
            del times[next(iter(times))]  # the oldest: its orders were spilled right after it

    def remove(self, segment: Path) -> None:
        """Delete a segment whose rows are committed.

        If the file cannot be deleted, the spool forgets it anyway: this run must not commit
        it again and again, and the next start commits it once more, which changes nothing.
        Its rows count as spooled until the deletion has been tried, so that whoever waits
        for the spool to empty (Writer.flush) waits for that too.
        """
        try:
            segment.unlink(missing_ok=True)
        finally:
            with self._lock:
                self._segments.pop(segment, None)

    def adopt(self, other: Spool, segment: Path) -> Path:
        """Move `segment` of `other` into this spool as its newest segment."""
        self.open()
        final = self._take_name()
        self.directory.mkdir(parents=True, exist_ok=True)
        segment.rename(final)
        with self._lock, other._lock:
            self._segments[final] = other._segments.pop(segment)
        _fsync_directory(self.directory)
        _fsync_directory(other.directory)
        return final

    def _take_name(self) -> Path:
        """The next segment's name; a failed write leaves a gap, which orders the same."""
        with self._lock:
            sequence = self._next_sequence
            self._next_sequence += 1
        return self.directory / f"{sequence:012d}.jsonl"


def _encode_each(batch: Sequence[Record]) -> list[str]:
    lines = []
    for record in batch:
        try:
            lines.append(encode(record))
        except (TypeError, ValueError) as exc:
            raise UnencodableRecord(record) from exc
    return lines


def _count_lines(path: Path) -> int:
    with path.open("rb") as data:
        return sum(1 for line in data if line.strip())


def _unlink_quietly(path: Path) -> None:
    # The write's own error is what matters; a leftover .tmp goes at the next open().
    with contextlib.suppress(OSError):
        path.unlink(missing_ok=True)


def _fsync_directory(directory: Path) -> None:
    """Make a rename durable: fsync the directory that holds the entry."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

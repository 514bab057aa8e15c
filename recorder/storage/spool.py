"""A durable, ordered on-disk queue of records for when the database cannot take them.

The writer spills its oldest buffered records here when its memory buffer is full (the
database is down or slower than the exchange) and on shutdown when the database is
unreachable; it drains the spool, oldest segment first, before anything newer.

Each spill is one segment file of JSON lines, `<sequence>.jsonl`, written to a temporary
name, fsynced and renamed, so a crash leaves either a whole segment or none. Values are
encoded losslessly: Decimals and datetimes as their exact text, UUIDs as strings. A segment
is deleted only after its rows are committed.
"""

from __future__ import annotations

import json
import os
import types
import typing
import uuid
from collections.abc import Callable, Iterable
from dataclasses import fields
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from recorder import records
from recorder.records import Record
from recorder.storage.tables import SPECS

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


def decode(line: str) -> Record:
    name, values = json.loads(line)
    decoders = _DECODERS[name]
    if len(values) != len(decoders):
        raise ValueError(f"a {name} record has {len(decoders)} fields, this line {len(values)}")
    kwargs = {
        field: decode_value(value)
        for (field, decode_value), value in zip(decoders, values, strict=True)
    }
    record: Record = _RECORD_TYPES[name](**kwargs)
    return record


class Spool:
    """Segments of spilled records under `directory`, in the order they were spilled."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        for leftover in directory.glob("*.tmp"):  # a spill interrupted before its rename
            leftover.unlink()
        self._rows = {segment: _count_lines(segment) for segment in self.segments()}

    def segments(self) -> list[Path]:
        return sorted(self.directory.glob("*.jsonl"))

    @property
    def rows(self) -> int:
        return sum(self._rows.values())

    @property
    def bytes(self) -> int:
        return sum(segment.stat().st_size for segment in self._rows if segment.exists())

    def append(self, batch: Iterable[Record]) -> Path | None:
        """Write `batch` durably as the newest segment; return it (None for an empty batch)."""
        lines = [encode(record) for record in batch]
        if not lines:
            return None
        existing = self.segments()
        sequence = int(existing[-1].stem) + 1 if existing else 1
        final = self.directory / f"{sequence:012d}.jsonl"
        temporary = final.with_suffix(".tmp")
        with temporary.open("w", encoding="utf-8") as out:
            out.write("\n".join(lines) + "\n")
            out.flush()
            os.fsync(out.fileno())
        temporary.rename(final)
        _fsync_directory(self.directory)
        self._rows[final] = len(lines)
        return final

    def read(self, segment: Path) -> tuple[list[Record], list[tuple[str, str]]]:
        """The segment's records, and the lines that could not be decoded (with the reason)."""
        good: list[Record] = []
        bad: list[tuple[str, str]] = []
        for line in segment.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            try:
                good.append(decode(line))
            except (ValueError, KeyError, TypeError) as exc:
                bad.append((line, f"{type(exc).__name__}: {exc}"))
        return good, bad

    def remove(self, segment: Path) -> None:
        segment.unlink(missing_ok=True)
        self._rows.pop(segment, None)


def _count_lines(path: Path) -> int:
    with path.open("rb") as data:
        return sum(1 for line in data if line.strip())


def _fsync_directory(directory: Path) -> None:
    """Make a rename durable: fsync the directory that holds the entry."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

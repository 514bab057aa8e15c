"""The writer's binary `numeric` encoder: psycopg's bytes, seven times sooner.

psycopg's binary COPY encodes a Decimal through `Decimal.as_tuple()`, a named tuple built
in Python per value: 1.5 µs, most of the writer's encoding of a trade row. `_numeric` (C,
built with the package where a C compiler is: `hatch_build.py`) reads the Decimal's exact
text instead, in 0.2 µs, and hands anything but a Decimal of the plain `-123.456` form
(exponents, NaN, infinities, very long texts, and any other type, which psycopg refuses as
before) to psycopg's own dumper, so every value gets psycopg's bytes, or its error, either
way (tests/storage/test_numeric_encoder.py). Installed without a compiler, the package has
no `_numeric`, and the writer uses psycopg's dumper: slower, equally exact.

`split_rows` serves the tables that keep a Decimal as exact scaled integers, units and scale
(`trades_stored`, `book_fills_stored`: migrations/0020_scaled_prices.sql), in C where
`_numeric` is, else in Python by the same rule.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import Any

import psycopg
from psycopg import postgres, pq
from psycopg.abc import AdaptContext
from psycopg.adapt import Dumper, PyFormat

try:
    from recorder.storage import _numeric  # type: ignore[attr-defined]
except ImportError:  # installed without a C compiler
    _numeric = None

ENCODER = "C" if _numeric is not None else "psycopg"
"""Which encoder the writer's COPY uses for `numeric` (the daemon's `recording` log line says)."""

if _numeric is not None:
    _numeric.configure(Decimal, psycopg.adapters.get_dumper(Decimal, PyFormat.BINARY)(Decimal).dump)

    class CNumericDumper(Dumper):
        format = pq.Format.BINARY
        oid = postgres.types["numeric"].oid
        # psycopg calls `dumper.dump(value)`: the C function itself, no Python frame between
        dump = staticmethod(_numeric.dump)


def use_c_numerics(context: AdaptContext) -> bool:
    """Encode `numeric` in binary COPY with `_numeric` on this connection; False where the
    package was built without it. Registered by type oid only: it serves COPY's
    `set_types`, and how a query passes a Decimal stays as psycopg chose."""
    if _numeric is None:
        return False
    context.adapters.register_dumper(None, CNumericDumper)
    return True


MAX_SCALE = 18
"""The most decimals a scaled value has; SQL's `scaled_numeric` (migration 0020) reads up to it."""
_MAX_UNITS = 2**63 - 1  # a bigint, -2**63 left out so that |units| fits too

Split = tuple[int | None, int | None, Any]


def split_decimal(value: Any) -> Split:
    """(units, scale, None) with value = units × 10^-scale exactly and scale its decimals
    (never below 0: PostgreSQL reads '1E+2' as 100); (None, None, value) when it does not
    fit a bigint and MAX_SCALE, or is no finite Decimal: stored whole, as `numeric`."""
    if type(value) is Decimal and value.is_finite():
        sign, digits, exponent = value.as_tuple()
        assert isinstance(exponent, int)  # finite
        if -MAX_SCALE <= exponent <= MAX_SCALE:
            units = int("".join(map(str, digits))) * 10 ** max(exponent, 0)
            if units <= _MAX_UNITS:
                return (-units if sign else units), max(-exponent, 0), None
    return None, None, value


def _split_rows_python(
    rows: list[tuple[Any, ...]], positions: Sequence[int]
) -> list[tuple[Any, ...]]:
    split = []
    for row in rows:
        values: list[Any] = []
        start = 0
        for position in positions:
            values += row[start:position]
            values += split_decimal(row[position])
            start = position + 1
        values += row[start:]
        split.append(tuple(values))
    return split


def split_rows(rows: list[tuple[Any, ...]], positions: tuple[int, ...]) -> list[tuple[Any, ...]]:
    """`rows` with the Decimal at each of `positions` (ascending) replaced by the three values
    of `split_decimal`: one C call for a whole batch where `_numeric` is built."""
    if _numeric is not None:
        return list(_numeric.split_rows(rows, positions))
    return _split_rows_python(rows, positions)

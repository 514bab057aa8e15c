"""The writer's binary `numeric` encoder: psycopg's bytes, seven times sooner.

psycopg's binary COPY encodes a Decimal through `Decimal.as_tuple()`, a named tuple built
in Python per value: 1.5 µs, most of the writer's encoding of a trade row. `_numeric` (C,
built with the package where a C compiler is: `hatch_build.py`) reads the Decimal's exact
text instead, in 0.2 µs, and hands anything but a Decimal of the plain `-123.456` form
(exponents, NaN, infinities, very long texts, and any other type, which psycopg refuses as
before) to psycopg's own dumper, so every value gets psycopg's bytes, or its error, either
way (tests/storage/test_numeric_encoder.py). Installed without a compiler, the package has
no `_numeric`, and the writer uses psycopg's dumper: slower, equally exact.
"""

from __future__ import annotations

from decimal import Decimal

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

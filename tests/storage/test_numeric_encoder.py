"""The writer's C numeric encoder (`recorder/storage/_numeric.c`): psycopg's bytes for every
Decimal, the value and scale PostgreSQL stores from them exactly the Decimal's, and built
wherever the machine can build it."""

from __future__ import annotations

import shutil
import sysconfig
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from psycopg.adapt import PyFormat

from recorder.storage import numeric

PSYCOPG_DUMPER = psycopg.adapters.get_dumper(Decimal, PyFormat.BINARY)(Decimal)
needs_c = pytest.mark.skipif(numeric.ENCODER != "C", reason="built without the C encoder")


def can_compile() -> bool:
    compiler = (sysconfig.get_config_var("LDSHARED") or "cc").split()[0]  # as hatch_build.py
    header = Path(sysconfig.get_paths()["include"]) / "Python.h"
    return shutil.which(compiler) is not None and header.exists()


def test_the_c_encoder_is_built_where_a_c_compiler_is() -> None:
    if not can_compile():
        pytest.skip("no C compiler or no Python.h here: psycopg's encoder is the one in use")
    assert numeric.ENCODER == "C"


def c_dump(value: Decimal) -> bytes:
    return bytes(numeric.CNumericDumper(Decimal).dump(value))


def plain_texts() -> st.SearchStrategy[str]:
    """Decimal texts as an exchange sends them: digits, a point, more digits, with the
    zeros at either end that Decimal keeps."""
    digits = st.text("0123456789", min_size=1, max_size=40)
    return st.builds(
        lambda sign, whole, fraction: sign + whole + (f".{fraction}" if fraction else ""),
        st.sampled_from(["", "-"]),
        digits,
        st.one_of(st.just(""), digits),
    )


@needs_c
@given(st.one_of(plain_texts().map(Decimal), st.decimals(allow_nan=True, allow_infinity=True)))
@example(Decimal("0"))
@example(Decimal("-0.000"))
@example(Decimal("1.50"))
@example(Decimal("10000"))
@example(Decimal("0.00010000"))
@example(Decimal("1E-8"))  # str() gives an exponent: psycopg's dumper encodes it
@example(Decimal("1.2E+7"))
@example(Decimal("sNaN"))
@example(Decimal("-Infinity"))
@example(Decimal("9" * 3999 + ".5"))
@example(Decimal("1" * 4001))  # past what the C reads itself
def test_the_bytes_are_psycopgs_for_every_decimal(value: Decimal) -> None:
    assert c_dump(value) == bytes(PSYCOPG_DUMPER.dump(value))


@needs_c
def test_what_psycopg_refuses_the_c_encoder_refuses_alike() -> None:
    too_small = Decimal("1E-20000")  # beyond numeric's 16,383 digits after the point
    with pytest.raises(psycopg.DataError):
        PSYCOPG_DUMPER.dump(too_small)
    with pytest.raises(psycopg.DataError):
        c_dump(too_small)


@needs_c
@pytest.mark.parametrize("value", [0.1, 5, "1.5"])
def test_what_is_no_decimal_fails_as_psycopg_fails_it(value: object) -> None:
    # a float in a numeric column is a bug of ours, to be raised, never stored as its repr
    with pytest.raises(Exception) as psycopg_error:  # noqa: PT011 - the same as psycopg's
        PSYCOPG_DUMPER.dump(value)
    with pytest.raises(type(psycopg_error.value)):
        numeric.CNumericDumper(Decimal).dump(value)


# a Decimal's text, and PostgreSQL's text of what it stored: the same digits and scale
# (numeric has no negative zero; exponents are only Decimal's way of printing)
STORED = {
    "0": "0", "-0.00": "0.00", "1.50": "1.50", "1.5": "1.5", "-904.12300": "-904.12300",
    "0.00000012": "0.00000012", "1E-8": "0.00000001", "1.20E+3": "1200",
    "123456789.987654321": "123456789.987654321", "99999999.99999999": "99999999.99999999",
    "-0.0001": "-0.0001", "NaN": "NaN", "Infinity": "Infinity",
}  # fmt: skip


@needs_c
def test_postgresql_stores_each_value_and_its_scale_from_a_binary_copy(db: str) -> None:
    with psycopg.connect(db, autocommit=True) as conn:
        assert numeric.use_c_numerics(conn)
        conn.execute("CREATE TABLE numbers (n int PRIMARY KEY, value numeric)")
        with conn.cursor() as cursor:
            with cursor.copy("COPY numbers FROM STDIN (FORMAT BINARY)") as copy:
                copy.set_types(["int4", "numeric"])
                for n, text in enumerate(STORED):
                    copy.write_row((n, Decimal(text)))
            stored = cursor.execute("SELECT value::text FROM numbers ORDER BY n").fetchall()
    assert [text for (text,) in stored] == list(STORED.values())

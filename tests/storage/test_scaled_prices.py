"""Trades and fills keep price and amount as scaled integers (migrations/0020_scaled_prices.sql)
and read back through the `trades` and `book_fills` views exactly as a `numeric` column kept
them: the same value and the same scale, so the same text."""

from __future__ import annotations

import asyncio
import shutil
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from recorder import records as r
from recorder.storage import numeric
from recorder.storage.committer import Committer
from recorder.storage.migrate import load_migrations, migrate, migrations_dir
from tests.harness.postgres import fresh_database, is_timescaledb, pause_columnstore_policies
from tests.storage.records_factory import EXTREME_DECIMALS, T0

BIGINT = 2**63


@pytest.fixture(scope="module")
def migrated(db_dsn: str) -> str:
    migrate(db_dsn)
    return db_dsn


def decimals() -> st.SearchStrategy[Decimal]:
    """Any Decimal: exchange-like texts, values at and past a bigint's units and 18
    decimals, exponents either way, NaN and infinities."""
    units = st.one_of(
        st.integers(-(10**12), 10**12),
        st.integers(-(BIGINT + 10), BIGINT + 10),
        st.integers(-(10**40), 10**40),
    )
    scaled = st.builds(lambda u, e: Decimal(u).scaleb(e), units, st.integers(-25, 25))
    texts = st.from_regex(r"-?[0-9]{1,22}(\.[0-9]{1,22})?", fullmatch=True).map(Decimal)
    return st.one_of(
        texts, scaled, st.decimals(allow_nan=True, allow_infinity=True), st.sampled_from(
            [*EXTREME_DECIMALS, Decimal("1.50"), Decimal("-0.00"), Decimal("1E+2"),
             Decimal(BIGINT - 1), Decimal(BIGINT), Decimal(-BIGINT), Decimal(1 - BIGINT),
             Decimal("0.000000000000000001"), Decimal("0.0000000000000000001")]
        )
    )  # fmt: skip


def stored_text(conn: psycopg.Connection[Any], value: Decimal) -> str | None:
    """What a `numeric` column stores of `value`, as text; None where PostgreSQL refuses it
    (the writer refused it before the change too, and keeps it in raw_messages)."""
    try:
        with conn.transaction():
            row = conn.execute("SELECT %s::numeric::text", (value,)).fetchone()
    except psycopg.DataError:
        return None
    assert row is not None
    return str(row[0])


def trade_and_fill(tid: int, price: Decimal, amount: Decimal) -> list[r.Record]:
    ts = T0 + timedelta(seconds=tid)
    return [
        r.Trade(pair="BTC_USD", tid=tid, ts=ts, type="buy", price=price, amount=amount,
                received_at=ts + timedelta(microseconds=7)),
        r.BookFill(pair="BTC_USD", tid=tid, oid=tid + 100, o_id=tid + 200, type="sell",
                   price=price, amount=amount, ts=ts, received_at=ts + timedelta(microseconds=9)),
    ]  # fmt: skip


def read_back(dsn: str) -> dict[str, list[tuple[int, str, str]]]:
    with psycopg.connect(dsn) as conn:
        return {
            view: conn.execute(
                f"SELECT tid, price::text, amount::text FROM {view} ORDER BY tid"  # noqa: S608
            ).fetchall()
            for view in ("trades", "book_fills")
        }


def commit(dsn: str, batch: list[r.Record], times: int = 1) -> list[dict[str, int]]:
    async def run() -> list[dict[str, int]]:
        committer = Committer(dsn, statement_timeout_s=30)
        try:
            return [(await committer.commit(batch)).rows for _ in range(times)]
        finally:
            await committer.close()

    return asyncio.run(run())


@pytest.fixture(params=["C", "python"])
def splitter(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The writer with the C module (where built) and without it (no compiler)."""
    if request.param == "C" and numeric.ENCODER != "C":
        pytest.skip("built without the C module")
    if request.param == "python":
        monkeypatch.setattr(numeric, "_numeric", None)
    return str(request.param)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(values=st.lists(decimals(), min_size=1, max_size=25))
@example(values=[Decimal("1.50"), Decimal("9223372036854775807"), Decimal("1E-19")])
def test_any_decimal_the_writer_takes_reads_back_exactly(
    migrated: str, splitter: str, values: list[Decimal]
) -> None:
    with psycopg.connect(migrated, autocommit=True) as conn:
        conn.execute("TRUNCATE trades_stored, book_fills_stored")
        storable = [(v, text) for v in values if (text := stored_text(conn, v)) is not None]
    if not storable:
        return
    batch: list[r.Record] = []
    expected = []
    for tid, ((price, price_text), (amount, amount_text)) in enumerate(
        zip(storable, reversed(storable), strict=True), start=1
    ):
        batch += trade_and_fill(tid, price, amount)
        expected.append((tid, price_text, amount_text))
    assert commit(migrated, batch) == [{"trades": len(expected), "book_fills": len(expected)}]
    assert read_back(migrated) == {"trades": expected, "book_fills": expected}


def test_a_batch_written_twice_is_stored_once(migrated: str) -> None:
    with psycopg.connect(migrated, autocommit=True) as conn:
        conn.execute("TRUNCATE trades_stored, book_fills_stored")
    values = [*EXTREME_DECIMALS, Decimal("1.50"), Decimal(BIGINT), Decimal("NaN")]
    batch = [
        record
        for tid, value in enumerate(values, start=1)
        for record in trade_and_fill(tid, value, values[-tid])
    ]
    first, again = commit(migrated, batch, times=2)  # straight in, then refused and merged
    assert first == {"trades": len(values), "book_fills": len(values)}
    assert again == {"trades": 0, "book_fills": 0}
    with psycopg.connect(migrated) as conn:
        expected = [
            (tid, stored_text(conn, value), stored_text(conn, values[-tid]))
            for tid, value in enumerate(values, start=1)
        ]
    assert read_back(migrated) == {"trades": expected, "book_fills": expected}


@given(st.lists(decimals(), min_size=1, max_size=10))
def test_the_c_and_python_splits_agree_and_are_exact(values: list[Decimal]) -> None:
    rows = [("p", i, value, "x", value) for i, value in enumerate(values)]
    split = numeric._split_rows_python(rows, (2, 4))
    if numeric.ENCODER == "C":
        assert numeric.split_rows(rows, (2, 4)) == split
    for i, (row, value) in enumerate(zip(split, values, strict=True)):
        units, scale, exact = row[2:5]
        assert row[:2] == ("p", i)
        assert row[5:] == ("x", units, scale, exact)  # each position split alike, in place
        if exact is not None:
            assert (units, scale) == (None, None)
            assert exact is value
            continue
        assert isinstance(units, int)
        assert isinstance(scale, int)
        assert -BIGINT < units < BIGINT
        assert 0 <= scale <= numeric.MAX_SCALE
        assert Decimal(units).scaleb(-scale) == value
        exponent = value.as_tuple().exponent
        assert isinstance(exponent, int)
        assert scale == max(-exponent, 0)  # the same decimals, as numeric keeps them


def before_0020(tmp_path: Path) -> Path:
    """The migrations as a database had them before 0020."""
    directory = tmp_path / "migrations"
    directory.mkdir()
    for source in sorted(migrations_dir().glob("*.sql")):
        if source.name < "0020":
            shutil.copy(source, directory / source.name)
    return directory


def test_the_migration_moves_stored_rows_exactly(db_dsn: str, tmp_path: Path) -> None:
    """Rows written before 0020 (on TimescaleDB partly in the columnstore already) read the
    same afterwards, value and scale, through every view that reads them."""
    with psycopg.connect(db_dsn) as conn:
        server = conn.info.dsn
    values = [*EXTREME_DECIMALS, Decimal("1.50"), Decimal("-0.00"), Decimal(BIGINT),
              Decimal("1E-19"), Decimal("NaN"), Decimal("7"), Decimal("99.900")]  # fmt: skip
    start = datetime(2024, 3, 1, 12, tzinfo=UTC)
    queries = {
        "trades": "SELECT pair, tid, ts, type, price::text, amount::text, received_at "
        "FROM trades ORDER BY tid",
        "book_fills": "SELECT pair, tid, oid, o_id, type, price::text, amount::text, ts, "
        "received_at FROM book_fills ORDER BY tid",
        "coverage": "SELECT * FROM coverage ORDER BY pair",
        "ohlcv_1h": "SELECT pair, bucket, open::text, high::text, low::text, close::text, "
        "volume::text, trades FROM ohlcv_1h WHERE high <> 'NaN' ORDER BY 1, 2",
    }
    with fresh_database(server, "before_0020") as dsn:
        migrate(dsn, before_0020(tmp_path))
        with psycopg.connect(dsn, autocommit=True) as conn:
            timescale = is_timescaledb(conn)
            if timescale:
                pause_columnstore_policies(conn)  # the test converts three chunks of each
            conn.execute(
                "INSERT INTO pairs VALUES ('BTC_USD', 'BTC', 'USD', 2, 0.001, 1000, %s, %s)",
                (start, start),
            )
            for tid in range(1, 121):
                ts = start + timedelta(hours=tid)  # five days: several chunks
                price, amount = values[tid % len(values)], values[-tid % len(values)]
                conn.execute(
                    "INSERT INTO trades VALUES ('BTC_USD', %s, %s, 'buy', %s, %s, %s)",
                    (tid, ts, price, amount, ts),
                )
                conn.execute(
                    "INSERT INTO book_fills VALUES ('BTC_USD', %s, %s, %s, 'sell', %s, %s, %s, %s)",
                    (tid, tid + 1000, tid + 2000, amount, price, ts, ts),
                )
            if timescale:
                conn.execute("CALL refresh_continuous_aggregate('ohlcv_1m', NULL, NULL)")
                conn.execute("CALL refresh_continuous_aggregate('ohlcv_1h', NULL, NULL)")
                for table in ("trades", "book_fills"):
                    chunks = conn.execute("SELECT show_chunks(%s)", (table,)).fetchall()
                    assert len(chunks) >= 5
                    for (chunk,) in chunks[:3]:
                        conn.execute("CALL convert_to_columnstore(%s)", (chunk,))
            before = {name: conn.execute(query).fetchall() for name, query in queries.items()}
        assert migrate(dsn) == [m.version for m in load_migrations() if m.version >= "0020"]
        with psycopg.connect(dsn, autocommit=True) as conn:
            after = {name: conn.execute(query).fetchall() for name, query in queries.items()}
            assert after == before
            assert len(after["trades"]) == len(after["book_fills"]) == 120
            # the values a bigint and 18 decimals cannot hold are kept whole, the rest as
            # units: the same rule as the writer's
            whole = conn.execute(
                "SELECT tid FROM trades_stored WHERE price_exact IS NOT NULL ORDER BY tid"
            ).fetchall()
            assert whole == [
                (tid,)
                for tid in range(1, 121)
                if numeric.split_decimal(values[tid % len(values)])[2] is not None
            ]
            # and an INSERT into the view stores a row as the writer would
            conn.execute(
                "INSERT INTO trades VALUES ('BTC_USD', 999, %s, 'sell', 1.50, 2E-20, %s)",
                (start, start),
            )
            row = conn.execute(
                "SELECT price::text, amount::text, price_units, price_scale, amount_exact::text "
                "FROM trades JOIN trades_stored USING (pair, tid) WHERE tid = 999"
            ).fetchone()
            assert row == ("1.50", "0.00000000000000000002", 150, 2, "0.00000000000000000002")

"""`recorder export` of a real recording, read back with pyarrow and csv, equals the table.

Exact: every numeric comes back as the same Decimal (Parquet decimal128 with the data's own
scale; CSV with PostgreSQL's text). Streaming: a tiny batch size writes many row groups,
each one batch, so memory is bounded by the batch and not by the table.
"""

from __future__ import annotations

import csv
import sys
import uuid
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recorder.cli import main
from recorder.research.export import ExportError, Selection, export, parse_time
from tests.research.conftest import Recording

TABLES = ["trades", "book_events", "book_fills", "book_snapshots", "book_snapshot_orders",
          "candles", "ohlcv_1m"]  # fmt: skip


def table_rows(dsn: str, selection: Selection) -> tuple[list[str], list[tuple[Any, ...]]]:
    query, params = selection.query()
    with psycopg.connect(dsn) as conn:
        cursor = conn.execute(query, params)
        names = [c.name for c in cursor.description or []]
        return names, [tuple(normal(v) for v in row) for row in cursor.fetchall()]


def normal(value: Any) -> Any:
    return str(value) if isinstance(value, uuid.UUID) else value


@pytest.mark.parametrize("table", TABLES)
def test_parquet_read_back_equals_the_table(
    recording: Recording, tmp_path: Path, table: str
) -> None:
    selection = Selection(table, pair="BTC_USD")
    out = tmp_path / f"{table}.parquet"
    written = export(recording.dsn, selection, "parquet", out, batch_rows=7, progress=False)
    names, expected = table_rows(recording.dsn, selection)
    assert written == len(expected) > 0
    parquet = pq.ParquetFile(out)
    assert parquet.schema_arrow.names == names
    got = [tuple(row[n] for n in names) for row in parquet.read().to_pylist()]
    assert got == expected
    # Streamed: one row group per batch of 7.
    assert parquet.num_row_groups == -(-len(expected) // 7)
    assert parquet.metadata.row_group(0).num_rows == min(7, len(expected))


def test_numerics_are_exact_decimals_with_the_datas_scale(
    recording: Recording, tmp_path: Path
) -> None:
    out = tmp_path / "trades.parquet"
    export(recording.dsn, Selection("trades"), "parquet", out, progress=False)
    schema = pq.read_schema(out)
    with psycopg.connect(recording.dsn) as conn:
        scales = conn.execute("SELECT max(scale(price)), max(scale(amount)) FROM trades").fetchone()
    assert scales is not None
    assert schema.field("price").type == pa.decimal128(38, scales[0])
    assert schema.field("amount").type == pa.decimal128(38, scales[1])
    assert schema.field("ts").type == pa.timestamp("us", tz="UTC")
    assert schema.field("tid").type == pa.int64()
    values = pq.read_table(out).column("amount").to_pylist()
    assert all(isinstance(v, Decimal) for v in values)


@pytest.mark.parametrize("table", ["trades", "book_snapshot_orders", "book_events"])
def test_csv_read_back_equals_the_table(recording: Recording, tmp_path: Path, table: str) -> None:
    selection = Selection(table, pair="ETH_USD")
    out = tmp_path / f"{table}.csv"
    written = export(recording.dsn, selection, "csv", out, progress=False)
    names, expected = table_rows(recording.dsn, selection)
    with out.open(newline="") as file:
        reader = csv.reader(file)
        assert next(reader) == names
        text_rows = list(reader)
    assert written == len(text_rows) == len(expected)
    for text_row, row in zip(text_rows, expected, strict=True):
        assert [parse_like(t, v) for t, v in zip(text_row, row, strict=True)] == list(row)


def parse_like(text: str, value: Any) -> Any:
    """The CSV text read back as the type the database returned for that column."""
    if value is None:
        assert text == ""
        return None
    if isinstance(value, Decimal):
        assert "E" not in text  # PostgreSQL's plain text, not scientific notation
        return Decimal(text)
    if isinstance(value, datetime):
        return datetime.fromisoformat(text)
    if isinstance(value, bool):
        return text == "t"
    if isinstance(value, int):
        return int(text)
    return text


def test_pair_and_time_window_select_exactly_those_rows(
    recording: Recording, tmp_path: Path
) -> None:
    with psycopg.connect(recording.dsn) as conn:
        middle = conn.execute(
            "SELECT ts FROM trades WHERE pair = 'BTC_USD' ORDER BY ts "
            "OFFSET (SELECT count(*) / 2 FROM trades WHERE pair = 'BTC_USD') LIMIT 1"
        ).fetchone()
        assert middle is not None
        (count,) = conn.execute(
            "SELECT count(*) FROM trades WHERE pair = 'BTC_USD' AND ts >= %s", middle
        ).fetchone() or (0,)
    out = tmp_path / "late.parquet"
    config = str(recording.config_path)
    assert main(["export", "--config", config, "--table", "trades", "--pair", "BTC_USD",
                 "--since", middle[0].isoformat(), "--until", "2100-01-01",
                 "--format", "parquet", "--out", str(out)]) == 0  # fmt: skip
    table = pq.read_table(out)
    assert table.num_rows == count > 0
    assert set(table.column("pair").to_pylist()) == {"BTC_USD"}
    assert min(table.column("ts").to_pylist()) == middle[0]


def test_bad_requests_exit_2_with_a_message(
    recording: Recording, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = str(recording.config_path)
    out = str(tmp_path / "x.csv")
    assert main(["export", "--config", config, "--table", "raw_messages", "--pair", "BTC_USD",
                 "--format", "csv", "--out", out]) == 2  # fmt: skip
    assert "raw_messages has no pair column" in capsys.readouterr().err
    assert main(["export", "--config", config, "--table", "trades", "--since", "soon",
                 "--out", out]) == 2  # fmt: skip
    assert "not an ISO 8601 time" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["export", "--config", config, "--table", "pairs", "--out", out])
    with pytest.raises(ExportError, match="choose one of"):
        Selection("schema_migrations").query()


def test_parquet_without_pyarrow_says_how_to_get_it(
    recording: Recording, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    out = tmp_path / "t.parquet"
    code = main(["export", "--config", str(recording.config_path), "--table", "trades",
                 "--out", str(out)])  # fmt: skip
    assert code == 2
    assert "bitexbit-recorder[research]" in capsys.readouterr().err


def test_a_progress_bar_when_asked(
    recording: Recording, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = export(recording.dsn, Selection("trades"), "csv", tmp_path / "t.csv", progress=True)
    err = capsys.readouterr().err
    assert f"{rows}/{rows} rows 100%" in err
    assert err.endswith("\n")


def test_parse_time_defaults_to_utc() -> None:
    assert parse_time("2024-01-02T03:04").isoformat() == "2024-01-02T03:04:00+00:00"
    assert parse_time("2024-01-02T03:04+02:00").utcoffset() is not None

"""Whatever a parser accepts, the database takes, exactly: parsed records through the real
writer into a real PostgreSQL.

Parsing fuzzed input (valid and damaged payloads of every REST answer and socket event) is
only half of "no input reaches the database unparsed": a record the parser accepted must
also be a row the database accepts. Here every record parsed from a fuzzed batch goes
through the real `Writer`; the batch must be committed (a value no column can hold would
stall it, as an out-of-range id or a lone surrogate once did), nothing may end up refused
in `raw_messages`, and each table must hold exactly one row per key, equal to a record of
that key (the first one, for tables that keep the first).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from recorder.exchange.parse import ParseError
from recorder.storage.migrate import migrate
from recorder.storage.tables import SPECS
from recorder.storage.writer import Writer
from tests.fuzz import strategies as fz
from tests.fuzz.parsers import PARSERS, records_of
from tests.harness.postgres import empty_tables, query

STORABLE = settings(
    max_examples=fz.examples(15, "RECORDER_FUZZ_PIPELINE_EXAMPLES"),
    deadline=None,
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
    suppress_health_check=list(HealthCheck),
)


@st.composite
def parsed_batch(draw: st.DrawFn) -> list[Any]:
    """The records parsed from a batch of fuzzed answers (valid ones, and damaged ones that
    still parse: the values at the edges that a column may not hold)."""
    found: list[Any] = []
    for _ in range(draw(st.integers(1, 12))):
        name = draw(st.sampled_from(sorted(PARSERS)))
        call, valid = PARSERS[name]
        text = draw(st.one_of(valid.map(lambda v: v.text), fz.damaged(valid)))
        try:
            found += records_of(call(text))
        except ParseError:
            continue
    return found


SPECS_BY_NAME = {spec.name: spec for spec in SPECS.values()}


@pytest.fixture(scope="module")
def migrated(pg_dsn: str) -> str:
    migrate(pg_dsn)
    return pg_dsn


@STORABLE
@given(batch=parsed_batch())
def test_every_parsed_record_is_stored_exactly(
    migrated: str, tmp_path_factory: pytest.TempPathFactory, batch: list[Any]
) -> None:
    empty_tables(migrated)

    async def write() -> bool:
        async with Writer(migrated, tmp_path_factory.mktemp("spool")) as writer:
            writer.put_many(batch)
            return await writer.flush(timeout_s=60)

    assert asyncio.run(write()), "the writer did not commit the batch"
    assert query(migrated, "SELECT source, error FROM raw_messages") == []
    by_table: dict[str, dict[Any, list[Any]]] = {}
    for record in batch:
        spec = SPECS[type(record)]
        row = spec.to_row(record)
        by_table.setdefault(spec.name, {}).setdefault(spec.key_of(row), []).append(row)
    for table, rows in by_table.items():
        spec = SPECS_BY_NAME[table]
        stored = query(migrated, f"SELECT {spec.column_names} FROM {table}")  # noqa: S608
        assert len(stored) == len(rows), table
        for row in stored:
            candidates = rows[spec.key_of(row)]
            if spec.upserts:
                assert row in candidates, (table, row)
            else:
                assert row == candidates[0], (table, row)

"""Each output mode x window shape through the whole runtime, in memory, against the model.

The stream's message keys are not the group key, records are out of order,
about 3% are late, and batches cut partitions anywhere (300 records): the
table must equal the independent model's row for row.
"""

from __future__ import annotations

import zlib
from dataclasses import replace
from pathlib import Path

import pytest

from streamproc.testing import MemoryDatabase, MemorySource
from tests.component.harness import fill_topic, make_plan, new_query, run_to_end, table_of
from tests.reference import assert_tables_equal, expected
from tests.streams import MODE_CASES, make_stream


@pytest.mark.parametrize("store", ["memory", "rocksdb"])
@pytest.mark.parametrize("case", sorted(MODE_CASES))
async def test_output_mode_matches_the_model(case: str, store: str, tmp_path: Path) -> None:
    query = MODE_CASES[case]
    stream = make_stream(1_500, seed=zlib.crc32(case.encode()) % 1000)
    topic = fill_topic(stream)
    db = MemoryDatabase()
    plan = make_plan(query)
    state_dir = tmp_path / "state" if store == "rocksdb" else None
    stats = await new_query(plan, MemorySource(topic), db, state_dir=state_dir).run()
    model = expected(query, stream)
    assert stats.records == 1_500
    assert stats.late == len(model.late)
    assert_tables_equal(table_of(db, plan), model.table)


@pytest.mark.parametrize("workers", [2, 3])
@pytest.mark.parametrize("case", ["append_sliding", "update_tumbling", "complete_nonwindowed"])
async def test_workers_sharing_the_topic_equal_one(case: str, workers: int) -> None:
    # Each worker owns some partitions, so rows merge from the stored partials.
    query = MODE_CASES[case]
    stream = make_stream(1_200, seed=7)
    one, many = MemoryDatabase(), MemoryDatabase()
    plan = make_plan(query)
    await run_to_end(plan, fill_topic(stream), one)
    stats = await run_to_end(plan, fill_topic(stream), many, workers=workers)
    assert sum(s.records for s in stats) == 1_200
    assert all(s.records for s in stats), [s.records for s in stats]
    assert_tables_equal(table_of(many, plan), table_of(one, plan))
    assert_tables_equal(table_of(many, plan), expected(query, stream).table)


async def test_batch_sizes_never_change_results() -> None:
    query = MODE_CASES["update_sliding"]
    stream = make_stream(900, seed=3)
    tables = []
    for cap in (1, 7, 300, 5_000):
        db = MemoryDatabase()
        plan = replace(make_plan(query), max_records_per_trigger=cap)
        await run_to_end(plan, fill_topic(stream), db)
        tables.append(table_of(db, plan))
    for table in tables[1:]:
        assert_tables_equal(table, tables[0])

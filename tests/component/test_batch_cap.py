"""The default batch cap follows the rows a batch makes: a budget of records plus rows."""

from __future__ import annotations

import pytest

from streamproc.runtime import collect
from streamproc.runtime.collect import default_cap
from streamproc.testing import MemoryDatabase, MemoryGroup, MemorySource
from tests.component.harness import fill_topic, make_plan, new_query, table_of
from tests.reference import Query, assert_tables_equal, expected
from tests.streams import AGGS, MINUTE, make_stream


@pytest.mark.parametrize(
    ("rows_per_record", "cap"),
    [(0.0, 100_000), (0.2, 100_000), (0.5, 93_333), (1.0, 70_000), (1.1, 70_000), (6.0, 70_000)],
)
def test_default_cap_is_a_budget_of_records_and_rows(rows_per_record: float, cap: int) -> None:
    assert default_cap(rows_per_record) == cap


async def test_batches_of_a_row_per_record_shrink_and_results_stay_exact(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The budget scaled down a hundredfold, so that a few thousand records show it.
    monkeypatch.setattr(collect, "DEFAULT_BATCH_CAP", 1_000)
    monkeypatch.setattr(collect, "BATCH_BUDGET", 1_400)
    monkeypatch.setattr(collect, "MIN_BATCH_CAP", 700)
    # Thousands of users and one record each per window: every record its own row.
    query = Query(("user_id",), AGGS, delay_ms=MINUTE, size_ms=MINUTE, output_mode="update")
    stream = make_stream(4_000, users=3_000, seed=5)
    topic = fill_topic(stream)
    db = MemoryDatabase()
    plan = make_plan(query, max_records_per_trigger=None)
    worker = new_query(plan, MemorySource(topic, MemoryGroup(topic)), db)
    stats = await worker.run()
    sizes = [p.input_rows for p in worker.recent_progress]
    assert stats.records == 4_000 and sum(sizes) == 4_000
    assert sizes[0] == 1_000  # nothing known yet: the full cap
    assert max(sizes[1:]) <= 800  # then about 1,400 / (1 + rows per record)
    assert_tables_equal(table_of(db, plan), expected(query, stream).table)

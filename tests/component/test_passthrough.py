"""A streaming pipeline without aggregation through the whole runtime, in memory.

Each accepted record is one row, exactly once: compared row by row with the
input records, after a crash before a commit, across two workers, and with
quality rules and bad records taken out first.
"""

from __future__ import annotations

import random
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from streamproc.engine import QuerySpec
from streamproc.runtime.plan import QueryPlan
from streamproc.testing import InputRecord, MemoryDatabase, MemorySource, run_pipeline
from tests.component.harness import fill_topic, make_plan, new_query, run_to_end
from tests.component.test_run_pipeline import T0, config
from tests.reference import Query
from tests.streams import AGGS, MINUTE

SPEC = QuerySpec(
    group_by=(),
    aggregations=(),
    output_mode="append",
    event_time_column="event_time",
    delay_ms=5 * MINUTE,
    passthrough=True,
)


class Crash(BaseException):
    """Stands for kill -9: nothing of the process runs after it."""


def crash() -> None:
    raise Crash()


def plan_of(**changes: Any) -> QueryPlan:
    base = make_plan(Query(("user_id",), AGGS, delay_ms=5 * MINUTE, output_mode="update"))
    return replace(base, spec=SPEC, **changes)


def stream(n: int, partitions: int, seed: int) -> dict[int, list[dict[str, Any]]]:
    """Records with event times that go back and forth (far behind W included)."""
    rng = random.Random(seed)
    out: dict[int, list[dict[str, Any]]] = {p: [] for p in range(partitions)}
    for seq in range(n):
        out[rng.randrange(partitions)].append(
            {
                "seq": seq,
                "user_id": f"u{rng.randrange(5)}",
                "event_time": T0 + rng.randrange(-60, 60) * MINUTE,
                "value": rng.choice([1, 2.5, None, "x", {"nested": [seq]}]),
            }
        )
    return out


def written(db: MemoryDatabase, plan: QueryPlan) -> dict[tuple[int, int], Any]:
    """The table as {(partition, offset): record}; a position twice would be one key."""
    assert plan.table is not None
    rows = db.table_rows(plan.table)
    table = {tuple(r.key): r.values[0] for r in rows}
    assert len(table) == len(rows)
    return table


def wanted(records: dict[int, list[dict[str, Any]]]) -> dict[tuple[int, int], Any]:
    return {(p, o): r for p, rs in records.items() for o, r in enumerate(rs)}


def test_run_pipeline_writes_each_record_once_as_it_is() -> None:
    cfg = config()
    del cfg["transforms"]
    records: list[Any] = [
        InputRecord({"user_id": "u1", "event_time": T0 + 30 * MINUTE, "n": 1}, partition=0),
        InputRecord({"user_id": "u2", "event_time": T0, "n": 2}, partition=1),
        # 30 minutes behind wm(0) = 25 min: written all the same (no window to be late for)
        InputRecord({"user_id": "u1", "event_time": T0 - 5 * MINUTE, "n": 3}, partition=0),
        InputRecord(b"not json", partition=1),
        InputRecord({"user_id": None, "n": 4}, partition=2),
    ]
    result = run_pipeline(cfg, records, partitions=3)
    assert result.rows == (
        {"user_id": "u1", "event_time": T0 + 30 * MINUTE, "n": 1},
        {"user_id": "u1", "event_time": T0 - 5 * MINUTE, "n": 3},
        {"user_id": "u2", "event_time": T0, "n": 2},
        {"user_id": None, "n": 4},
    )
    assert result.late == ()
    assert [(b.partition, b.offset) for b in result.bad] == [(1, 1)]
    counts = result.counts
    assert (counts.records, counts.aggregated, counts.late, counts.bad) == (5, 4, 0, 1)
    assert counts.result_rows == 4


def test_quality_rules_run_on_the_records_before_the_write() -> None:
    cfg = config()
    del cfg["transforms"]
    cfg["dataQualityConfig"] = {
        "enabled": True,
        "onFailure": "continue",
        "rules": [{"ruleType": "not_null", "name": "user", "columns": ["user_id"]}],
    }
    records = [{"user_id": "u1", "n": 1}, {"user_id": None, "n": 2}, {"user_id": "u3", "n": 3}]
    result = run_pipeline(cfg, records)
    assert result.rows == ({"user_id": "u1", "n": 1}, {"user_id": "u3", "n": 3})
    assert result.counts.filtered == 1


@pytest.mark.parametrize("crash_before_commit", [1, 3, 7])
async def test_a_crash_before_a_commit_then_resume_writes_every_record_once(
    crash_before_commit: int, tmp_path: Path
) -> None:
    records = stream(600, 4, seed=crash_before_commit)
    topic = fill_topic(records)
    db = MemoryDatabase()
    plan = plan_of(max_records_per_trigger=40)
    db.before_commit[crash_before_commit - 1] = crash
    with pytest.raises(Crash):
        await new_query(plan, MemorySource(topic), db, state_dir=tmp_path / "life1").run()
    assert db.commits == crash_before_commit - 1
    await new_query(plan, MemorySource(topic), db, state_dir=tmp_path / "life2").run()
    assert written(db, plan) == wanted(records)
    ledger = db.ledger_rows(plan.query_name, plan.topic)
    assert sum(r.records for r in ledger) == 600
    assert sum(r.aggregated for r in ledger) == 600


async def test_two_workers_write_the_rows_one_worker_writes() -> None:
    records = stream(500, 4, seed=5)
    db = MemoryDatabase()
    plan = plan_of(max_records_per_trigger=30)
    stats = await run_to_end(plan, fill_topic(records), db, workers=2)
    assert written(db, plan) == wanted(records)
    assert sum(s.records for s in stats) == 500
    assert sum(s.result_rows for s in stats) == 500


async def test_a_second_run_after_the_end_writes_nothing_again() -> None:
    records = stream(200, 2, seed=9)
    topic = fill_topic(records, partitions=2)
    db = MemoryDatabase()
    plan = plan_of()
    await new_query(plan, MemorySource(topic), db).run()
    stats = await new_query(plan, MemorySource(topic), db).run()
    assert stats.records == 0
    assert written(db, plan) == wanted(records)

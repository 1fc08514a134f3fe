"""Session windows through the whole runtime (issue 22), in-process: row by row against
the reference model (tests/reference_sessions.py), exact counts, across restarts, one
worker owning every partition and two workers sharing them.

Users u0..u5 have records on every partition (the group key is not the message key),
so a user's sessions merge partial sessions of several partitions, and, with two
workers, of partitions another worker holds.
"""

from __future__ import annotations

import random
from dataclasses import replace
from typing import Any

import pytest

from streamproc.engine import SessionSpec
from streamproc.testing import MemoryDatabase, run_pipeline
from tests.component.harness import fill_topic, make_plan, run_to_end, table_of
from tests.plans import spec_of
from tests.reference import Query, assert_tables_equal
from tests.reference_sessions import assert_no_overlap, expected_sessions, one_phase
from tests.streams import AGGS, BASE_MS
from tests.unit.test_config_broken import DELETE, mutate

GAP_MS = 30_000
DELAY_MS = 20_000


def session_stream(seed: int, per_partition: int = 120) -> dict[int, list[dict[str, Any]]]:
    """Four partitions; users u0..u5 on each; gaps around the session gap; disorder."""
    rng = random.Random(seed)
    stream: dict[int, list[dict[str, Any]]] = {}
    for p in range(4):
        t = BASE_MS + rng.randint(0, 20_000)
        records = []
        for i in range(per_partition):
            t += rng.choice([0, 1_000, 4_000, 9_000, 15_000, 29_000, 30_000, 45_000])
            late = rng.choice([0, 0, 0, 0, 5_000, 19_000, 40_000])
            records.append(
                {
                    "user_id": f"u{rng.randint(0, 5)}",
                    "event_time": t - late,
                    "value": float(rng.randint(-5, 50)),
                    "seq": p * 10_000 + i,
                }
            )
        stream[p] = records
    return stream


def query(mode: str) -> Query:
    return Query(("user_id",), AGGS, delay_ms=DELAY_MS, output_mode=mode)


def plan_of(mode: str, **changes: Any) -> Any:
    # Built as an update query, then made sessions (append needs the sessions first).
    spec = replace(spec_of(query("update")), output_mode=mode, session=SessionSpec(GAP_MS))
    return make_plan(query("update"), spec=spec, **changes)


def expected(mode: str, stream: dict[int, list[dict[str, Any]]]) -> Any:
    return expected_sessions(query(mode), GAP_MS, sorted(stream), one_phase(stream))


@pytest.mark.parametrize("mode", ["update", "complete", "append"])
@pytest.mark.parametrize("workers", [1, 2])
async def test_sessions_equal_the_reference_row_by_row_across_a_restart(
    mode: str, workers: int
) -> None:
    # The first half runs to its end; the second half is added and a new run (new
    # workers) resumes from the checkpoint: state rows, fences, positions and W.
    stream = session_stream(seed=7 + workers)
    half = {p: records[: len(records) // 2] for p, records in stream.items()}
    topic = fill_topic(half)
    db = MemoryDatabase()
    plan = plan_of(mode, max_records_per_trigger=37)
    first = await run_to_end(plan, topic, db, workers=workers)
    assert_tables_equal(table_of(db, plan), expected(mode, half).table)
    for p, records in stream.items():
        for record in records[len(records) // 2 :]:
            topic.produce_json(p, record, key=f"msg-{record['seq']}".encode())
    second = await run_to_end(plan, topic, db, workers=workers)
    ref = expected(mode, stream)
    table = table_of(db, plan)
    assert_tables_equal(table, ref.table)
    assert len(table) == len(ref.table) > 10
    records = sum(s.records for s in first + second)
    late = sum(s.late for s in first + second)
    assert records == sum(map(len, stream.values()))
    assert late == len(ref.late) > 0
    if mode != "append":
        assert_no_overlap(table)


def test_run_pipeline_runs_sessions() -> None:
    #   u1@0s u1@20s u1@60s on two partitions, gap 30 s, delay 5 min (update):
    #   [0s, 50s) with two records, [60s, 90s) with one
    config = mutate(
        {
            ("transforms", 0, "parameters", "windowDuration"): DELETE,
            ("transforms", 0, "parameters", "gapDuration"): "30 seconds",
            ("streamingConfigJson", "outputMode"): "update",
        }
    )
    records = [
        {"user_id": "u1", "event_time": BASE_MS, "amount": 1.0},
        {"user_id": "u1", "event_time": BASE_MS + 20_000, "amount": 2.0},
        {"user_id": "u1", "event_time": BASE_MS + 60_000, "amount": 4.0},
    ]
    result = run_pipeline(config, records, partitions=2, env={})
    assert [
        (r["user_id"], r["window_start_ms"] - BASE_MS, r["window_end_ms"] - BASE_MS, r["count"])
        for r in result.rows
    ] == [("u1", 0, 50_000, 2), ("u1", 60_000, 90_000, 1)]
    assert [r["amount_sum"] for r in result.rows] == [3.0, 4.0]

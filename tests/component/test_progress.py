"""Progress records of a scripted run: offsets, input rows and watermarks, exactly.

Two partitions, a batch cap of 4 records; the in-memory source reads
partition 0 before partition 1, so the batches are:

    batch 1   p0 offsets 0-4    event times  0, 1, 2, 3 min   wm(p0) = -2 min, p1 unseen: no W
    batch 2   p0 offsets 4-6    20, 21 min                    wm(p0) = 16 min
              p1 offsets 0-2    0.5, 1.5 min                  wm(p1) = -3.5 min, W = -3.5 min
    batch 3   p1 offsets 2-4    30, 31 min                    wm(p1) = 26 min,   W = 16 min

(event times after BASE_MS; a 5 minute watermark delay, 10 minute windows)
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from typing import Any

import pytest
from prometheus_client import REGISTRY

from streamproc.testing import MemoryDatabase, MemorySource, MemoryTopic
from tests.component.harness import TOPIC, make_plan, new_query
from tests.reference import Query
from tests.streams import BASE_MS, MINUTE, iso

QUERY = Query(
    ("user_id",),
    (("count", None, "count"),),
    delay_ms=5 * MINUTE,
    size_ms=10 * MINUTE,
    output_mode="append",
)
EVENT_MINUTES = {0: [0, 1, 2, 3, 20, 21], 1: [0.5, 1.5, 30, 31]}


def scripted_topic() -> MemoryTopic:
    topic = MemoryTopic(TOPIC, 2)
    for p, minutes in EVENT_MINUTES.items():
        for m in minutes:
            topic.produce_json(p, {"user_id": "u1", "event_time": iso(BASE_MS + int(m * MINUTE))})
    return topic


def at(minutes: float) -> int:
    return BASE_MS + int(minutes * MINUTE)


async def test_each_batch_reports_its_offsets_rows_and_watermarks(
    caplog: pytest.LogCaptureFixture,
) -> None:
    plan = replace(make_plan(QUERY, name="progress_q"), max_records_per_trigger=4)
    query = new_query(plan, MemorySource(scripted_topic()), MemoryDatabase())
    with caplog.at_level(logging.INFO, logger="streamproc.progress"):
        stats = await query.run()
    progress = query.recent_progress
    assert stats.records == 10
    assert [p.batch_id for p in progress] == [1, 2, 3]
    assert [
        [(s.partition, s.start_offset, s.end_offset, s.input_rows) for s in p.partitions]
        for p in progress
    ] == [
        [(0, 0, 4, 4)],
        [(0, 4, 6, 2), (1, 0, 2, 2)],
        [(1, 2, 4, 2)],
    ]
    assert [p.input_rows for p in progress] == [4, 4, 2]
    assert [p.watermark_ms for p in progress] == [None, at(-3.5), at(16)]
    assert [[s.watermark_ms for s in p.partitions] for p in progress] == [
        [at(-2)],
        [at(16), at(-3.5)],
        [at(26)],
    ]
    assert [p.max_event_ts_ms for p in progress] == [at(3), at(21), at(31)]
    assert [(p.aggregated_rows, p.late_rows, p.bad_rows) for p in progress] == [(4, 0, 0)] * 2 + [
        (2, 0, 0)
    ]
    # W = 16 min closes the window [0, 10 min) of u1: one row, in batch 3.
    assert [p.sink_rows for p in progress] == [0, 0, 1]
    assert query.last_progress == progress[-1]
    assert all(p.pipeline_id == "progress_q" and p.query == "progress_q" for p in progress)

    lines = [r.getMessage() for r in caplog.records if r.name == "streamproc.progress"]
    assert [r.levelno for r in caplog.records if r.name == "streamproc.progress"] == [
        logging.INFO
    ] * 3
    assert lines[1].startswith(
        "progress pipeline=progress_q query=progress_q batch=2 rows=4 offsets=0:4-6,1:0-2 "
    )

    def sample(name: str, **labels: str) -> float | None:
        return REGISTRY.get_sample_value(
            name, {"pipeline": "progress_q", "query": "progress_q", **labels}
        )

    assert sample("streamproc_global_watermark_timestamp_seconds") == at(16) / 1000
    assert sample("streamproc_watermark_timestamp_seconds", partition="1") == at(26) / 1000
    assert sample("streamproc_consumer_lag_records", partition="0") == 0
    assert sample("streamproc_consumer_lag_records", partition="1") == 0
    assert sample("streamproc_phase_duration_seconds_count", phase="engine") == 3
    assert sample("streamproc_assigned_partitions") == 2


async def test_without_include_metrics_progress_goes_to_debug(
    caplog: pytest.LogCaptureFixture,
) -> None:
    plan = replace(
        make_plan(QUERY, name="progress_quiet"), max_records_per_trigger=4, include_metrics=False
    )
    query = new_query(plan, MemorySource(scripted_topic()), MemoryDatabase())
    with caplog.at_level(logging.DEBUG, logger="streamproc.progress"):
        await query.run()
    levels = [r.levelno for r in caplog.records if r.name == "streamproc.progress"]
    assert levels == [logging.DEBUG] * 3
    assert len(query.recent_progress) == 3


async def test_the_wait_for_the_last_commit_counts_as_batch_time() -> None:
    # The loop's batch time is what the lock share is over: the commit of the last
    # batch, settled after the loop, is part of it (a run whose last commit waited
    # long for a lock reported more time in locks than in batches).
    plan = replace(make_plan(QUERY, name="last_commit_q"), max_records_per_trigger=100)
    query = new_query(plan, MemorySource(scripted_topic()), MemoryDatabase())
    checkpoint = query._checkpoint
    commit = checkpoint.commit

    async def slow_commit(batch: Any, *, dry_run: bool = False) -> Any:
        await asyncio.sleep(1.0)
        return await commit(batch, dry_run=dry_run)

    checkpoint.commit = slow_commit  # type: ignore[method-assign]
    stats = await query.run()
    assert stats.batches == 1
    assert stats.batch_seconds >= 1.0

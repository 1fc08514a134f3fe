"""The failure policy (FAULTS.md) through the whole runtime, in milliseconds.

Crashes before a commit, outages of the checkpoint, refused records and
failFast, each against the in-memory checkpoint told to fail at an exact
point; every run ends with the table a clean run gives (or, with failFast,
with nothing of the refused batch written).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from streamproc.runtime.failure_kinds import QueryFailedError
from streamproc.runtime.plan import QueryPlan
from streamproc.testing import MemoryDatabase, MemoryMessages, MemorySource
from tests.component.harness import fill_topic, make_plan, new_query, run_to_end, table_of
from tests.reference import Query, assert_tables_equal, expected
from tests.streams import AGGS, MINUTE, make_stream

QUERY = Query(
    ("user_id",),
    AGGS,
    delay_ms=5 * MINUTE,
    size_ms=10 * MINUTE,
    slide_ms=5 * MINUTE,
    output_mode="update",
)
APPEND = replace(QUERY, output_mode="append")


def _metric(name: str, plan: QueryPlan, **labels: str) -> float:
    """A sample of this process's registry for the plan's query (0 when never set)."""
    value = REGISTRY.get_sample_value(
        name,
        {"pipeline": plan.pipeline_id, "query": plan.query_name, **labels},
    )
    return value or 0.0


class Crash(BaseException):
    """Stands for kill -9: nothing of the process runs after it (no retry catches it)."""


def crash() -> None:
    raise Crash()


@pytest.mark.parametrize("crash_before_commit", [1, 2, 5, 9])
@pytest.mark.parametrize("query", [QUERY, APPEND], ids=["update", "append"])
async def test_crash_before_a_commit_then_resume_equals_a_clean_run(
    crash_before_commit: int, query: Query, tmp_path: Path
) -> None:
    stream = make_stream(1_000, seed=crash_before_commit)
    topic = fill_topic(stream)
    db = MemoryDatabase()
    plan = make_plan(query, max_records_per_trigger=50)  # about 20 commits
    # The first life keeps its working state in RocksDB and dies before commit n.
    db.before_commit[crash_before_commit - 1] = crash
    first = new_query(plan, MemorySource(topic), db, state_dir=tmp_path / "life1")
    with pytest.raises(Crash):
        await first.run()
    assert db.commits == crash_before_commit - 1
    # The next life starts from the checkpoint alone (its own, empty state dir).
    await new_query(plan, MemorySource(topic), db, state_dir=tmp_path / "life2").run()
    clean = MemoryDatabase()
    await run_to_end(plan, fill_topic(stream), clean)
    assert_tables_equal(table_of(db, plan), table_of(clean, plan))
    assert_tables_equal(table_of(db, plan), expected(query, stream).table)
    ledger = db.ledger_rows(plan.query_name, plan.topic)
    assert sum(r.records for r in ledger) == 1_000


async def test_an_outage_waits_then_replays_from_the_ledger_exactly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    stream = make_stream(800, seed=11)
    topic = fill_topic(stream)
    db = MemoryDatabase()
    plan = make_plan(QUERY)
    plan = replace(plan, max_records_per_trigger=100)
    retries_before = _metric("streamproc_retries_total", plan)
    query = new_query(plan, MemorySource(topic), db)

    def outage() -> None:
        # Down for 0.3 s from the third commit on: retries fail, the breaker
        # opens, the query waits and then replays everything not committed.
        db.outage = True
        asyncio.get_running_loop().call_later(0.3, setattr, db, "outage", False)

    db.before_commit[2] = outage
    stats = await asyncio.wait_for(query.run(), 30)
    assert stats.sink_outages == 1
    assert db.commits > 3
    assert stats.records == 800  # nothing counted twice, nothing lost
    assert_tables_equal(table_of(db, plan), expected(QUERY, stream).table)
    # Each retry is logged once and counted once.
    retried = [
        r
        for r in caplog.records
        if r.levelno == logging.WARNING and "failed (attempt" in r.getMessage()
    ]
    assert retried
    assert _metric("streamproc_retries_total", plan) - retries_before == len(retried)


def _refuse_u3(key: tuple[object, ...]) -> str | None:
    return "value u3 cannot be stored" if key == ("u3",) else None


async def test_a_refused_record_is_isolated_by_halving_and_dead_lettered_alone() -> None:
    stream = make_stream(600, seed=5, users=12)
    refused = {
        (p, o) for p, recs in stream.items() for o, r in enumerate(recs) if r["user_id"] == "u3"
    }
    assert refused
    topic = fill_topic(stream)
    db = MemoryDatabase(refuse_key=_refuse_u3)
    messages = MemoryMessages()
    plan = make_plan(QUERY, dlq_type="kafka", dlq_topic="dlq")
    letters_before = _metric("streamproc_dead_letters_total", plan, kind="refused")
    stats = await new_query(plan, MemorySource(topic), db, messages=messages).run()
    # u3 records that were late for the engine never reach the sink.
    model = expected(QUERY, stream)
    late = set(model.late)
    want_dead = refused - late
    ledger = db.ledger_rows(plan.query_name, plan.topic)
    dead = {(r.partition, r.start_offset + r.records - 1) for r in ledger if r.dead_lettered}
    assert dead == want_dead
    assert all(r.records == 1 and r.error for r in ledger if r.dead_lettered)
    letters = messages.on_topic("dlq")
    headers = [dict(m.headers) for m in letters]
    assert {(int(h["source_partition"]), int(h["source_offset"])) for h in headers} == want_dead
    assert all(h["reason"].startswith(b"rejected by the sink: value u3") for h in headers)
    assert stats.dead_lettered == len(want_dead) and stats.records == 600
    counted = _metric("streamproc_dead_letters_total", plan, kind="refused") - letters_before
    assert counted == len(want_dead)
    # Every other record is in the table exactly as the model says, u3 nowhere.
    without = {
        p: [(o, r) for o, r in enumerate(recs) if (p, o) not in want_dead]
        for p, recs in stream.items()
    }
    assert_tables_equal(table_of(db, plan), expected(QUERY, without).table)
    assert not any(k[0] == "u3" for k in table_of(db, plan))


async def test_fail_fast_stops_at_a_refused_batch_and_writes_nothing_of_it() -> None:
    stream = make_stream(600, seed=5, users=12)
    topic = fill_topic(stream)
    db = MemoryDatabase(refuse_key=_refuse_u3)
    plan = make_plan(QUERY, fail_fast=True)
    with pytest.raises(QueryFailedError, match="failFast is set: value u3 cannot be stored"):
        await new_query(plan, MemorySource(topic), db).run()
    ledger = db.ledger_rows(plan.query_name, plan.topic)
    # The batches before the refused one are committed, nothing after.
    assert all(not r.dead_lettered for r in ledger)
    committed = {(r.partition, o) for r in ledger for o in range(r.start_offset, r.next_offset)}
    assert not any(
        stream[p][o]["user_id"] == "u3" and (p, o) not in set(expected(QUERY, stream).late)
        for p, o in committed
    )

"""The broker unreachable for 20 s (frozen with SIGSTOP) in the middle of a run.

Fetches, heartbeats, offset commits and dead-letter writes all hang or time
out; the group may expire the worker's session meanwhile. The worker waits,
rejoins, restores from the ledger and finishes: nothing lost or doubled in the
table, the ledger, or the two dead-letter topics (late and bad records).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import asyncpg
import pytest

from streamproc.local import StackInfo, create_topic, pause_broker, resume_broker
from tests.faults.harness import (
    PipelineFactory,
    Worker,
    check_ledger,
    fault_query,
    good_records,
    poison_records,
    wait_for_progress,
    wait_for_records,
    with_poison,
)
from tests.kafka_io import produce_raw, read_topic
from tests.reference import assert_tables_equal, expected
from tests.results import read_table
from tests.streams import make_stream

PAUSE_S = 20.0
SIMPLE_POISON = ("not JSON", "JSON array", "no event time", "numeric column holds a string")


@pytest.mark.slow
async def test_broker_frozen_20s_worker_waits_and_resumes(
    own_stack: StackInfo, unique_name: str, tmp_path: Path, own_pipeline: PipelineFactory
) -> None:
    bootstrap, dsn = own_stack.bootstrap, own_stack.dsn
    stream = make_stream(30_000, partitions=4, seed=77)
    poisons = [p for p in poison_records() if p.kind in SIMPLE_POISON]
    messages, where = with_poison(stream, poisons)
    dlq, late_dlq = f"{unique_name}_dlq", f"{unique_name}_late"
    for topic, partitions in ((unique_name, 4), (dlq, 1), (late_dlq, 1)):
        await create_topic(bootstrap, topic, partitions)
    await produce_raw(bootstrap, unique_name, messages)
    pipe = own_pipeline(
        max_records=1_000,
        late={"strategy": "sendtodlq", "dlqTopic": late_dlq},
        dlq={"dlqType": "kafka", "topic": dlq},
    )
    worker = Worker(pipe.write(tmp_path), tmp_path / "worker.log")
    pg = await asyncpg.connect(dsn)
    try:
        before = await wait_for_progress(pg, unique_name, 5_000, [worker])
        pause_broker(own_stack)
        try:
            paused_at = time.monotonic()
            while time.monotonic() - paused_at < PAUSE_S:
                assert worker.alive(), worker.text()[-3000:]
                await asyncio.sleep(0.5)
            during = await pg.fetchval(
                "SELECT coalesce(sum(records), 0) FROM streamproc_ledger WHERE query = $1",
                unique_name,
            )
        finally:
            resume_broker(own_stack)
        await wait_for_records(pg, unique_name, len(messages), [worker], timeout=180)
        assert await worker.terminate() == 0, worker.text()[-3000:]

        produced = {p: sum(1 for m in messages if m[0] == p) for p in stream}
        ledger = await check_ledger(pg, unique_name, unique_name, produced)
        query = fault_query()
        good = good_records(stream, where)
        model = expected(query, good)
        assert_tables_equal(await read_table(pg, unique_name, query), model.table)
    finally:
        worker.stop()
        await pg.close()
    # Dead letters are at-least-once: compare distinct source positions.
    bad = {letter.source for letter in await read_topic(bootstrap, dlq)}
    assert bad == set(where) and ledger.bad == len(where)
    late = await read_topic(bootstrap, late_dlq)
    assert {letter.source for letter in late} == set(model.late)
    assert ledger.late == len(model.late) == len({letter.source for letter in late})
    print(
        f"\nbroker frozen {PAUSE_S:.0f}s after {before} records ({during} committed when it "
        f"resumed): {ledger.records} records, {len(model.table)} result rows, {len(bad)} bad and "
        f"{ledger.late} late dead letters ({len(late)} late messages); 0 differences"
    )

"""Rebalances of a session-window query (issue 22): three workers, one killed with -9
mid-run, a fourth added later.

As tests/faults/test_rebalance.py, with session windows (5 minute gap, update mode)
over users whose records are on every partition: no worker owns every partition, so
the checkpoint merges the partial sessions of every partition and closes them by W.
Every move restores the partition (its partial sessions and the query's fences) from
the ledger, so the table and the state rows equal one clean run's (one worker, which
closes sessions itself), and the table the model's.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from streamproc.local import create_topic
from tests.faults.harness import (
    PipelineFactory,
    Worker,
    check_ledger,
    clean_run,
    wait_for_progress,
    wait_for_records,
)
from tests.kafka_io import produce
from tests.reference import Query, assert_tables_equal
from tests.reference_sessions import expected_sessions, one_phase
from tests.results import read_late_table, read_partials, read_table
from tests.streams import AGGS, MINUTE, make_stream
from tests.waiting import wait_until

RECORDS = 40_000
USERS = 200
GAP_MS = 5 * MINUTE
ASSIGNED = re.compile(r"assigned partitions \[([0-9, ]*)\]")


def last_assignment(worker: Worker) -> list[int]:
    """The partitions a worker said it owns, the last time it said so."""
    found = ASSIGNED.findall(worker.text())
    return [int(p) for p in found[-1].split(",") if p.strip()] if found else []


@pytest.mark.slow
async def test_sessions_kill_one_of_three_workers_then_add_one(
    kafka_bootstrap: str, pg: Any, unique_name: str, tmp_path: Path, pipeline: PipelineFactory
) -> None:
    stream = make_stream(RECORDS, partitions=4, seed=34, users=USERS)
    await create_topic(kafka_bootstrap, unique_name, 4)
    await produce(kafka_bootstrap, unique_name, stream)
    late_table = f"{unique_name}_late"
    pipe = pipeline(
        # At most ~1,000 records/s per worker: the run outlasts both rebalances.
        trigger="processingtime=500 milliseconds",
        max_records=500,
        late={"strategy": "separatestream", "lateDataTable": late_table},
        gap="5 minutes",
    )
    config = pipe.write(tmp_path)
    workers = [Worker(config, tmp_path / f"worker-{i}.log") for i in range(3)]
    try:
        # The group settles with all three members owning partitions.
        await wait_until(lambda: all(last_assignment(w) for w in workers), "3 members", 90)
        victim = workers[1]
        owned_by_victim = last_assignment(victim)
        await wait_for_progress(pg, unique_name, 7_000, workers)
        victim.kill9()
        survivors = [workers[0], workers[2]]
        # Its partitions stall until its session times out, then move.
        await wait_until(
            lambda: all(
                p in last_assignment(workers[0]) + last_assignment(workers[2])
                for p in owned_by_victim
            ),
            "the dead worker's partitions moved to the survivors",
        )
        progress_at_join = await wait_for_progress(pg, unique_name, 17_000, survivors)
        added = Worker(config, tmp_path / "worker-added.log")
        workers.append(added)
        survivors.append(added)
        await wait_until(lambda: bool(last_assignment(added)), "the added worker owns partitions")
        await wait_for_records(pg, unique_name, RECORDS, survivors)
        for w in survivors:
            assert await w.terminate() == 0, w.text()[-3000:]
    finally:
        for w in workers:
            w.stop()
    assert progress_at_join < RECORDS  # the fourth worker joined a running query

    produced = {p: len(records) for p, records in stream.items()}
    ledger = await check_ledger(pg, unique_name, unique_name, produced)
    query = Query(("user_id",), AGGS, delay_ms=5 * MINUTE, output_mode="update")
    model = expected_sessions(query, GAP_MS, sorted(stream), one_phase(stream))
    table = await read_table(pg, unique_name, query, sessions=True)
    assert_tables_equal(table, model.table)
    late = await read_late_table(pg, late_table, unique_name)
    assert late == model.late

    reference = f"{unique_name}_ref"
    await clean_run(config, query=reference, table=reference, late_table=f"{reference}_late")
    assert_tables_equal(table, await read_table(pg, reference, query, sessions=True))
    assert await read_late_table(pg, f"{reference}_late", reference) == late
    partials = await read_partials(pg, unique_name)
    assert partials and partials == await read_partials(pg, reference)
    print(
        f"\nsessions rebalance: 3 workers, partitions {owned_by_victim} of the one killed at "
        f">=7,000 records moved, a 4th joined at {progress_at_join}: {ledger.rows} ledger "
        f"rows, {ledger.records} records, {len(model.table)} sessions, {len(late)} late rows, "
        f"{len(partials)} state rows; 0 differences"
    )

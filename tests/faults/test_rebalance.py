"""Rebalances: three workers, one killed with -9 mid-run, a fourth added later.

The dead worker's partitions stall until its session times out, then move to
the survivors; the added worker takes some partitions over again. Every move
restores the partition from the ledger, so the tables equal one clean run's.
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
    fault_query,
    wait_for_progress,
    wait_for_records,
)
from tests.kafka_io import produce
from tests.reference import assert_tables_equal, expected
from tests.results import read_late_table, read_partials, read_table
from tests.streams import make_stream
from tests.waiting import wait_until

RECORDS = 60_000
ASSIGNED = re.compile(r"assigned partitions \[([0-9, ]*)\]")


def last_assignment(worker: Worker) -> list[int]:
    """The partitions a worker said it owns, the last time it said so."""
    found = ASSIGNED.findall(worker.text())
    return [int(p) for p in found[-1].split(",") if p.strip()] if found else []


@pytest.mark.slow
async def test_kill_one_of_three_workers_then_add_one(
    kafka_bootstrap: str, pg: Any, unique_name: str, tmp_path: Path, pipeline: PipelineFactory
) -> None:
    stream = make_stream(RECORDS, partitions=4, seed=33)
    await create_topic(kafka_bootstrap, unique_name, 4)
    await produce(kafka_bootstrap, unique_name, stream)
    late_table = f"{unique_name}_late"
    pipe = pipeline(
        # At most ~1,000 records/s per worker: the run outlasts both rebalances.
        trigger="processingtime=500 milliseconds",
        max_records=500,
        late={"strategy": "separatestream", "lateDataTable": late_table},
    )
    config = pipe.write(tmp_path)
    workers = [Worker(config, tmp_path / f"worker-{i}.log") for i in range(3)]
    try:
        # The group settles with all three members owning partitions.
        await wait_until(lambda: all(last_assignment(w) for w in workers), "3 members", 90)
        victim = workers[1]
        owned_by_victim = last_assignment(victim)
        await wait_for_progress(pg, unique_name, 10_000, workers)
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
        progress_at_join = await wait_for_progress(pg, unique_name, 25_000, survivors)
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
    query = fault_query()
    model = expected(query, stream)
    assert_tables_equal(await read_table(pg, unique_name, query), model.table)
    late = await read_late_table(pg, late_table, unique_name)
    assert late == model.late

    reference = f"{unique_name}_ref"
    await clean_run(config, query=reference, table=reference, late_table=f"{reference}_late")
    assert_tables_equal(
        await read_table(pg, unique_name, query), await read_table(pg, reference, query)
    )
    assert await read_late_table(pg, f"{reference}_late", reference) == late
    partials = await read_partials(pg, unique_name)
    assert partials and partials == await read_partials(pg, reference)
    print(
        f"\nrebalance: 3 workers, partitions {owned_by_victim} of the one killed at >=10,000 "
        f"records moved, a 4th joined at {progress_at_join}: {ledger.rows} ledger rows, "
        f"{ledger.records} records, {len(model.table)} result rows, {len(late)} late rows, "
        f"{len(partials)} partials; 0 differences"
    )

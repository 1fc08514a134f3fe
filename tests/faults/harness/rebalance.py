"""Rebalances: three workers, one killed with -9 mid-run, a fourth added later; the checks.

Shared by the rebalance fault tests (sliding windows, sessions): what differs between
them is the stream, the query and its model, and when the kill and the join come, not
how the workers are driven or what is compared at the end.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from streamproc.local import create_topic
from tests.faults.harness.configs import PipelineFactory
from tests.faults.harness.ledger import (
    LedgerSummary,
    check_ledger,
    wait_for_progress,
    wait_for_records,
)
from tests.faults.harness.workers import Worker, clean_run
from tests.kafka_io import produce
from tests.reference import Outcome, Query, assert_tables_equal
from tests.results import read_late_table, read_partials, read_table
from tests.waiting import wait_until

ASSIGNED = re.compile(r"assigned partitions \[([0-9, ]*)\]")


def last_assignment(worker: Worker) -> list[int]:
    """The partitions a worker said it owns, the last time it said so."""
    found = ASSIGNED.findall(worker.text())
    return [int(p) for p in found[-1].split(",") if p.strip()] if found else []


@dataclass(frozen=True)
class Rebalance:
    """What one rebalance run did: its query, config and topic, and the moves it saw."""

    name: str
    config: Path
    late_table: str
    produced: dict[int, int]
    kill_at: int
    owned_by_victim: list[int]
    progress_at_join: int


async def kill_one_then_add_one(
    kafka_bootstrap: str,
    pg: Any,
    name: str,
    tmp_path: Path,
    pipeline: PipelineFactory,
    stream: Mapping[int, Sequence[Any]],
    *,
    kill_at: int,
    join_at: int,
    **changes: Any,
) -> Rebalance:
    """Run the query with three workers, kill one with -9, add a fourth; all terminate.

    The topic (4 partitions) gets the stream; three workers start and the group
    settles with each owning partitions. Once the ledger counts `kill_at` records, one
    is killed: its partitions stall until its session times out, then move to the two
    survivors. Once it counts `join_at`, a fourth worker joins and takes partitions
    over; when every record is in the ledger, the live workers terminate (exit 0).
    Asserts that the fourth worker joined a running query.

    Args:
        kafka_bootstrap: Kafka bootstrap servers.
        pg: An asyncpg connection.
        name: The test's unique name (query, topic and table).
        tmp_path: The test's temporary directory (config, worker logs).
        pipeline: The test's pipeline factory.
        stream: partition -> records, produced to the topic.
        kill_at: The ledger's record count before the kill.
        join_at: The ledger's record count before the fourth worker starts.
        **changes: Pipeline fields besides the shared ones (trigger, batch, late table).

    Returns:
        The run: what `check_rebalance` compares.
    """
    await create_topic(kafka_bootstrap, name, 4)
    await produce(kafka_bootstrap, name, stream)
    produced = {p: len(records) for p, records in stream.items()}
    records = sum(produced.values())
    late_table = f"{name}_late"
    pipe = pipeline(
        # At most ~1,000 records/s per worker: the run outlasts both rebalances.
        trigger="processingtime=500 milliseconds",
        max_records=500,
        late={"strategy": "separatestream", "lateDataTable": late_table},
        **changes,
    )
    config = pipe.write(tmp_path)
    workers = [Worker(config, tmp_path / f"worker-{i}.log") for i in range(3)]
    try:
        # The group settles with all three members owning partitions.
        await wait_until(lambda: all(last_assignment(w) for w in workers), "3 members", 90)
        victim = workers[1]
        owned_by_victim = last_assignment(victim)
        await wait_for_progress(pg, name, kill_at, workers)
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
        progress_at_join = await wait_for_progress(pg, name, join_at, survivors)
        added = Worker(config, tmp_path / "worker-added.log")
        workers.append(added)
        survivors.append(added)
        await wait_until(lambda: bool(last_assignment(added)), "the added worker owns partitions")
        await wait_for_records(pg, name, records, survivors)
        for w in survivors:
            assert await w.terminate() == 0, w.text()[-3000:]
    finally:
        for w in workers:
            w.stop()
    assert progress_at_join < records  # the fourth worker joined a running query
    return Rebalance(name, config, late_table, produced, kill_at, owned_by_victim, progress_at_join)


@dataclass(frozen=True)
class Checked:
    """What `check_rebalance` found equal, counted."""

    run: Rebalance
    ledger: LedgerSummary
    rows: int
    late: int
    partials: int

    def __str__(self) -> str:
        return (
            f"3 workers, partitions {self.run.owned_by_victim} of the one killed at "
            f">={self.run.kill_at:,} records moved, a 4th joined at "
            f"{self.run.progress_at_join}: {self.ledger.rows} ledger rows, "
            f"{self.ledger.records} records, {self.rows} result rows, {self.late} late rows, "
            f"{self.partials} state rows; 0 differences"
        )


async def check_rebalance(
    pg: Any, run: Rebalance, query: Query, model: Outcome, *, sessions: bool = False
) -> Checked:
    """Assert that a rebalance run left what the model says and what one clean run does.

    The ledger holds every produced offset once; the result table equals the model's
    row by row, and so does the late table; then one clean run (one worker, no fault,
    outputs renamed `<name>_ref`) runs the same config, and the result table, the late
    table and the partial states (non-empty) equal its own.

    Args:
        pg: An asyncpg connection.
        run: The rebalance run.
        query: The model's view of the query.
        model: The model's outcome for the produced stream.
        sessions: The query has session windows (see `tests.results.read_table`).

    Returns:
        The counts compared.
    """
    name = run.name
    ledger = await check_ledger(pg, name, name, run.produced)
    assert_tables_equal(await read_table(pg, name, query, sessions=sessions), model.table)
    late = await read_late_table(pg, run.late_table, name)
    assert late == model.late

    reference = f"{name}_ref"
    await clean_run(run.config, query=reference, table=reference, late_table=f"{reference}_late")
    assert_tables_equal(
        await read_table(pg, name, query, sessions=sessions),
        await read_table(pg, reference, query, sessions=sessions),
    )
    assert await read_late_table(pg, f"{reference}_late", reference) == late
    partials = await read_partials(pg, name)
    assert partials and partials == await read_partials(pg, reference)
    return Checked(run, ledger, len(model.table), len(late), len(partials))

"""kill -9 of the worker at 20 random instants of a 200,000-record run, then an exact finish.

A worker (processingtime trigger) is started, killed with SIGKILL at a random
instant, and started again, 20 times; an availablenow run then finishes the
topic. The result table, the late side table and the partials must equal
one clean run's (and the independent model's), and the ledger must hold
every offset exactly once.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import pytest

from streamproc.local import create_topic
from tests.faults.harness import PipelineFactory, check_ledger, clean_run, fault_query
from tests.faults.harness.lives import finish_available_now, kill_lives
from tests.kafka_io import produce
from tests.reference import assert_tables_equal, expected
from tests.results import read_late_table, read_partials, read_table
from tests.streams import make_stream

RECORDS = 200_000
KILLS = 20
SEED = int(os.environ.get("STREAMPROC_FAULT_SEED", "20251126"))
# A killed worker stays in the consumer group until its session times out,
# and the next one waits about half of it for its first assignment: 3 s keeps
# 20 restarts to about 3 minutes (heartbeats go every second).
SESSION_MS = 3_000


@pytest.mark.slow
async def test_kill9_at_random_instants_equals_a_clean_run(
    kafka_bootstrap: str, pg: Any, unique_name: str, tmp_path: Path, pipeline: PipelineFactory
) -> None:
    rng = random.Random(SEED)
    stream = make_stream(RECORDS, partitions=4, seed=SEED % 1000)
    await create_topic(kafka_bootstrap, unique_name, 4)
    await produce(kafka_bootstrap, unique_name, stream)
    late_table = f"{unique_name}_late"
    pipe = pipeline(
        # ~3,000 records/s at most: the run spans all 20 lives of the worker.
        trigger="processingtime=500 milliseconds",
        max_records=1_500,
        late={"strategy": "separatestream", "lateDataTable": late_table},
    )
    config = pipe.write(tmp_path)

    progress, lives_with_commits = await kill_lives(
        config,
        tmp_path,
        pg,
        unique_name,
        kills=KILLS,
        records=RECORDS,
        rng=rng,
        session_ms=SESSION_MS,
    )
    # At once, while the last killed worker still holds partitions: the
    # availablenow run ends only when the whole query reached its end offsets.
    finished = await finish_available_now(pipe, tmp_path, SESSION_MS)
    assert "the query reached the end offsets of run 1 on all 4 partitions" in finished

    produced = {p: len(records) for p, records in stream.items()}
    ledger = await check_ledger(pg, unique_name, unique_name, produced)
    query = fault_query()
    model = expected(query, stream)
    assert_tables_equal(await read_table(pg, unique_name, query), model.table)
    late = await read_late_table(pg, late_table, unique_name)
    assert late == model.late
    assert ledger.late == len(model.late) and ledger.aggregated == RECORDS - len(model.late)

    reference = f"{unique_name}_ref"
    stats = await clean_run(
        config, query=reference, table=reference, late_table=f"{reference}_late"
    )
    assert stats.records == RECORDS
    assert_tables_equal(
        await read_table(pg, unique_name, query), await read_table(pg, reference, query)
    )
    assert await read_late_table(pg, late_table, unique_name) == await read_late_table(
        pg, f"{reference}_late", reference
    )
    partials = await read_partials(pg, unique_name)
    assert partials and partials == await read_partials(pg, reference)
    print(
        f"\nkill -9 x{KILLS} (seed {SEED}): ledger progress at each kill {progress[1:]}, "
        f"{lives_with_commits} lives committed; "
        f"{ledger.rows} ledger rows, {ledger.records} records, {len(model.table)} result rows, "
        f"{len(late)} late rows, {len(partials)} partials; 0 differences"
    )

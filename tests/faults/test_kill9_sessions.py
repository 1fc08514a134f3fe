"""kill -9 of a session-window worker at random instants, then an exact finish (issue 22).

As tests/faults/test_kill9.py, with session windows (5 minute gap, update mode) over
users whose records are on every partition: a worker (processingtime trigger) is
killed with SIGKILL at a random instant and started again, 8 times; an availablenow
run finishes the topic. The result table and the state rows (partial sessions and
fences) must equal one clean run's, the table the model's; the ledger must hold every
offset once. A restarted worker may share the partitions with the killed one until
its group session times out: then the checkpoint merges and closes sessions.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import pytest

from streamproc.local import create_topic
from tests.faults.harness import PipelineFactory, check_ledger, clean_run
from tests.faults.harness.lives import finish_available_now, kill_lives
from tests.kafka_io import produce
from tests.reference import Query, assert_tables_equal
from tests.reference_sessions import expected_sessions, one_phase
from tests.results import read_partials, read_table
from tests.streams import AGGS, MINUTE, make_stream

RECORDS = 40_000
KILLS = 8
USERS = 200  # a user's records ~400 s apart: sessions of a 5 minute gap break often
GAP_MS = 5 * MINUTE
SEED = int(os.environ.get("STREAMPROC_FAULT_SEED", "20251126"))
SESSION_MS = 3_000


@pytest.mark.slow
async def test_kill9_of_a_session_query_equals_a_clean_run(
    kafka_bootstrap: str, pg: Any, unique_name: str, tmp_path: Path, pipeline: PipelineFactory
) -> None:
    rng = random.Random(SEED + 22)
    stream = make_stream(RECORDS, partitions=4, seed=SEED % 1000, users=USERS)
    await create_topic(kafka_bootstrap, unique_name, 4)
    await produce(kafka_bootstrap, unique_name, stream)
    pipe = pipeline(trigger="processingtime=500 milliseconds", max_records=700, gap="5 minutes")
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
    await finish_available_now(pipe, tmp_path, SESSION_MS)

    produced = {p: len(records) for p, records in stream.items()}
    ledger = await check_ledger(pg, unique_name, unique_name, produced)
    query = Query(("user_id",), AGGS, delay_ms=5 * MINUTE, output_mode="update")
    model = expected_sessions(query, GAP_MS, sorted(stream), one_phase(stream))
    table = await read_table(pg, unique_name, query, sessions=True)
    assert_tables_equal(table, model.table)
    assert ledger.late == len(model.late) and ledger.aggregated == RECORDS - len(model.late)

    reference = f"{unique_name}_ref"
    stats = await clean_run(config, query=reference, table=reference)
    assert stats.records == RECORDS
    assert_tables_equal(table, await read_table(pg, reference, query, sessions=True))
    states = await read_partials(pg, unique_name)
    assert states and states == await read_partials(pg, reference)
    print(
        f"\nkill -9 x{KILLS} of a session query (seed {SEED}): ledger progress at each kill "
        f"{progress[1:]}, {lives_with_commits} lives committed; {ledger.records} records, "
        f"{len(table)} sessions, {len(states)} state rows; 0 differences"
    )

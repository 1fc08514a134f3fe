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

from pathlib import Path
from typing import Any

import pytest

from tests.faults.harness import PipelineFactory
from tests.faults.harness.rebalance import check_rebalance, kill_one_then_add_one
from tests.reference import Query
from tests.reference_sessions import expected_sessions, one_phase
from tests.streams import AGGS, MINUTE, make_stream

RECORDS = 30_000
USERS = 200
GAP_MS = 5 * MINUTE


@pytest.mark.slow
async def test_sessions_kill_one_of_three_workers_then_add_one(
    kafka_bootstrap: str, pg: Any, unique_name: str, tmp_path: Path, pipeline: PipelineFactory
) -> None:
    stream = make_stream(RECORDS, partitions=4, seed=34, users=USERS)
    run = await kill_one_then_add_one(
        kafka_bootstrap,
        pg,
        unique_name,
        tmp_path,
        pipeline,
        stream,
        kill_at=7_000,
        join_at=17_000,
        gap="5 minutes",
    )
    query = Query(("user_id",), AGGS, delay_ms=5 * MINUTE, output_mode="update")
    model = expected_sessions(query, GAP_MS, sorted(stream), one_phase(stream))
    checked = await check_rebalance(pg, run, query, model, sessions=True)
    print(f"\nsessions rebalance: {checked}")

"""Rebalances: three workers, one killed with -9 mid-run, a fourth added later.

The dead worker's partitions stall until its session times out, then move to
the survivors; the added worker takes some partitions over again. Every move
restores the partition from the ledger, so the tables equal one clean run's.
The run and its checks: tests/faults/harness/rebalance.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.faults.harness import PipelineFactory, fault_query
from tests.faults.harness.rebalance import check_rebalance, kill_one_then_add_one
from tests.reference import expected
from tests.streams import make_stream

RECORDS = 60_000


@pytest.mark.slow
async def test_kill_one_of_three_workers_then_add_one(
    kafka_bootstrap: str, pg: Any, unique_name: str, tmp_path: Path, pipeline: PipelineFactory
) -> None:
    stream = make_stream(RECORDS, partitions=4, seed=33)
    run = await kill_one_then_add_one(
        kafka_bootstrap, pg, unique_name, tmp_path, pipeline, stream, kill_at=10_000, join_at=25_000
    )
    query = fault_query()
    checked = await check_rebalance(pg, run, query, expected(query, stream))
    print(f"\nrebalance: {checked}")

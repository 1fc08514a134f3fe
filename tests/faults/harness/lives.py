"""A worker killed with SIGKILL at random instants, life after life, then a finish.

Shared by the kill -9 fault tests (tumbling windows, sessions): what differs between
them is the query and what is compared at the end, not how the worker is killed.
"""

from __future__ import annotations

import asyncio
import itertools
import random
from pathlib import Path
from typing import Any

from tests.faults.harness.configs import Pipeline
from tests.faults.harness.workers import Worker
from tests.results import ledger_records


async def kill_lives(
    config: Path,
    tmp_path: Path,
    pg: Any,
    query: str,
    *,
    kills: int,
    records: int,
    rng: random.Random,
    session_ms: int,
) -> tuple[list[int], int]:
    """Start the worker and kill it with -9 at a random instant, `kills` times.

    Returns the ledger's record count after each life (from 0) and how many lives
    committed something. Asserts that the kills landed during the run (no life
    finished the topic, most committed something) and that a kill never took back
    what was committed.
    """
    progress = [0]
    for life in range(kills):
        worker = Worker(config, tmp_path / f"worker-{life}.log", session_timeout_ms=session_ms)
        try:
            if life % 4 == 3:
                # Some instants fall in start-up: joining, restoring, first fetch.
                await asyncio.sleep(rng.uniform(0.5, 4.0))
            else:
                await worker.wait_for("assigned partitions [0, 1, 2, 3]")
                await asyncio.sleep(rng.uniform(0.0, 3.0))
            assert worker.alive(), worker.text()[-3000:]
            worker.kill9()
        finally:
            worker.stop()
        progress.append(await ledger_records(pg, query))
    assert progress[-1] < records, progress
    assert progress == sorted(progress)
    lives_with_commits = sum(b > a for a, b in itertools.pairwise(progress))
    assert lives_with_commits >= kills // 4, progress
    return progress, lives_with_commits


async def finish_available_now(pipe: Pipeline, tmp_path: Path, session_ms: int) -> str:
    """Run the query to the topic's end (availablenow) at once; its log text.

    Started while the last killed worker may still hold partitions: the run ends only
    when the whole query reached its end offsets.
    """
    finish = pipe.changed(trigger="availablenow", max_records=5_000)  # sizes change nothing
    finisher = Worker(
        finish.write(tmp_path, "-finish"), tmp_path / "finish.log", session_timeout_ms=session_ms
    )
    try:
        assert await finisher.finish(timeout=300) == 0, finisher.text()[-3000:]
    finally:
        finisher.stop()
    return finisher.text()

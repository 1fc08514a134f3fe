"""A bounded run ends when the whole query reached its end offsets, whoever read them.

As users run it: workers of the same query killed with -9 (after they
committed, and while still joining the group) and an availablenow run
started at once, while the dead members still hold partitions; and two or
three availablenow workers started together as separate processes. Every run
must exit 0 only once the query is complete, with the table equal row by row
to one clean worker's; no test waits out a consumer session.
"""

from __future__ import annotations

import asyncio
import random
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
)
from tests.kafka_io import produce
from tests.reference import assert_tables_equal
from tests.results import read_table
from tests.streams import make_stream

RECORDS = 40_000
SESSION_MS = 6_000


async def _reference(pg: Any, config: Path, name: str) -> dict[Any, Any]:
    reference = f"{name}_ref"
    stats = await clean_run(config, query=reference, table=reference)
    assert stats.records == RECORDS
    return await read_table(pg, reference, fault_query())


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2])
async def test_availablenow_right_after_kills_covers_the_whole_query(
    seed: int,
    kafka_bootstrap: str,
    pg: Any,
    unique_name: str,
    tmp_path: Path,
    pipeline: PipelineFactory,
) -> None:
    rng = random.Random(seed)
    stream = make_stream(RECORDS, partitions=4, seed=seed)
    await create_topic(kafka_bootstrap, unique_name, 4)
    await produce(kafka_bootstrap, unique_name, stream)
    pipe = pipeline(trigger="processingtime=300 milliseconds", max_records=1_000)
    config = pipe.write(tmp_path)
    committed = Worker(config, tmp_path / "committed.log", session_timeout_ms=SESSION_MS)
    joining: Worker | None = None
    try:
        await committed.wait_for("assigned partitions [0, 1, 2, 3]")
        await wait_for_progress(pg, unique_name, rng.randrange(2_000, 8_000), [committed])
        joining = Worker(config, tmp_path / "joining.log", session_timeout_ms=SESSION_MS)
        await asyncio.sleep(rng.uniform(0.3, 2.0))
        assert "assigned partitions" not in joining.text()  # killed mid-join
        committed.kill9()
        joining.kill9()
    finally:
        committed.stop()
        if joining is not None:
            joining.stop()
    # At once: the dead members still hold partitions for their session's time.
    finish = pipe.changed(trigger="availablenow", max_records=5_000)
    finisher = Worker(
        finish.write(tmp_path, "-finish"), tmp_path / "finish.log", session_timeout_ms=SESSION_MS
    )
    try:
        assert await finisher.finish(timeout=240) == 0, finisher.text()[-3000:]
    finally:
        finisher.stop()
    out = finisher.text()
    assert "the query reached the end offsets of run 1 on all 4 partitions" in out, out[-3000:]
    produced = {p: len(records) for p, records in stream.items()}
    await check_ledger(pg, unique_name, unique_name, produced)
    assert_tables_equal(
        await read_table(pg, unique_name, fault_query()), await _reference(pg, config, unique_name)
    )


@pytest.mark.slow
@pytest.mark.parametrize("workers", [2, 3])
async def test_bounded_workers_started_together_each_end_with_the_whole_query(
    workers: int,
    kafka_bootstrap: str,
    pg: Any,
    unique_name: str,
    tmp_path: Path,
    pipeline: PipelineFactory,
) -> None:
    stream = make_stream(RECORDS // 2, partitions=4, seed=40 + workers)
    await create_topic(kafka_bootstrap, unique_name, 4)
    await produce(kafka_bootstrap, unique_name, stream)
    config = pipeline(trigger="availablenow", max_records=2_000).write(tmp_path)
    started = [
        Worker(config, tmp_path / f"worker-{i}.log", session_timeout_ms=SESSION_MS)
        for i in range(workers)
    ]
    try:
        codes = [await w.finish(timeout=240) for w in started]
    finally:
        for w in started:
            w.stop()
    texts = [w.text() for w in started]
    assert codes == [0] * workers, [t[-2000:] for t in texts]
    for text in texts:
        assert "the query reached the end offsets of run 1 on all 4 partitions" in text, text
    produced = {p: len(records) for p, records in stream.items()}
    ledger = await check_ledger(pg, unique_name, unique_name, produced)
    assert ledger.records == RECORDS // 2
    reference = f"{unique_name}_ref"
    stats = await clean_run(config, query=reference, table=reference)
    assert stats.records == RECORDS // 2
    assert_tables_equal(
        await read_table(pg, unique_name, fault_query()),
        await read_table(pg, reference, fault_query()),
    )

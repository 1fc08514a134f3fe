"""Property: whatever the split of partitions over workers, the kills and restarts, the
committed session table equals the reference model's (memory checkpoint, hypothesis).

Random streams over 1-4 partitions (keys on every partition, disorder, exact gap
distances), split over one or two workers (one worker owning every partition closes
sessions itself; otherwise the checkpoint merges and closes them), committed in random
steps with kills before commits and restarts from the checkpoint alone. Halfway, the
query may be handed to another split (two workers stopped and one started on every
partition, or the reverse), restored from the checkpoint alone, as an operator who
scales a query down or up does.
"""

from __future__ import annotations

import asyncio
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamproc.sinks.base import QueryIdentity
from streamproc.sinks.definition import query_definition
from streamproc.testing import MemoryCheckpoint, MemoryDatabase, MemoryTableSink
from tests.component.sessions_driver import SessionWorker, run_with_restarts, session_spec
from tests.reference import assert_tables_equal

Split = list[list[int]]


def a_split(draw: st.DrawFn, partitions: int) -> Split:
    """Every partition to one worker, or a cut into two workers."""
    cut = draw(st.integers(0, partitions - 1)) if partitions > 1 else 0
    if cut == 0:
        return [list(range(partitions))]
    return [list(range(cut)), list(range(cut, partitions))]


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[str, int, int, dict[int, list[Any]], list[Split]]:
    mode = draw(st.sampled_from(["update", "complete", "append"]))
    gap = draw(st.sampled_from([2, 5, 10]))
    delay = draw(st.sampled_from([0, 3, 8]))
    partitions = draw(st.integers(1, 4))
    streams: dict[int, list[Any]] = {}
    for p in range(partitions):
        t = draw(st.integers(0, 10))
        records = []
        for _ in range(draw(st.integers(0, 12))):
            t += draw(st.sampled_from([0, 1, gap - 1, gap, gap + 1, 2 * gap]))
            back = draw(st.sampled_from([0, 0, 1, gap, delay + 1]))
            records.append({"t": t - back, "k": draw(st.sampled_from("ab")), "v": 1})
        streams[p] = records
    splits = [a_split(draw, partitions)]
    if draw(st.booleans()):
        splits.append(a_split(draw, partitions))  # the second half on another split
    return mode, gap, delay, streams, splits


async def run(mode: str, gap: int, delay: int, streams: Any, splits: Any, seed: int) -> None:
    spec = session_spec(mode, delay_ms=delay, gap_ms=gap)
    db = MemoryDatabase()
    identity = QueryIdentity("q", "t", query_definition(spec, topic="t", sink={"table": "q"}), "q")

    def make() -> MemoryCheckpoint:
        return MemoryCheckpoint(db, identity=identity, spec=spec, sink=MemoryTableSink(db, "q"))

    first_half = {p: r[: len(r) // 2] for p, r in streams.items()}
    first: SessionWorker | None = None
    for i, split in enumerate(splits):
        part = first_half if i < len(splits) - 1 else streams
        workers = []
        for mine in split:
            log = first.log if first is not None else []
            worker = SessionWorker(spec, make(), part, owned=mine, log=log)
            first = first or worker
            worker.late = first.late
            workers.append(worker)
        for w in workers:
            await w.checkpoint.open()
            await w.restore()  # from the checkpoint the split before left
        await run_with_restarts(*workers, seed=seed + i)
    assert first is not None
    ref = first.reference()
    table = {(*r.key, r.window_start_ms, r.window_end_ms): r.values for r in db.table_rows("q")}
    assert_tables_equal(table, ref.table)
    assert first.late == ref.late_reasons


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios(), st.integers(0, 1_000))
def test_committed_sessions_equal_the_reference_for_any_split_and_kills(
    scenario: tuple[str, int, int, dict[int, list[Any]], list[Split]], seed: int
) -> None:
    asyncio.run(run(*scenario, seed))

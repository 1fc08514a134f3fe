"""Session windows, committed by a worker that owns every partition: the same contract
on both checkpoints (memory, PostgreSQL by statements), held to the reference model.

Timelines use gap 10 (a record at t stands for [t, t + 10)) and delay 3 (a
partition's watermark is its highest event time - 3; W the least of them).
"""

from __future__ import annotations

from dataclasses import replace
from itertools import pairwise
from typing import Any

import pytest

from streamproc.sinks.base import CheckpointError
from tests.component.sessions_driver import SessionWorker, random_streams, run_with_restarts
from tests.component.sessions_driver import session_spec as spec
from tests.component.test_checkpoint_contract import Backend
from tests.component.test_checkpoint_contract import backend as backend
from tests.reference import assert_tables_equal


async def rows(backend: Backend) -> dict[tuple[Any, ...], tuple[Any, ...]]:
    assert backend.bounded_rows is not None
    return await backend.bounded_rows()


def assert_no_overlap(table: dict[tuple[Any, ...], Any]) -> None:
    spans: dict[Any, list[tuple[int, int]]] = {}
    for k, start, end in table:
        spans.setdefault(k, []).append((start, end))
    for k, found in spans.items():
        found.sort()
        for (_, e1), (s2, _) in pairwise(found):
            assert e1 <= s2, f"two overlapping sessions of {k}: {found}"


@pytest.mark.parametrize("mode", ["update", "complete", "append"])
@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_committed_sessions_equal_the_reference_row_by_row_across_restarts(
    backend: Backend, mode: str, seed: int
) -> None:
    # Three partitions, keys on every one, disorder, late records; the worker is killed
    # before some commits and restarted after others: the table is one clean run's.
    s = spec(mode)
    worker = SessionWorker(s, backend.make(s), random_streams(seed, 3, 25))
    await worker.checkpoint.open()
    await run_with_restarts(worker, seed)
    table = await rows(backend)
    ref = worker.reference()
    assert_tables_equal(table, ref.table)
    assert len(table) == len(ref.table) > 0
    assert worker.late == ref.late_reasons
    assert await backend.late() == set(ref.late_reasons)
    if mode != "append":
        assert_no_overlap(table)
    # The progress row's state total counts partial sessions and fences.
    loaded = [await worker.checkpoint.load_partition(p) for p in worker.partitions]
    stored = sum(len(x.partials) for x in loaded) + len(loaded[0].fences)
    assert worker.outcomes[-1].state_rows_total == stored


async def test_update_deletes_the_rows_of_merged_sessions_in_the_same_commit(
    backend: Backend,
) -> None:
    #   p0: a@0          a@15           -> [0,10) and [15,25): two rows
    #   p1:        a@8                  -> bridges them: [0,25), the two rows deleted
    s = spec("update")
    streams = {0: [{"t": 0, "k": "a", "v": 1}, {"t": 15, "k": "a", "v": 2}]}
    streams[1] = [{"t": 8, "k": "a", "v": 4}]
    worker = SessionWorker(s, backend.make(s), streams)
    await worker.checkpoint.open()
    await worker.step({0: 2})
    assert await rows(backend) == {("a", 0, 10): (1, 1), ("a", 15, 25): (1, 2)}
    await worker.step({1: 1})
    assert await rows(backend) == {("a", 0, 25): (3, 7)}
    # The merged session's partials: one per partition, each where it starts.
    loaded = [await worker.checkpoint.load_partition(p) for p in (0, 1)]
    assert [[(r.window_start_ms, r.window_end_ms) for r in x.partials] for x in loaded] == [
        [(0, 10), (15, 25)],
        [(8, 18)],
    ]


async def test_update_moves_a_row_when_its_session_grows_at_either_end(backend: Backend) -> None:
    #   a@20 -> [20,30); a@19 -> [19,30) (start moved); a@25 -> [19,35) (end moved);
    #   a@14 < wm 22: late, the row stays
    s = spec("update")
    streams = {0: [{"t": t, "k": "a", "v": 1} for t in (20, 19, 25, 14)]}
    worker = SessionWorker(s, backend.make(s), streams)
    await worker.checkpoint.open()
    seen = []
    for _ in range(4):
        await worker.step({0: 1})
        seen.append(await rows(backend))
    assert seen == [
        {("a", 20, 30): (1, 1)},
        {("a", 19, 30): (2, 2)},
        {("a", 19, 35): (3, 3)},
        {("a", 19, 35): (3, 3)},
    ]
    assert worker.late == {(0, 3): "event time older than watermark"}


async def test_append_writes_a_session_once_when_w_passes_its_end_and_keeps_a_fence(
    backend: Backend,
) -> None:
    #   p0: a@0 ...              a@30            W = min(wm0, wm1)
    #   p1:          a@5   z@13                  session a [0,15) closes at W >= 15
    s = spec("append")
    streams = {0: [{"t": 0, "k": "a", "v": 1}, {"t": 30, "k": "a", "v": 1}]}
    streams[1] = [{"t": 5, "k": "a", "v": 2}, {"t": 21, "k": "z", "v": 0}]
    worker = SessionWorker(s, backend.make(s), streams)
    await worker.checkpoint.open()
    await worker.step({0: 1, 1: 1})
    assert await rows(backend) == {}
    outcome = await worker.step({0: 1, 1: 1})  # W = min(27, 18) = 18 >= 15
    assert outcome is not None and outcome.global_watermark_ms == 18
    assert outcome.closed_windows == 1
    assert await rows(backend) == {("a", 0, 15): (2, 3)}
    # The closed session is gone from the state rows and kept as a fence for a gap.
    loaded = await worker.checkpoint.load_partition(0)
    assert loaded.fences == ((("a",), 0, 15),)
    assert [(r.key, r.window_start_ms) for r in loaded.partials] == [(("a",), 30)]
    await worker.restore()
    assert worker.engine.fences == ((("a",), 0, 15),)


async def test_a_session_batch_of_a_worker_not_owning_every_partition_is_refused(
    backend: Backend,
) -> None:
    s = spec("update")
    worker = SessionWorker(s, backend.make(s), {0: [{"t": 0, "k": "a", "v": 1}], 1: []})
    await worker.checkpoint.open()
    unowned = worker.checkpoint.commit

    async def commit_not_local(batch: Any, *, dry_run: bool = False) -> Any:
        return await unowned(replace(batch, closes_locally=False), dry_run=dry_run)

    worker.checkpoint.commit = commit_not_local  # type: ignore[method-assign]
    with pytest.raises(CheckpointError, match="owns every partition"):
        await worker.step({0: 1})
    assert await rows(backend) == {}
    assert (await worker.checkpoint.load_partition(0)).next_offset is None

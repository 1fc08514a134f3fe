"""The windowed stateTimeout contract, on both checkpoints (`MemoryCheckpoint`, PostgreSQL).

Two partitions hold partials of the same (key, window), as when message keys are
unrelated to the group key; the checkpoint decides idleness on their merged activity.
"""

from __future__ import annotations

from typing import Any

import pytest

from streamproc.engine import EXPIRED_STATE, AggSpec, PartialRow, QuerySpec, ResultRow, WindowSpec
from streamproc.sinks.base import CommitBatch, PartitionCommit
from tests.component import test_checkpoint_contract as contract
from tests.component.test_checkpoint_contract import Backend, W

# The contract's two checkpoints (memory and PostgreSQL), for every case here.
backend = contract.backend

T = 2_000  # the state timeout (ms)


def ttl_spec(mode: str) -> QuerySpec:
    return QuerySpec(
        group_by=("k",),
        aggregations=(AggSpec("n", None, "count"), AggSpec("total", "v", "sum")),
        output_mode=mode,  # type: ignore[arg-type]
        event_time_column="t",
        delay_ms=0,
        window=WindowSpec(W, W),
        state_timeout_ms=T,
    )


def part(key: str, n: int, total: float, touched: int, ws: int = 0) -> PartialRow:
    # State slots of count(*) + sum(v) + the activity: [rows, sum, touched]
    return PartialRow((key,), ws, ws + W, (n, total, touched))


def span(p: int, start: int, end: int, wm: int) -> PartitionCommit:
    n = end - start
    return PartitionCommit(p, start, end, n, n, 0, 0, 0, wm, wm)


def ttl_batch(p: int, start: int, end: int, wm: int, *partials: PartialRow) -> CommitBatch:
    return CommitBatch((span(p, start, end, wm),), {p: partials}, {}, None, topic_partitions=2)


def states(loaded: Any) -> dict[tuple[str, int], tuple[Any, ...]]:
    return {(r.key[0], r.window_start_ms): tuple(r.state) for r in loaded.partials}


@pytest.mark.parametrize("mode", ["append", "update"])
async def test_a_key_window_idle_over_every_partition_becomes_a_tombstone(
    backend: Backend, mode: str
) -> None:
    checkpoint = backend.make(ttl_spec(mode))
    await checkpoint.open()
    # (a, [0, W)) has partials in both partitions: last active at 1000 and at 3000.
    await checkpoint.commit(ttl_batch(0, 0, 1, 1_000, part("a", 1, 1.0, 1_000)))
    await checkpoint.commit(
        ttl_batch(1, 0, 2, 3_000, part("a", 1, 2.0, 3_000), part("b", 1, 5.0, 2_500))
    )
    # W = 3000: nothing is idle for 2000 yet (a: 3000, b: 2500).
    out = await checkpoint.commit(ttl_batch(0, 1, 2, 5_000, part("c", 1, 1.0, 5_000)))
    assert out.global_watermark_ms == 3_000
    # W = 5000: a (3000 + 2000 <= 5000) and b (2500) expire, c (5000) does not; partition
    # 0's own partial of a is 2000 behind W, but the merged activity decides.
    out = await checkpoint.commit(ttl_batch(1, 2, 3, 6_000, part("c", 1, 4.0, 6_000)))
    assert out.global_watermark_ms == 5_000
    rows = await backend.rows()
    if mode == "append":
        assert out.result_rows == 2  # a and b are final now, merged from both partitions
        assert rows == {("a", 0): (2, 3.0), ("b", 0): (1, 5.0)}
    else:
        assert rows == {("a", 0): (2, 3.0), ("b", 0): (1, 5.0), ("c", 0): (2, 5.0)}
    gone = EXPIRED_STATE
    for p in (0, 1):
        loaded = states(await checkpoint.load_partition(p))
        assert loaded[("a", 0)] == gone and loaded[("b", 0)] == gone
        assert loaded[("c", 0)] == ((1, 1.0, 5_000) if p == 0 else (1, 4.0, 6_000))
    # W passes the window's end: c closes (append: written), the tombstones go.
    await checkpoint.commit(ttl_batch(0, 2, 3, 20_000))
    out = await checkpoint.commit(ttl_batch(1, 3, 4, 20_000))
    assert out.global_watermark_ms == 20_000
    assert (await backend.rows())[("c", 0)] == (2, 5.0)
    assert len(await backend.rows()) == 3
    for p in (0, 1):
        assert (await checkpoint.load_partition(p)).partials == ()
    # Every state row is gone, tombstones included.
    assert (await backend.progress())[-1][3] == 0


async def test_a_partial_for_a_tombstoned_key_window_makes_the_batch_stale(
    backend: Backend,
) -> None:
    checkpoint = backend.make(ttl_spec("update"))
    await checkpoint.open()
    await checkpoint.commit(ttl_batch(0, 0, 1, 1_000, part("a", 1, 1.0, 1_000)))
    await checkpoint.commit(ttl_batch(1, 0, 1, 4_000, part("x", 1, 1.0, 4_000)))
    await checkpoint.commit(ttl_batch(0, 1, 2, 4_000, part("x", 1, 1.0, 4_000)))  # W=4000
    assert ("a", 0) in states(await checkpoint.load_partition(1))  # a tombstone, everywhere
    rows_before = await backend.rows()
    # A worker that restored partition 1 before the tombstone folds a record of a into
    # a fresh state: its batch is stale, and nothing of it is written.
    out = await checkpoint.commit(ttl_batch(1, 1, 2, 4_500, part("a", 1, 9.0, 4_500)))
    assert out.stale == (1,)
    assert await backend.rows() == rows_before == {("a", 0): (1, 1.0), ("x", 0): (2, 2.0)}
    assert (await checkpoint.load_partition(1)).next_offset == 1
    assert states(await checkpoint.load_partition(1))[("a", 0)] == ()
    # The replay finds the record late: the batch commits without a partial of a.
    out = await checkpoint.commit(ttl_batch(1, 1, 2, 4_500))
    assert out.stale == ()


async def test_a_worker_owning_every_partition_names_what_it_expired(backend: Backend) -> None:
    checkpoint = backend.make(ttl_spec("append"))
    await checkpoint.open()
    await checkpoint.commit(ttl_batch(0, 0, 1, 1_000, part("a", 1, 1.0, 1_000)))
    await checkpoint.commit(ttl_batch(1, 0, 1, 1_000, part("a", 1, 2.0, 1_000)))
    # The worker's engine merged both partitions and expired (a, [0, W)) at W = 3000;
    # it writes the row itself and the checkpoint replaces both partials by a tombstone.
    local = CommitBatch(
        (span(0, 1, 2, 3_000), span(1, 1, 2, 3_000)),
        {0: (part("b", 1, 1.0, 3_000),), 1: ()},
        {},
        [ResultRow(("a",), 0, W, (2, 3.0))],
        topic_partitions=2,
        closes_locally=True,
        watermark_ms=3_000,
        expired=[(("a",), 0, W)],
    )
    out = await checkpoint.commit(local)
    assert out.stale == () and out.result_rows == 1
    assert await backend.rows() == {("a", 0): (2, 3.0)}
    assert states(await checkpoint.load_partition(0)) == {
        ("a", 0): (),
        ("b", 0): (1, 1.0, 3_000),
    }
    assert states(await checkpoint.load_partition(1)) == {("a", 0): ()}
    assert (await backend.progress())[-1][3] == 2  # b's partial and a's tombstone

"""One contract, two checkpoints: `MemoryCheckpoint` must do what `PostgresCheckpoint` does.

Every case runs against the in-memory checkpoint and against PostgreSQL, so
the fake the component tests rely on cannot drift from the real one.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
import pytest_asyncio

from streamproc.engine import AggSpec, PartialRow, QuerySpec, ResultRow, WindowSpec
from streamproc.sinks.base import Checkpoint, CommitBatch, LateRow, PartitionCommit
from streamproc.sinks.layout import quote_ident, result_layout
from streamproc.sinks.postgres import PostgresCheckpoint
from streamproc.sinks.postgres_table import PostgresTableSink
from streamproc.sinks.rows import datetime_to_ms
from streamproc.testing import MemoryCheckpoint, MemoryDatabase, MemoryTableSink

AGGS = (AggSpec("n", None, "count"), AggSpec("total", "v", "sum"))
W = 10_000  # window size and slide (ms)


def spec(mode: str) -> QuerySpec:
    return QuerySpec(
        group_by=("k",),
        aggregations=AGGS,
        output_mode=mode,  # type: ignore[arg-type]
        event_time_column="t",
        delay_ms=0,
        window=WindowSpec(W, W),
    )


@dataclass
class Backend:
    """A checkpoint factory and readers of what it wrote."""

    make: Callable[[QuerySpec], Checkpoint]
    rows: Callable[[], Awaitable[dict[tuple[Any, ...], tuple[Any, ...]]]]
    late: Callable[[], Awaitable[set[tuple[int, int]]]]


@pytest_asyncio.fixture(params=["memory", "postgres"])
async def backend(request: pytest.FixtureRequest, unique_name: str) -> AsyncIterator[Backend]:
    table, late_table = unique_name, f"{unique_name}_late"
    if request.param == "memory":
        db = MemoryDatabase()

        def make_memory(s: QuerySpec) -> Checkpoint:
            sink = MemoryTableSink(db, table)
            return MemoryCheckpoint(
                db, query=table, topic="t", spec=s, sink=sink, late_table=late_table
            )

        async def memory_rows() -> dict[tuple[Any, ...], tuple[Any, ...]]:
            return {(*r.key, r.window_start_ms): r.values for r in db.table_rows(table)}

        async def memory_late() -> set[tuple[int, int]]:
            return {(p, o) for (_t, p, o) in db.late_tables.get(late_table, {})}

        yield Backend(make_memory, memory_rows, memory_late)
        return
    import asyncpg

    dsn = request.getfixturevalue("pg_dsn")  # starts the local PostgreSQL once per session
    pg = await asyncpg.connect(dsn)
    opened: list[Checkpoint] = []

    def make_pg(s: QuerySpec) -> Checkpoint:
        sink = PostgresTableSink(result_layout(s, table))
        checkpoint = PostgresCheckpoint(
            dsn, query=table, topic="t", spec=s, sink=sink, late_table=late_table
        )
        opened.append(checkpoint)
        return checkpoint

    async def pg_rows() -> dict[tuple[Any, ...], tuple[Any, ...]]:
        rows = await pg.fetch(f"SELECT * FROM {quote_ident(table)}")
        return {(r["k"], datetime_to_ms(r["window_start"])): (r["n"], r["total"]) for r in rows}

    async def pg_late() -> set[tuple[int, int]]:
        rows = await pg.fetch(
            f"SELECT source_partition, source_offset FROM {quote_ident(late_table)}"
        )
        return {(r[0], r[1]) for r in rows}

    yield Backend(make_pg, pg_rows, pg_late)
    for checkpoint in opened:
        await checkpoint.close()
    await pg.close()


def commit(p: int, start: int, end: int, max_ts: int | None, wm: int | None) -> PartitionCommit:
    n = end - start
    return PartitionCommit(p, start, end, n, n, 0, 0, 0, max_ts, wm)


def partial(key: str, ws: int, n: int, total: float) -> PartialRow:
    # State slots of count(*) + sum(v): [rows, sum]
    return PartialRow((key,), ws, ws + W, (n, total))


def batch(
    partitions: tuple[PartitionCommit, ...],
    partials: dict[int, tuple[PartialRow, ...]],
    *,
    local: list[ResultRow] | None = None,
    evicted: dict[int, tuple[Any, ...]] | None = None,
    late: tuple[LateRow, ...] = (),
) -> CommitBatch:
    return CommitBatch(partitions, partials, evicted or {}, local, late, topic_partitions=2)


async def test_a_new_partition_has_no_checkpoint(backend: Backend) -> None:
    checkpoint = backend.make(spec("update"))
    await checkpoint.open()
    loaded = await checkpoint.load_partition(0)
    assert (loaded.next_offset, loaded.max_event_ts_ms, loaded.partials) == (None, None, ())
    assert await checkpoint.watermarks() == {}


async def test_a_commit_is_what_a_restore_reads_back(backend: Backend) -> None:
    checkpoint = backend.make(spec("update"))
    await checkpoint.open()
    outcome = await checkpoint.commit(
        batch((commit(0, 0, 5, 15_000, 15_000),), {0: (partial("a", 10_000, 5, 2.5),)})
    )
    assert outcome.stale == () and outcome.result_rows == 1
    loaded = await checkpoint.load_partition(0)
    assert loaded.next_offset == 5 and loaded.max_event_ts_ms == 15_000
    assert [
        (p.key, p.window_start_ms, p.window_end_ms, tuple(p.state)) for p in loaded.partials
    ] == [(("a",), 10_000, 20_000, (5, 2.5))]
    assert await checkpoint.watermarks() == {0: 15_000}
    assert await backend.rows() == {("a", 10_000): (5, 2.5)}


async def test_a_batch_not_starting_at_the_ledger_is_stale_and_writes_nothing(
    backend: Backend,
) -> None:
    checkpoint = backend.make(spec("update"))
    await checkpoint.open()
    await checkpoint.commit(batch((commit(0, 0, 5, 1, 1),), {0: (partial("a", 0, 5, 1.0),)}))
    outcome = await checkpoint.commit(
        batch((commit(0, 3, 9, 2, 2),), {0: (partial("a", 0, 9, 9.0),)})
    )
    assert outcome.stale == (0,)
    assert (await checkpoint.load_partition(0)).next_offset == 5
    assert await backend.rows() == {("a", 0): (5, 1.0)}


async def test_rows_merge_the_partials_of_every_partition(backend: Backend) -> None:
    checkpoint = backend.make(spec("update"))
    await checkpoint.open()
    await checkpoint.commit(batch((commit(0, 0, 2, 1, 1),), {0: (partial("a", 0, 2, 1.5),)}))
    await checkpoint.commit(batch((commit(1, 0, 3, 1, 1),), {1: (partial("a", 0, 3, 2.0),)}))
    assert await backend.rows() == {("a", 0): (5, 3.5)}


async def test_append_writes_a_window_once_when_w_passes_its_end(backend: Backend) -> None:
    checkpoint = backend.make(spec("append"))
    await checkpoint.open()
    await checkpoint.commit(
        batch((commit(0, 0, 2, 5_000, 5_000),), {0: (partial("a", 0, 2, 1.0),)})
    )
    # Partition 1 has no ledger row yet: it holds W back.
    assert await backend.rows() == {}
    outcome = await checkpoint.commit(
        batch(
            (commit(1, 0, 1, 12_000, 12_000),),
            {1: (partial("a", 0, 1, 4.0), partial("b", 10_000, 1, 1.0))},
        )
    )
    assert outcome.global_watermark_ms == 5_000 and await backend.rows() == {}
    outcome = await checkpoint.commit(batch((commit(0, 2, 3, 11_000, 11_000),), {}))
    assert outcome.global_watermark_ms == 11_000 and outcome.closed_windows == 1
    assert await backend.rows() == {("a", 0): (3, 5.0)}
    loaded = [await checkpoint.load_partition(p) for p in (0, 1)]
    assert [len(x.partials) for x in loaded] == [0, 1]  # window 0 closed and gone


async def test_update_evicts_partials_of_closed_windows_and_evicted_keys(backend: Backend) -> None:
    checkpoint = backend.make(spec("update"))
    await checkpoint.open()
    await checkpoint.commit(
        batch(
            (commit(0, 0, 2, 1, 1),), {0: (partial("a", 0, 1, 1.0), partial("b", 10_000, 1, 1.0))}
        )
    )
    await checkpoint.commit(
        batch((commit(1, 0, 1, 25_000, 25_000),), {1: (partial("c", 20_000, 1, 1.0),)})
    )
    outcome = await checkpoint.commit(batch((commit(0, 2, 3, 21_000, 21_000),), {}))
    assert outcome.global_watermark_ms == 21_000
    assert [len((await checkpoint.load_partition(p)).partials) for p in (0, 1)] == [0, 1]
    assert await backend.rows() == {
        ("a", 0): (1, 1.0),
        ("b", 10_000): (1, 1.0),
        ("c", 20_000): (1, 1.0),
    }


async def test_late_rows_are_kept_once_per_source_position(backend: Backend) -> None:
    checkpoint = backend.make(spec("update"))
    await checkpoint.open()
    late = LateRow(0, 3, 1, 2, "event time older than watermark", {"k": "a"})
    await checkpoint.commit(batch((commit(0, 0, 4, 9, 9),), {}, late=(late,)))
    await checkpoint.commit(batch((commit(0, 4, 5, 9, 9),), {}, late=(late,)))
    assert await backend.late() == {(0, 3)}

"""One contract, two checkpoints: `MemoryCheckpoint` must do what `PostgresCheckpoint` does.

Every case runs against the in-memory checkpoint and against PostgreSQL, so
the fake the component tests rely on cannot drift from the real one.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any

import pytest
import pytest_asyncio

from streamproc.engine import AggSpec, PartialRow, QuerySpec, ResultRow, WindowSpec
from streamproc.sinks.base import (
    Checkpoint,
    CheckpointConflictError,
    CommitBatch,
    CommitOutcome,
    DeadLetterRow,
    LateRow,
    PartitionCommit,
    ProgressNote,
    QueryIdentity,
    Watermarks,
    batch_id,
)
from streamproc.sinks.definition import query_definition
from streamproc.sinks.layout import quote_ident, result_layout
from streamproc.sinks.postgres import PostgresCheckpoint
from streamproc.sinks.postgres_table import PostgresTableSink
from streamproc.sinks.progress_rows import PROGRESS_KEEP, ProgressRow
from streamproc.sinks.rows import datetime_to_ms, decode_key, decode_state, ms_to_datetime
from streamproc.testing import MemoryCheckpoint, MemoryDatabase, MemoryTableSink, typed_key

AGGS = (AggSpec("n", None, "count"), AggSpec("total", "v", "sum"))
#: Round trips of the statement-by-statement commits of the round-trip test: BEGIN,
#: the closing lock shared, positions (lock, read), W and incarnation, states (COPY,
#: upsert, truncate), rows (the same), ledger, positions, the watermarks, W kept by
#: the worker that closes, the progress lock, seq and row, COMMIT. Claimed rows, one
#: of them in the table: the claim (COPY, insert, truncate), the existing row's states
#: (COPY, read, truncate) and its merge (COPY, upsert, truncate) for the rows' step,
#: and a closing (W moved) its try-lock, W and the closed states.
ROUND_TRIPS_ALONE = 21
ROUND_TRIPS_CLAIMED = 31
ROUND_TRIPS_NEW = 20  # the claim of new rows only: no states read, no merge
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


def identity(query: str, s: QuerySpec, table: str, topic: str = "t") -> QueryIdentity:
    definition = query_definition(s, topic=topic, sink={"table": table})
    return QueryIdentity(query, topic, definition, table)


@dataclass
class Backend:
    """A checkpoint factory and readers of what it wrote.

    make(spec, query=None, table=None, topic="t"): the default query and table
    are the test's; other names make a second query (or a second table).
    """

    make: Callable[..., Checkpoint]
    rows: Callable[[], Awaitable[dict[tuple[Any, ...], tuple[Any, ...]]]]
    late: Callable[[], Awaitable[set[tuple[int, int]]]]
    #: The dead-letter table: {(partition, offset): (key, value, reason, error, batch id)}.
    dead_letters: Callable[[], Awaitable[dict[tuple[int, int], tuple[Any, ...]]]]
    #: Tampering as a user with SQL could: drop a partition's last ledger row,
    #: put a row in the result table.
    drop_last_ledger_row: Callable[[int], Awaitable[None]]
    put_row: Callable[[str, int], Awaitable[None]]
    #: The query's progress rows, oldest first, as `progress_view` has them.
    progress: Callable[[], Awaitable[list[tuple[Any, ...]]]]
    #: Delete the query's progress rows (a checkpoint older than the table).
    forget_progress: Callable[[], Awaitable[None]]
    #: Drop the query's checkpoint as a reset would, whoever runs it (a reset that
    #: could not see the worker's claim: by hand, or an older streamproc).
    drop_checkpoint: Callable[[], Awaitable[None]]
    #: The fixture's parameter: memory, postgres or postgres-statements.
    kind: str = ""
    #: The result table keyed by (k, window start, window end) (session windows).
    bounded_rows: Callable[[], Awaitable[dict[tuple[Any, ...], tuple[Any, ...]]]] | None = None
    #: Every result row's values, sorted: rows whose keys Python holds equal (1, true)
    #: stay apart.
    values: Callable[[], Awaitable[list[tuple[Any, ...]]]] | None = None


def progress_view(row: ProgressRow | Any, total: int) -> tuple[Any, ...]:
    """(input rows, aggregated, states updated, states total, (min, max, W), spans, batch,
    breaker, retries) of a progress row: a `ProgressRow` or a table row."""
    if isinstance(row, ProgressRow):
        times = (row.min_event_ts_ms, row.max_event_ts_ms, row.watermark_ms)
        spans = [(s["partition"], s["startOffset"], s["endOffset"]) for s in row.sources]
        return (
            row.input_rows,
            row.aggregated,
            row.state_rows_updated,
            total,
            times,
            spans,
            row.batch_number,
            row.breaker_state,
            row.retries,
        )
    times = tuple(
        None if row[c] is None else datetime_to_ms(row[c])
        for c in ("min_event_time", "max_event_time", "watermark")
    )
    spans = [(s["partition"], s["startOffset"], s["endOffset"]) for s in json.loads(row["sources"])]
    return (
        row["input_rows"],
        row["aggregated"],
        row["state_rows_updated"],
        total,
        times,
        spans,
        row["batch_id"],
        row["breaker"],
        row["retries"],
    )


#: "postgres" commits through the query's commit function where a plan allows it,
#: "postgres-statements" statement by statement: both are held to the same outcomes.
@pytest_asyncio.fixture(params=["memory", "postgres", "postgres-statements"])
async def backend(request: pytest.FixtureRequest, unique_name: str) -> AsyncIterator[Backend]:
    table, late_table, dlq_table = unique_name, f"{unique_name}_late", f"{unique_name}_dlq"
    if request.param == "memory":
        db = MemoryDatabase()

        def make_memory(
            s: QuerySpec,
            query: str | None = None,
            to: str | None = None,
            topic: str = "t",
            progress_keep: int = PROGRESS_KEEP,
        ) -> Checkpoint:
            sink = MemoryTableSink(db, to or table)
            who = identity(query or table, s, to or table, topic)
            return staging(
                MemoryCheckpoint(
                    db,
                    identity=who,
                    spec=s,
                    sink=sink,
                    late_table=late_table,
                    dlq_table=dlq_table,
                    progress_keep=progress_keep,
                )
            )

        async def memory_rows() -> dict[tuple[Any, ...], tuple[Any, ...]]:
            return {(*r.key, r.window_start_ms): r.values for r in db.table_rows(table)}

        async def memory_values() -> list[tuple[Any, ...]]:
            return sorted(tuple(r.values) for r in db.table_rows(table))

        async def memory_bounded() -> dict[tuple[Any, ...], tuple[Any, ...]]:
            return {
                (*r.key, r.window_start_ms, r.window_end_ms): r.values for r in db.table_rows(table)
            }

        async def memory_late() -> set[tuple[int, int]]:
            return {(p, o) for (_q, _t, p, o) in db.late_tables.get(late_table, {})}

        async def memory_dead_letters() -> dict[tuple[int, int], tuple[Any, ...]]:
            return {
                (p, o): (d.row.key, d.row.value, d.row.reason, d.row.error, d.batch_id)
                for (_q, _t, p, o), d in db.dead_letter_tables.get(dlq_table, {}).items()
            }

        async def memory_drop_last(partition: int) -> None:
            db.ledger[(table, "t", partition)].pop()

        async def memory_put(key: str, ws: int) -> None:
            row = ResultRow((key,), ws, ws + W, (1, 1.0))
            db.tables[table][(typed_key(row.key), ws, ws + W)] = row

        async def memory_progress() -> list[tuple[Any, ...]]:
            return [progress_view(row, total) for row, total in db.progress.get(table, [])]

        async def memory_forget() -> None:
            db.progress.pop(table, None)

        async def memory_drop_checkpoint() -> None:
            db.reset(table, force=True)

        yield Backend(
            make_memory,
            memory_rows,
            memory_late,
            memory_dead_letters,
            memory_drop_last,
            memory_put,
            memory_progress,
            memory_forget,
            memory_drop_checkpoint,
            kind="memory",
            bounded_rows=memory_bounded,
            values=memory_values,
        )
        return
    import asyncpg

    dsn = request.getfixturevalue("pg_dsn")  # starts the local PostgreSQL once per session
    pg = await asyncpg.connect(dsn)
    opened: list[Checkpoint] = []

    def make_pg(
        s: QuerySpec,
        query: str | None = None,
        to: str | None = None,
        topic: str = "t",
        progress_keep: int = PROGRESS_KEEP,
    ) -> Checkpoint:
        sink = PostgresTableSink(result_layout(s, to or table))
        who = identity(query or table, s, to or table, topic)
        checkpoint = PostgresCheckpoint(
            dsn,
            identity=who,
            spec=s,
            sink=sink,
            late_table=late_table,
            dlq_table=dlq_table,
            progress_keep=progress_keep,
            one_round_trip=request.param == "postgres",
        )
        opened.append(checkpoint)
        return staging(checkpoint)

    async def pg_rows() -> dict[tuple[Any, ...], tuple[Any, ...]]:
        rows = await pg.fetch(f"SELECT * FROM {quote_ident(table)}")
        return {(r["k"], datetime_to_ms(r["window_start"])): (r["n"], r["total"]) for r in rows}

    async def pg_values() -> list[tuple[Any, ...]]:
        rows = await pg.fetch(f"SELECT n, total FROM {quote_ident(table)}")
        return sorted((r["n"], r["total"]) for r in rows)

    async def pg_bounded() -> dict[tuple[Any, ...], tuple[Any, ...]]:
        rows = await pg.fetch(f"SELECT * FROM {quote_ident(table)}")
        return {
            (r["k"], datetime_to_ms(r["window_start"]), datetime_to_ms(r["window_end"])): (
                r["n"],
                r["total"],
            )
            for r in rows
        }

    async def pg_late() -> set[tuple[int, int]]:
        rows = await pg.fetch(
            f"SELECT source_partition, source_offset FROM {quote_ident(late_table)}"
        )
        return {(r[0], r[1]) for r in rows}

    async def pg_dead_letters() -> dict[tuple[int, int], tuple[Any, ...]]:
        rows = await pg.fetch(
            f"""SELECT source_partition, source_offset, record_key, record_value, reason, error,
                       batch_id FROM {quote_ident(dlq_table)}"""
        )
        return {(r[0], r[1]): tuple(r)[2:] for r in rows}

    async def pg_drop_last(partition: int) -> None:
        await pg.execute(
            """DELETE FROM streamproc_ledger WHERE query = $1 AND partition = $2
               AND start_offset = (SELECT max(start_offset) FROM streamproc_ledger
                                   WHERE query = $1 AND partition = $2)""",
            table,
            partition,
        )

    async def pg_put(key: str, ws: int) -> None:
        await pg.execute(
            f"""INSERT INTO {quote_ident(table)} (k, group_key_types, window_start, window_end, n,
                total) VALUES ($1, 's', $2, $3, 1, 1.0)""",
            key,
            ms_to_datetime(ws),
            ms_to_datetime(ws + W),
        )

    async def pg_progress() -> list[tuple[Any, ...]]:
        rows = await pg.fetch(
            "SELECT * FROM streamproc_progress WHERE query = $1 ORDER BY seq", table
        )
        return [progress_view(r, r["state_rows_total"]) for r in rows]

    async def pg_forget() -> None:
        await pg.execute("DELETE FROM streamproc_progress WHERE query = $1", table)

    async def pg_drop_checkpoint() -> None:
        for t in ("queries", "positions", "ledger", "state", "progress"):
            await pg.execute(f"DELETE FROM streamproc_{t} WHERE query = $1", table)

    yield Backend(
        make_pg,
        pg_rows,
        pg_late,
        pg_dead_letters,
        pg_drop_last,
        pg_put,
        pg_progress,
        pg_forget,
        pg_drop_checkpoint,
        kind=request.param,
        bounded_rows=pg_bounded,
        values=pg_values,
    )
    for checkpoint in opened:
        await checkpoint.close()
    await pg.close()


def staging(checkpoint: Checkpoint) -> Checkpoint:
    """Commits go through `stage` first, as the runtime's do."""
    unstaged = checkpoint.commit

    async def commit_staged(batch: CommitBatch, *, dry_run: bool = False) -> CommitOutcome:
        return await unstaged(checkpoint.stage(batch), dry_run=dry_run)

    checkpoint.commit = commit_staged  # type: ignore[method-assign]
    return checkpoint


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
    dead: tuple[DeadLetterRow, ...] = (),
) -> CommitBatch:
    return CommitBatch(
        partitions, partials, evicted or {}, local, late, dead_letter_rows=dead, topic_partitions=2
    )


async def test_a_new_partition_has_no_checkpoint(backend: Backend) -> None:
    checkpoint = backend.make(spec("update"))
    await checkpoint.open()
    loaded = await checkpoint.load_partition(0)
    assert (loaded.next_offset, loaded.max_event_ts_ms, loaded.partials) == (None, None, ())
    assert await checkpoint.watermarks() == Watermarks({}, None)
    assert await checkpoint.committed_offsets() == {}


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
    marks = await checkpoint.watermarks()
    assert dict(marks.partitions) == {0: 15_000} and marks.global_ms is None  # 1 of 2 known
    assert await checkpoint.committed_offsets() == {0: 5}
    assert await backend.rows() == {("a", 10_000): (5, 2.5)}


async def test_rows_of_keys_python_holds_equal_are_merged_apart_from_every_partition(
    backend: Backend,
) -> None:
    # Two workers' batches each touch keys 1 and true in one window: the checkpoint
    # merges each key's row from every partition's states. 1 == True in Python: a set
    # of touched keys would keep one of them, and the other's row would miss a partition.
    checkpoint = backend.make(spec("update"))
    await checkpoint.open()
    for p, (one, true) in enumerate([(1.0, 2.0), (4.0, 8.0)]):
        partials = {p: (PartialRow((1,), 0, W, (1, one)), PartialRow((True,), 0, W, (1, true)))}
        await checkpoint.commit(batch((commit(p, 0, 2, 1, 1),), partials))
    assert backend.values is not None
    assert await backend.values() == [(2, 5.0), (2, 10.0)]


async def test_a_commit_counts_its_round_trips_to_postgresql(backend: Backend) -> None:
    checkpoint = backend.make(spec("update"))
    await checkpoint.open()
    # A worker that owns every partition merged its rows itself (no basis moved).
    local = [ResultRow(("a",), 0, W, (2, 1.5))]
    alone = replace(
        batch((commit(0, 0, 2, 1, 1),), {0: (partial("a", 0, 2, 1.5),)}, local=local),
        basis={0: None, 1: None},
        closes_locally=True,
    )
    merged_alone = await checkpoint.commit(alone)
    # One of several workers claims its rows: ("b", 0) is new, ("a", 0) is in the table
    # and is merged again from every partition's states.
    own = [ResultRow(("a",), 0, W, (3, 2.0)), ResultRow(("b",), 0, W, (1, 1.0))]
    partials = {1: (partial("a", 0, 3, 2.0), partial("b", 0, 1, 1.0))}
    shared = await checkpoint.commit(
        replace(batch((commit(1, 0, 4, 1, 1),), partials), own_rows=own)
    )
    assert await backend.rows() == {("a", 0): (5, 3.5), ("b", 0): (1, 1.0)}
    # A claim of new rows only.
    own = [ResultRow(("c",), 0, W, (1, 1.0))]
    partials = {1: (partial("c", 0, 1, 1.0),)}
    new = await checkpoint.commit(replace(batch((commit(1, 4, 5, 1, 1),), partials), own_rows=own))
    assert (await backend.rows())[("c", 0)] == (1, 1.0)
    # Nothing is counted in memory. Through the commit function: one call; a claim
    # that found a row: BEGIN, the call, the states' read (COPY 2, read, truncate), the
    # second call, COMMIT; one that found none: BEGIN, the call, COMMIT.
    want = {
        "memory": (0, 0, 0),
        "postgres": (1, 8, 3),
        "postgres-statements": (ROUND_TRIPS_ALONE, ROUND_TRIPS_CLAIMED, ROUND_TRIPS_NEW),
    }
    assert (merged_alone.round_trips, shared.round_trips, new.round_trips) == want[backend.kind]


async def test_a_batch_not_starting_at_the_ledger_is_stale_and_writes_nothing(
    backend: Backend,
) -> None:
    checkpoint = backend.make(spec("update"))
    await checkpoint.open()
    await checkpoint.commit(batch((commit(0, 0, 5, 1, 1),), {0: (partial("a", 0, 5, 1.0),)}))
    before = (await checkpoint.load_partition(0)).partials
    outcome = await checkpoint.commit(
        batch((commit(0, 3, 9, 2, 2),), {0: (partial("a", 0, 9, 9.0),)})
    )
    assert outcome.stale == (0,)
    loaded = await checkpoint.load_partition(0)
    # Nothing of the stale batch stays, its partial states included (PostgreSQL
    # writes them before taking the lock, then rolls them back).
    assert loaded.next_offset == 5 and loaded.partials == before
    assert await backend.rows() == {("a", 0): (5, 1.0)}


async def test_rows_merged_locally_are_stale_when_a_partition_the_batch_lacks_moved(
    backend: Backend,
) -> None:
    # A worker owning both partitions merged ("a", 0) from its view of partition 1
    # (no position yet) and sends a batch of partition 0 only. Partition 1 was
    # committed meanwhile by another worker: the local row lacks its contribution.
    checkpoint = backend.make(spec("update"))
    await checkpoint.open()
    await checkpoint.commit(batch((commit(1, 0, 3, 1, 1),), {1: (partial("a", 0, 3, 2.0),)}))
    local = [ResultRow(("a",), 0, W, (2, 1.5))]
    stale = replace(
        batch((commit(0, 0, 2, 1, 1),), {0: (partial("a", 0, 2, 1.5),)}, local=local),
        basis={0: None, 1: None},
    )
    outcome = await checkpoint.commit(stale)
    assert outcome.stale == (1,)
    assert (await checkpoint.load_partition(0)).next_offset is None
    assert await backend.rows() == {("a", 0): (3, 2.0)}
    # Merged from what is committed (partition 1 at offset 3) it lands.
    local = [ResultRow(("a",), 0, W, (5, 3.5))]
    fresh = replace(stale, local_rows=local, basis={0: None, 1: 3})
    assert (await checkpoint.commit(fresh)).stale == ()
    assert await backend.rows() == {("a", 0): (5, 3.5)}


async def test_a_commit_on_a_checkpoint_dropped_under_the_worker_is_refused(
    backend: Backend,
) -> None:
    checkpoint = backend.make(spec("update"))
    await checkpoint.open()
    await checkpoint.commit(batch((commit(0, 0, 2, 1, 1),), {0: (partial("a", 0, 2, 1.5),)}))
    await backend.drop_checkpoint()
    with pytest.raises(CheckpointConflictError, match="was reset while this worker ran"):
        await checkpoint.commit(batch((commit(0, 0, 2, 1, 1),), {0: (partial("a", 0, 2, 1.5),)}))
    assert (await checkpoint.load_partition(0)).next_offset is None  # nothing written
    # Another worker registering it again makes a new checkpoint: still not this worker's.
    other = backend.make(spec("update"))
    await other.open()
    with pytest.raises(CheckpointConflictError, match="was reset while this worker ran"):
        await checkpoint.commit(batch((commit(0, 0, 2, 1, 1),), {0: (partial("a", 0, 2, 1.5),)}))
    await other.close()


async def test_a_worker_with_another_definition_is_refused_while_one_runs_the_query(
    backend: Backend,
) -> None:
    first = backend.make(spec("update"))
    await first.open()
    second = backend.make(spec("append"))
    with pytest.raises(CheckpointConflictError, match="runs it with another definition"):
        await second.open()
    await second.close()
    await first.close()
    # Once nobody runs it, a query that committed nothing takes the new definition.
    third = backend.make(spec("append"))
    await third.open()
    outcome = await third.commit(
        batch((commit(0, 0, 2, 5_000, 5_000),), {0: (partial("a", 0, 2, 1.0),)})
    )
    assert outcome.stale == ()


async def test_rows_merge_the_partials_of_every_partition(backend: Backend) -> None:
    checkpoint = backend.make(spec("update"))
    await checkpoint.open()
    await checkpoint.commit(batch((commit(0, 0, 2, 1, 1),), {0: (partial("a", 0, 2, 1.5),)}))
    await checkpoint.commit(batch((commit(1, 0, 3, 1, 1),), {1: (partial("a", 0, 3, 2.0),)}))
    assert await backend.rows() == {("a", 0): (5, 3.5)}


async def test_a_null_group_value_and_an_empty_string_are_two_rows_each_claimed(
    backend: Backend,
) -> None:
    # Claimed rows are matched on their key: a null and "" must not be taken for one
    # another (the table's key tells them apart by group_key_types).
    checkpoint = backend.make(spec("update"))
    await checkpoint.open()
    first = {0: (PartialRow((None,), 0, W, (2, 1.5)),)}
    own = [ResultRow((None,), 0, W, (2, 1.5))]  # the worker's merge of its partitions
    await checkpoint.commit(replace(batch((commit(0, 0, 2, 1, 1),), first), own_rows=own))
    # The null row exists (merged again from both partitions); the "" row is new.
    second = {1: (PartialRow((None,), 0, W, (3, 2.0)), PartialRow(("",), 0, W, (4, 0.5)))}
    own = [ResultRow((None,), 0, W, (3, 2.0)), ResultRow(("",), 0, W, (4, 0.5))]
    await checkpoint.commit(replace(batch((commit(1, 0, 7, 1, 1),), second), own_rows=own))
    assert await backend.rows() == {(None, 0): (5, 3.5), ("", 0): (4, 0.5)}


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


async def test_dead_letters_commit_with_their_batch_once_per_source_position(
    backend: Backend, unique_name: str
) -> None:
    checkpoint = backend.make(spec("update"))
    await checkpoint.open()
    bad = DeadLetterRow(0, 1, b"k", b"\xff not json", "not UTF-8")
    refused = DeadLetterRow(1, 7, None, b'{"k": "a\\u0000"}', "rejected by the sink: NUL", "NUL")
    first = batch((commit(0, 0, 4, 9, 9), commit(1, 7, 8, 9, 9)), {}, dead=(bad, refused))
    await checkpoint.commit(first)
    # A replay of the same span is stale: nothing of it is written, no dead letter doubled.
    assert (await checkpoint.commit(first)).stale == (0, 1)
    # A later batch naming a position already there leaves the first row as it was.
    again = DeadLetterRow(0, 1, b"k", b"other", "another reason")
    await checkpoint.commit(batch((commit(0, 4, 5, 9, 9),), {}, dead=(again,)))
    # A dry run writes nothing.
    late_one = DeadLetterRow(0, 5, None, b"x", "not JSON")
    await checkpoint.commit(batch((commit(0, 5, 6, 9, 9),), {}, dead=(late_one,)), dry_run=True)
    assert await backend.dead_letters() == {
        (0, 1): (b"k", b"\xff not json", "not UTF-8", None, batch_id(unique_name, "t", 0, 0, 4)),
        (1, 7): (
            None,
            b'{"k": "a\\u0000"}',
            "rejected by the sink: NUL",
            "NUL",
            batch_id(unique_name, "t", 1, 7, 8),
        ),
    }


async def test_a_changed_definition_is_refused_once_the_query_committed(backend: Backend) -> None:
    first = backend.make(spec("update"))
    await first.open()
    await first.close()
    sliding = QuerySpec(
        group_by=("k",),
        aggregations=AGGS,
        output_mode="update",
        event_time_column="t",
        delay_ms=0,
        window=WindowSpec(2 * W, W),
    )
    # Nothing committed yet and no worker on it: the new definition replaces the old
    # without a word (with a worker on it, see the test after the next).
    second = backend.make(sliding)
    await second.open()
    await second.commit(batch((commit(0, 0, 1, 1, 1),), {}))
    with pytest.raises(
        CheckpointConflictError, match=r"window changed from .* to .*streamproc reset"
    ):
        await backend.make(spec("update")).open()
    other_topic = backend.make(sliding, topic="elsewhere")
    with pytest.raises(CheckpointConflictError, match=r"source topic changed from t to elsewhere"):
        await other_topic.open()


async def test_a_result_table_belongs_to_one_query(backend: Backend) -> None:
    await backend.make(spec("update")).open()
    intruder = backend.make(spec("update"), query="intruder")
    with pytest.raises(CheckpointConflictError, match=r"table .* belongs to query "):
        await intruder.open()


async def test_a_deleted_ledger_row_is_found_at_restore(backend: Backend) -> None:
    checkpoint = backend.make(spec("update"))
    await checkpoint.open()
    await checkpoint.commit(batch((commit(0, 0, 2, 1, 1),), {0: (partial("a", 0, 2, 1.0),)}))
    await checkpoint.commit(batch((commit(0, 2, 5, 1, 1),), {0: (partial("a", 0, 5, 3.0),)}))
    await backend.drop_last_ledger_row(0)
    with pytest.raises(CheckpointConflictError, match=r"ledger ends at offset 2 but its position"):
        await checkpoint.load_partition(0)


async def test_w_never_goes_back_when_a_partition_joins(backend: Backend) -> None:
    checkpoint = backend.make(spec("update"))
    await checkpoint.open()
    await checkpoint.commit(batch((commit(0, 0, 1, 30_000, 30_000),), {}))
    outcome = await checkpoint.commit(batch((commit(1, 0, 1, 20_000, 20_000),), {}))
    assert outcome.global_watermark_ms == 20_000
    # A third partition appears, with no data: W stays where it was.
    three = CommitBatch((commit(0, 1, 2, 40_000, 40_000),), {}, {}, None, (), topic_partitions=3)
    assert (await checkpoint.commit(three)).global_watermark_ms == 20_000
    assert (await checkpoint.watermarks()).global_ms == 20_000


async def test_append_refuses_to_close_a_window_someone_else_wrote(backend: Backend) -> None:
    checkpoint = backend.make(spec("append"))
    await checkpoint.open()
    await checkpoint.commit(
        batch((commit(0, 0, 1, 5_000, 5_000),), {0: (partial("a", 0, 1, 1.0),)})
    )
    await backend.put_row("a", 0)
    closing = batch((commit(1, 0, 1, 12_000, 12_000), commit(0, 1, 2, 12_000, 12_000)), {})
    with pytest.raises(CheckpointConflictError, match=r"1 closing window row\(s\) were already"):
        await checkpoint.commit(closing)
    assert await checkpoint.committed_offsets() == {0: 1}  # nothing of it was written


async def test_workers_of_a_bounded_run_share_its_ends(backend: Backend) -> None:
    a, b, c = (backend.make(spec("update")) for _ in range(3))
    for checkpoint in (a, b, c):
        await checkpoint.open()

    async def ends(n: int) -> dict[int, int]:
        return {0: n, 1: n}

    run = await a.begin_run("availablenow", lambda: ends(10))
    assert (run.run_id, dict(run.ends), run.joined) == (1, {0: 10, 1: 10}, False)
    joined = await b.begin_run("availablenow", lambda: ends(99))
    assert (joined.run_id, dict(joined.ends), joined.joined) == (1, {0: 10, 1: 10}, True)
    await a.finish_run(run)
    await b.close()
    # Every member left: the next bounded run takes new ends.
    again = await c.begin_run("availablenow", lambda: ends(20))
    assert (again.run_id, dict(again.ends), again.joined) == (2, {0: 20, 1: 20}, False)


def test_staging_encodes_states_and_rows_and_leaves_unstorable_keys_to_the_commit() -> None:
    s = spec("update")
    sink = PostgresTableSink(result_layout(s, "t"))
    who = identity("q", s, "t", "t")
    checkpoint = PostgresCheckpoint("postgresql://unused/x", identity=who, spec=s, sink=sink)
    rows = [ResultRow(("a",), 0, W, (5, 1.0))]
    staged = checkpoint.stage(
        batch((commit(0, 0, 5, 1, 1),), {0: (partial("a", 0, 5, 1.0),)}, local=rows)
    ).staged
    assert staged is not None
    assert staged.rows == sink.encode(rows)
    assert [
        (p, decode_key(k), ws, we, decode_state(st), touched)
        for p, k, ws, we, st, touched in staged.states
    ] == [(0, ("a",), 0, W, (5, 1.0), None)]
    # A key PostgreSQL text cannot hold: the commit refuses it (a refusal the
    # failure policy isolates), so staging leaves the batch as it was.
    bad = batch((commit(0, 0, 1, 1, 1),), {0: (partial("a\x00b", 0, 1, 1.0),)})
    assert checkpoint.stage(bad).staged is None


async def test_each_commit_writes_a_progress_row_with_the_state_rows_total(
    backend: Backend,
) -> None:
    # update mode, windows of 10 s, two partitions:
    #   c1  p0 0-2   new a@0, b@10s                        total 2
    #   c2  p1 0-1   new c@20s                             total 3
    #   c2' p0 2-5   stale (starts at 2? no: at 4): nothing, no row
    #   c3  p0 2-3   a@0 updated; W=21s drops a@0, b@10s   total 1
    checkpoint = backend.make(spec("update"))
    await checkpoint.open()
    note = ProgressNote("pipe", 7, "host:1", 12.5, {"fetch": 3.0}, "half_open", 2, 1)
    first = batch(
        (PartitionCommit(0, 0, 2, 2, 2, 0, 0, 0, 9_000, 9_000, min_event_ts_ms=1_000),),
        {0: (partial("a", 0, 1, 1.0), partial("b", 10_000, 1, 1.0))},
    )
    outcomes = [await checkpoint.commit(replace(first, progress=note))]
    outcomes.append(
        await checkpoint.commit(
            batch((commit(1, 0, 1, 25_000, 25_000),), {1: (partial("c", 20_000, 1, 1.0),)})
        )
    )
    stale = await checkpoint.commit(batch((commit(0, 4, 5, 1, 1),), {}))
    assert stale.stale == (0,) and stale.state_rows_total is None
    outcomes.append(
        await checkpoint.commit(
            batch((commit(0, 2, 3, 21_000, 21_000),), {0: (partial("a", 0, 2, 3.0),)})
        )
    )
    assert [o.state_rows_total for o in outcomes] == [2, 3, 1]
    stored = [await checkpoint.load_partition(p) for p in (0, 1)]
    assert sum(len(p.partials) for p in stored) == 1
    assert await backend.progress() == [
        (2, 2, 2, 2, (1_000, 9_000, None), [(0, 0, 2)], 7, "half_open", 1),
        (1, 1, 1, 3, (None, 25_000, 9_000), [(1, 0, 1)], None, "closed", 0),
        (1, 1, 1, 1, (None, 21_000, 21_000), [(0, 2, 3)], None, "closed", 0),
    ]


async def test_evicted_states_leave_the_total_and_a_query_without_rows_counts_once(
    backend: Backend,
) -> None:
    checkpoint = backend.make(spec("update"))
    await checkpoint.open()
    await checkpoint.commit(
        batch((commit(0, 0, 2, 1, 1),), {0: (partial("a", 0, 1, 1.0), partial("b", 0, 1, 1.0))})
    )
    # A checkpoint from before the progress table: no row to carry the total on.
    await backend.forget_progress()
    outcome = await checkpoint.commit(
        batch((commit(0, 2, 3, 1, 1),), {0: (partial("c", 0, 1, 1.0),)})
    )
    assert outcome.state_rows_total == 3
    outcome = await checkpoint.commit(
        batch((commit(0, 3, 4, 1, 1),), {}, evicted={0: ((("a",), 0, W), (("zz",), 0, W))})
    )
    assert outcome.state_rows_total == 2  # "zz" was never stored
    assert [row[3] for row in await backend.progress()] == [3, 2]


async def test_the_progress_table_keeps_the_newest_rows_of_a_query(backend: Backend) -> None:
    checkpoint = backend.make(spec("update"), progress_keep=3)
    await checkpoint.open()
    for start in range(5):
        await checkpoint.commit(batch((commit(0, start, start + 1, 1, 1),), {}))
    assert [row[5] for row in await backend.progress()] == [
        [(0, 2, 3)],
        [(0, 3, 4)],
        [(0, 4, 5)],
    ]

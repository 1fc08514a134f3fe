"""Session windows, committed by a worker that owns every partition: the same contract
on both checkpoints (memory, PostgreSQL by statements), held to the reference model.

Timelines use gap 10 (a record at t stands for [t, t + 10)) and delay 3 (a
partition's watermark is its highest event time - 3; W the least of them).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from streamproc.commands.reset_tables import reset_query
from streamproc.engine import PartialRow, QuerySpec
from streamproc.sinks.base import CheckpointError, CommitBatch, PartitionCommit
from streamproc.sinks.layout import quote_ident, result_layout
from streamproc.sinks.postgres import PostgresCheckpoint
from streamproc.sinks.postgres_sessions import (
    read_sessions_sql,
    session_index_name,
)
from streamproc.sinks.postgres_table import PostgresTableSink
from streamproc.sinks.rows import datetime_to_ms
from streamproc.sinks.session_commit import SessionCommit
from tests.component.sessions_driver import SessionWorker, random_streams, run_with_restarts
from tests.component.sessions_driver import session_spec as spec
from tests.component.test_checkpoint_contract import Backend, identity
from tests.component.test_checkpoint_contract import backend as backend
from tests.reference import assert_tables_equal
from tests.reference_sessions import assert_no_overlap


async def rows(backend: Backend) -> dict[tuple[Any, ...], tuple[Any, ...]]:
    assert backend.bounded_rows is not None
    return await backend.bounded_rows()


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
    await run_with_restarts(worker, seed=seed)
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
    # A worker that closes its own sessions commits in one call of the commit function.
    trips = {o.round_trips for o in worker.outcomes if not o.stale}
    assert trips == {"memory": {0}, "postgres": {1}}.get(backend.kind, trips)
    if backend.kind == "postgres-statements":
        assert min(trips) > 1


@pytest.mark.parametrize("mode", ["update", "complete", "append"])
@pytest.mark.parametrize("seed", [4, 5, 6])
async def test_sessions_merged_across_workers_equal_the_reference_row_by_row(
    backend: Backend, mode: str, seed: int
) -> None:
    # Four partitions, keys on every one, over two workers (0, 1 and 2, 3): neither
    # merges a session; the checkpoint chains every partition's state rows, and closes
    # by W over all of them. Kills before commits and restarts of either worker.
    s = spec(mode)
    streams = random_streams(seed, 4, 20)
    first = SessionWorker(s, backend.make(s), streams, owned=[0, 1])
    second = SessionWorker(s, backend.make(s), streams, owned=[2, 3], log=first.log)
    second.late = first.late
    for w in (first, second):
        await w.checkpoint.open()
    await run_with_restarts(first, second, seed=seed)
    table = await rows(backend)
    ref = first.reference()
    assert_tables_equal(table, ref.table)
    assert len(table) == len(ref.table) > 0
    assert first.late == ref.late_reasons
    if mode != "append":
        assert_no_overlap(table)


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


async def test_moved_sessions_of_null_empty_and_other_keys_each_delete_only_their_own_row(
    backend: Backend,
) -> None:
    # Group values null, "" and "a" each start a session at 20, then move its start to
    # 19: each old row is deleted (a null matched apart from the index's equalities),
    # none of another key's.
    s = spec("update")
    keys: list[Any] = [None, "", "a"]
    streams = {0: [{"t": t, "k": k, "v": 1} for t in (20, 19) for k in keys]}
    worker = SessionWorker(s, backend.make(s), streams)
    await worker.checkpoint.open()
    await worker.step({0: len(keys)})
    assert await rows(backend) == {(k, 20, 30): (1, 1) for k in keys}
    await worker.step({0: len(keys)})
    assert await rows(backend) == {(k, 19, 30): (2, 2) for k in keys}


async def test_merged_sessions_of_keys_python_holds_equal_move_apart_over_two_workers(
    backend: Backend,
) -> None:
    #   p0 (worker A): 1@20  true@20         -> [20,30) for each key
    #   p1 (worker B): true@19  1@25         -> true [19,30), 1 [20,35): both rows move
    # 1 and true are one key to Python (1 == True): the rows before the batch must be
    # told apart by their stored encoding, or one of the moved rows stays behind.
    s = spec("update")
    streams = {0: [{"t": 20, "k": 1, "v": 1}, {"t": 20, "k": True, "v": 2}]}
    streams[1] = [{"t": 19, "k": True, "v": 4}, {"t": 25, "k": 1, "v": 8}]
    a = SessionWorker(s, backend.make(s), streams, owned=[0])
    b = SessionWorker(s, backend.make(s), streams, owned=[1], log=a.log)
    for w in (a, b):
        await w.checkpoint.open()
    await a.step({0: 2})
    await b.step({1: 2})
    table = await rows(backend)
    got = sorted((type(k).__name__, str(k), st, e, v) for (k, st, e), v in table.items())
    kinds = {"memory": ("bool", "True", "int", "1")}.get(backend.kind, ("str", "true", "str", "1"))
    assert got == sorted(
        [(kinds[0], kinds[1], 19, 30, (2, 6)), (kinds[2], kinds[3], 20, 35, (2, 9))]
    ), got


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


async def test_a_session_batch_without_its_sessions_part_is_refused(backend: Backend) -> None:
    # A batch built as for fixed windows (no deleted rows, no closed sessions) would
    # leave rows of moved sessions behind: refused, nothing written.
    s = spec("update")
    worker = SessionWorker(s, backend.make(s), {0: [{"t": 0, "k": "a", "v": 1}], 1: []})
    await worker.checkpoint.open()
    plain = worker.checkpoint.commit

    async def commit_plain(batch: Any, *, dry_run: bool = False) -> Any:
        return await plain(replace(batch, sessions=None), dry_run=dry_run)

    worker.checkpoint.commit = commit_plain  # type: ignore[method-assign]
    with pytest.raises(CheckpointError, match="without its sessions part"):
        await worker.step({0: 1})
    assert await rows(backend) == {}
    assert (await worker.checkpoint.load_partition(0)).next_offset is None


@pytest.mark.parametrize("mode", ["update", "complete", "append"])
async def test_a_batch_reopening_a_session_closed_over_every_partition_is_stale(
    backend: Backend, mode: str
) -> None:
    #   p0 (worker A): a@0              z@30     W = min(27, 17) = 17: a [0,10) closed
    #   p1 (worker B):        z@20               and kept as a fence
    #   then B, not knowing the fence, commits a partial a [5,15): it would reopen the
    #   closed session, so the batch is stale (replayed, its record is late); complete
    #   mode keeps the session in state and fences it all the same
    s = spec(mode)
    streams = {0: [{"t": 0, "k": "a", "v": 1}, {"t": 30, "k": "z", "v": 1}]}
    streams[1] = [{"t": 20, "k": "z", "v": 1}]
    a = SessionWorker(s, backend.make(s), streams, owned=[0])
    b = SessionWorker(s, backend.make(s), streams, owned=[1], log=a.log)
    for w in (a, b):
        await w.checkpoint.open()
    await a.step({0: 1})
    await b.step({1: 1})
    outcome = await a.step({0: 1})
    assert outcome is not None and outcome.global_watermark_ms == 17
    assert outcome.closed_windows == 1
    before = await rows(backend)
    if mode == "append":
        assert before == {("a", 0, 10): (1, 1)}
    else:
        assert before == {("a", 0, 10): (1, 1), ("z", 20, 30): (1, 1), ("z", 30, 40): (1, 1)}
    assert (await b.checkpoint.load_partition(1)).fences == ((("a",), 0, 10),)
    reopening = CommitBatch(
        (PartitionCommit(1, 1, 2, 1, 1, 0, 0, 0, 20, 17),),
        {1: (PartialRow(("a",), 5, 15, (1, 1)),)},
        {},
        None,
        topic_partitions=2,
        sessions=SessionCommit(),
    )
    outcome = await b.checkpoint.commit(reopening)
    assert outcome.stale == (1,)
    assert await rows(backend) == before
    assert (await b.checkpoint.load_partition(1)).next_offset == 1


async def test_a_record_behind_w_within_the_gap_of_a_session_closed_elsewhere_is_late(
    backend: Backend,
) -> None:
    # idleTimeout: a partition without a position does not hold W back.
    #   p0 (worker A): a@0  z@25         delay 8: W = 17, a's [0,10) closed and fenced
    #   p1 (worker B):           a@9     new, not late by its own watermark; within the
    #                                    gap of the closed [0,10): B did not know the
    #                                    fence, its batch is stale; restored with the
    #                                    fences, the replay finds a@9 late
    s = spec("update", delay_ms=8, idle_timeout_ms=3_600_000)
    streams = {0: [{"t": 0, "k": "a", "v": 1}, {"t": 25, "k": "z", "v": 1}]}
    streams[1] = [{"t": 9, "k": "a", "v": 4}]
    a = SessionWorker(s, backend.make(s), streams, owned=[0])
    b = SessionWorker(s, backend.make(s), streams, owned=[1], log=a.log)
    b.late = a.late
    for w in (a, b):
        await w.checkpoint.open()
    await b.restore()  # before the session closes: B knows no fence
    await a.step({0: 2})
    assert (await b.checkpoint.watermarks()).global_ms == 17
    assert await rows(backend) == {("a", 0, 10): (1, 1), ("z", 25, 35): (1, 1)}
    await b.step({1: 1}, stale=True)
    assert await rows(backend) == {("a", 0, 10): (1, 1), ("z", 25, 35): (1, 1)}
    await b.restore()
    await b.step({1: 1})
    assert b.late == {(1, 0): "session closed"}
    assert await rows(backend) == {("a", 0, 10): (1, 1), ("z", 25, 35): (1, 1)}
    assert await backend.late() == {(1, 0)}


async def test_a_dead_letters_batch_commits_its_position_and_w_waits_for_the_next(
    backend: Backend,
) -> None:
    # The failure policy commits a refused record alone: a position, no state, no
    # sessions part. It closes nothing; the next batch moves W and closes.
    s = spec("append")
    streams = {0: [{"t": 0, "k": "a", "v": 1}, {"t": 30, "k": "x"}, {"t": 31, "k": "z", "v": 1}]}
    worker = SessionWorker(s, backend.make(s), streams)
    await worker.checkpoint.open()
    await worker.step({0: 1})
    dead_letter = CommitBatch((PartitionCommit(0, 1, 2, 1, 0, 0, 1, 0, 30, 27),), {}, {}, ())
    outcome = await worker.checkpoint.commit(dead_letter)
    assert not outcome.stale and outcome.global_watermark_ms == -3
    assert await rows(backend) == {}
    await worker.restore()  # as the runtime's engine: past the dead letter
    outcome = await worker.step({0: 1})
    assert outcome is not None and outcome.global_watermark_ms == 28
    assert outcome.closed_windows == 1
    assert await rows(backend) == {("a", 0, 10): (1, 1)}


async def test_merges_over_several_workers_read_state_rows_through_the_query_s_own_index(
    pg: Any, pg_dsn: str, unique_name: str
) -> None:
    # With partitions on several workers the checkpoint reads the touched keys' state
    # rows (every partition's): the query's partial index, made before its first such
    # merge (not before: one worker holding every partition never needs it), serves
    # it (usable: its predicate names the query), not a scan of every row of the query.
    s = spec("update")
    streams = {0: [{"t": 0, "k": "a", "v": 1}], 1: [{"t": 5, "k": "a", "v": 2}]}
    alone = SessionWorker(s, statements(pg_dsn, unique_name, s), streams)
    a = SessionWorker(s, statements(pg_dsn, unique_name, s), streams, owned=[0])
    by_key = session_index_name(unique_name)
    try:
        await alone.checkpoint.open()
        await alone.step({0: 1})
        assert await pg.fetchval("SELECT to_regclass($1)", by_key) is None
        await a.checkpoint.open()
        await a.restore()
        await a.step({0: 0})
        assert await pg.fetchval("SELECT to_regclass($1)", by_key) is not None
    finally:
        for w in (alone, a):
            await w.checkpoint.close()
    # A query with many state rows (20,000: keys over four partitions and many starts),
    # as the planner sees it once analyzed.
    await pg.execute(
        """INSERT INTO streamproc_state (query, partition, key, window_start_ms,
                                          window_end_ms, state)
            SELECT $1, i % 4, ('k' || (i % 5000))::bytea, 1000 + i, 2000 + i, ''::bytea
            FROM generate_series(1, 20000) AS i""",
        unique_name,
    )
    await pg.execute("ANALYZE streamproc_state")
    async with pg.transaction():
        await pg.execute("SET LOCAL enable_seqscan = off")
        lines = await pg.fetch(f"EXPLAIN {read_sessions_sql(unique_name)}", [b"k"])
    plan = "\n".join(r[0] for r in lines)
    assert by_key in plan, plan
    # A reset drops it with the query's state rows.
    await reset_query(pg, unique_name)
    assert await pg.fetchval("SELECT to_regclass($1)", by_key) is None


def statements(dsn: str, name: str, s: QuerySpec) -> PostgresCheckpoint:
    """A PostgreSQL checkpoint of the query `name` writing the table `name`."""
    sink = PostgresTableSink(result_layout(s, name))
    return PostgresCheckpoint(dsn, identity=identity(name, s, name), spec=s, sink=sink)


async def test_a_user_who_cannot_index_the_state_table_runs_session_queries_without_the_index(
    pg: Any, pg_dsn: str, unique_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Tables made by someone else: this user may read and write them, not index them.
    # The session query runs (merges read the query's state rows whole) and says so.
    s = spec("update")
    first = statements(pg_dsn, f"{unique_name}_a", s)
    await first.open()  # the checkpoint's tables exist
    await first.close()
    other = f"{unique_name}_b"
    await PostgresTableSink(result_layout(s, other)).prepare(pg)
    role = f"{unique_name}_rw"
    await pg.execute(f'CREATE ROLE "{role}" LOGIN')
    await pg.execute(
        f'GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO "{role}"'
    )
    limited = pg_dsn.replace("postgresql://postgres@", f"postgresql://{role}@")
    streams = {0: [{"t": 0, "k": "a", "v": 1}], 1: [{"t": 5, "k": "a", "v": 2}]}
    a = SessionWorker(s, statements(limited, other, s), streams, owned=[0])
    b = SessionWorker(s, statements(limited, other, s), streams, owned=[1], log=a.log)
    try:
        for w in (a, b):
            await w.checkpoint.open()
        await a.step({0: 1})
        await b.step({1: 1})
    finally:
        for w in (a, b):
            await w.checkpoint.close()
    rows = await pg.fetch(f"SELECT k, window_start, window_end FROM {quote_ident(other)}")
    assert [(r[0], datetime_to_ms(r[1]), datetime_to_ms(r[2])) for r in rows] == [("a", 0, 15)]
    assert await pg.fetchval("SELECT to_regclass($1)", session_index_name(other)) is None
    warned = [r.getMessage() for r in caplog.records if "cannot index" in r.getMessage()]
    assert warned and warned[0].startswith(
        f"query {other}: cannot index its session state rows (must be owner of table "
        "streamproc_state); it runs without the index"
    ), warned

"""A commit plan executed in PostgreSQL, with no query-wide lock on the hot path.

Workers of one query serialise only on what they truly share. Locks are taken in one
order, so that no two transactions wait for each other in a circle:

    1. closing lock, shared   the query's closing key: batches share it, closing takes
                              it alone; `reset` and a bounded run's start take it
                              alone too (between two commits)
    2. positions, FOR UPDATE  the carried partitions' rows (every partition's, when
                              the batch's rows were merged locally: its basis), in
                              partition order; a partition's first commit inserts its
                              row first. A zombie's batch waits here, then is stale.
    3. result rows            rows merged from a worker's own partitions are claimed:
                              new ones inserted with that merge (nobody else has
                              contributed to them), existing ones locked and merged
                              again from every partition's states (`claim_rows`)
    4. closing, exclusive     when W can advance: upgraded in place if no other batch
                              is in flight, else a short transaction of its own after
                              the commit (`close_pending`)
    5. progress lock          the query's progress key, for the progress row (its
                              seq and state total carry on from the previous one),
                              held until COMMIT: the only step every commit takes
                              alone, and the shortest

A worker that owns every partition merges and closes windows itself: it takes no
row locks (3) and upgrades (4) in every commit.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Any

from streamproc.engine import QuerySpec, ResultRow
from streamproc.sinks.base import (
    CheckpointConflictError,
    CommitBatch,
    CommitOutcome,
    ResultSink,
    batch_ids,
    reset_under_worker,
)
from streamproc.sinks.commit_checks import behind_watermark, check_local_watermark, stale_partitions
from streamproc.sinks.commit_plan import CommitPlan, RowsStep
from streamproc.sinks.layout import (
    LEDGER_TABLE,
    POSITIONS_TABLE,
    QUERIES_TABLE,
    STAGE_STATES,
    quote_ident,
)
from streamproc.sinks.postgres_closing import (
    Closer,
    StateTally,
    advance_watermark,
    candidate_watermark,
    close,
)
from streamproc.sinks.postgres_dlq import insert_dead_letters
from streamproc.sinks.postgres_expiry import hits_tombstone
from streamproc.sinks.postgres_ledger import (
    insert_late_rows,
    insert_ledger_rows,
    upsert_positions,
)
from streamproc.sinks.postgres_progress import LAST_PROGRESS_SQL, insert_progress
from streamproc.sinks.postgres_sessions import (
    close_sessions,
    merge_touched,
    read_before,
    replace_rows,
)
from streamproc.sinks.postgres_state import (
    apply_states,
    delete_states,
    merge_rows,
    stage_states,
    states_of,
    window_keys,
)
from streamproc.sinks.progress_rows import progress_row
from streamproc.timing import PhaseTimes

_LEDGER = quote_ident(LEDGER_TABLE)
_POSITIONS = quote_ident(POSITIONS_TABLE)
_QUERIES = quote_ident(QUERIES_TABLE)


@dataclass(frozen=True, slots=True)
class QueryCommits:
    """What the executor knows of its query, fixed when the checkpoint is made."""

    query: str
    topic: str
    spec: QuerySpec
    sink: ResultSink
    late_table: str | None
    dlq_table: str | None
    expires_windows: bool
    progress_keep: int

    @property
    def closing_key(self) -> str:
        """Batches hold it shared, closing (and reset, a run's start) exclusively."""
        return f"streamproc:{self.query}"

    @property
    def progress_key(self) -> str:
        """Held from a commit's progress row to its COMMIT."""
        return f"streamproc:progress:{self.query}"

    @property
    def merge_key(self) -> str:
        """Serialises merges into a sink that cannot lock its rows (a Kafka topic)."""
        return f"streamproc:merge:{self.query}"


@dataclass(slots=True)
class Executed:
    """A batch's outcome, whether a closing step must follow its commit, and since when
    (perf_counter) the transaction held something every worker of the query shares."""

    outcome: CommitOutcome
    closing_pending: bool = False
    shared_since: float | None = None


@dataclass(slots=True)
class _Held:
    """When the transaction first took something every worker shares (perf_counter)."""

    since: float | None = None

    def took(self) -> None:
        if self.since is None:
            self.since = time.perf_counter()


async def execute(
    conn: Any,
    q: QueryCommits,
    plan: CommitPlan,
    batch: CommitBatch,
    incarnation: str | None,
    times: PhaseTimes,
    staged: Any = None,
) -> Executed:
    """Run a plan inside the caller's transaction (the caller commits or rolls back).

    Args:
        staged: The batch's encoded states and local rows (`PostgresCheckpoint.stage`).
    """
    held = _Held()
    with times.phase("lock_wait"):
        await conn.execute("SELECT pg_advisory_xact_lock_shared(hashtext($1))", q.closing_key)
    with times.phase("states"):
        stale = await _lock_positions(conn, q, plan)
        stored = await conn.fetchrow(
            f"""SELECT global_watermark_ms, incarnation::text AS incarnation
                FROM {_QUERIES} WHERE query = $1""",
            q.query,
        )
        if stored is None or stored["incarnation"] != incarnation:
            # Reset under this worker: what it restored from is gone; write nothing.
            raise CheckpointConflictError(reset_under_worker(q.query))
        stored_w: int | None = stored["global_watermark_ms"]
        if not stale:
            stale = behind_watermark(batch, stored_w)
        tally = StateTally()
        await stage_states(conn, staged.states if staged is not None else [])
        if q.expires_windows and not stale and await hits_tombstone(conn, q.query):
            stale = (plan.carried and tuple(plan.carried)) or tuple(plan.states)
        if stale:
            await conn.execute(f"TRUNCATE {STAGE_STATES}")
            return Executed(CommitOutcome(stale=tuple(stale)))
    keys: list[bytes] = []
    before = merged = None
    if plan.rows.kind == "sessions":  # merged here: merges of the query take turns
        with times.phase("lock_wait"):
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", q.merge_key)
        held.took()
        with times.phase("states"):
            keys, before = await read_before(conn, q.query, q.spec, plan.rows)
    with times.phase("states"):
        tally.inserted += await apply_states(conn, q.query)
    with times.phase("sink"):
        if before is not None:
            tally.deleted += await delete_states(conn, q.query, plan.evicted)
            merged = await merge_touched(conn, q.query, q.spec, q.sink, keys, before, plan.states)
            if merged is None:  # replayed on the checkpoint's state: late, or merged
                return Executed(CommitOutcome(stale=tuple(plan.carried) or tuple(plan.states)))
        written = await _write_rows(conn, q, plan, plan.rows, staged, held) + (merged or 0)
    with times.phase("ledger"):
        await insert_late_rows(conn, q.query, q.topic, q.late_table, plan.late_rows)
        if plan.dead_letter_rows and q.dlq_table:
            await insert_dead_letters(
                conn,
                q.dlq_table,
                query=q.query,
                topic=q.topic,
                rows=plan.dead_letter_rows,
                batch_of=batch_ids(q.query, q.topic, plan.partitions).__getitem__,
            )
        await insert_ledger_rows(conn, q.query, q.topic, plan.partitions)
        await upsert_positions(conn, q.query, q.topic, plan.partitions)
    pending = False
    closed = 0
    watermark = stored_w
    with times.phase("closing"):
        candidate = await candidate_watermark(
            conn, q.query, plan.topic_partitions, plan.idle_timeout_ms
        )
        advances = candidate is not None and (stored_w is None or candidate > stored_w)
        # A session batch that closes nothing (a dead letter's) leaves W to the next one.
        holds = q.spec.session is not None and plan.closing.kind == "none"
        if (advances or plan.closes_locally) and not holds:
            if await _alone(conn, q, held):
                watermark = await advance_watermark(conn, q.query, candidate, stored_w)
                check_local_watermark(q.query, batch, watermark)
                if (watermark is not None and watermark != stored_w) or plan.closes_locally:
                    encoded = staged.rows if staged is not None and plan.closes_locally else None
                    done, closed = await _close(conn, q, plan, watermark, stored_w, tally, encoded)
                    written += done
            elif plan.closes_locally:
                # Another batch is in flight beside one that merged every partition
                # itself: its basis cannot hold; fetched again, it is replayed.
                return Executed(CommitOutcome(stale=tuple(plan.carried)))
            else:
                pending = q.spec.windowed
        if plan.closing.kind != "append" and before is None:
            # stateTimeout evictions (and update-mode local evictions) drop states
            # that no longer count; closed append windows went with their closing.
            tally.deleted += await delete_states(conn, q.query, plan.evicted)
    total = await _progress(conn, q, batch, written, watermark, tally, times, held)
    outcome = CommitOutcome((), written, closed, watermark, state_rows_total=total)
    return Executed(outcome, pending, held.since)


async def _alone(conn: Any, q: QueryCommits, held: _Held) -> bool:
    """Take the closing lock exclusively, if no other batch of the query is in flight."""
    got: bool = await conn.fetchval("SELECT pg_try_advisory_xact_lock(hashtext($1))", q.closing_key)
    if got:
        held.took()
    return got


async def _close(
    conn: Any,
    q: QueryCommits,
    plan: CommitPlan,
    watermark: int | None,
    stored_w: int | None,
    tally: StateTally,
    encoded: Any,
) -> tuple[int, int]:
    if q.spec.session is not None:
        step = plan.closing
        local = plan.closes_locally
        return await close_sessions(
            conn, q.query, q.spec, q.sink, step, watermark, tally, encoded, local
        )
    if watermark is None or q.spec.window is None:
        return 0, 0
    closer = Closer(q.query, q.spec, q.sink, q.expires_windows, _every_partition(plan))
    return await close(conn, closer, plan.closing, watermark, stored_w, tally, encoded)


async def close_pending(
    conn: Any, q: QueryCommits, plan: CommitPlan, times: PhaseTimes
) -> Executed | None:
    """The closing a batch could not do in place: a short transaction of its own.

    Waits for the batches in flight (they hold the closing lock shared), then moves W
    and closes what it closes. Returns None when another closing already did it.
    """
    held = _Held()
    with times.phase("lock_wait"):
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", q.closing_key)
    held.took()
    with times.phase("closing"):
        stored_w = await conn.fetchval(
            f"SELECT global_watermark_ms FROM {_QUERIES} WHERE query = $1", q.query
        )
        candidate = await candidate_watermark(
            conn, q.query, plan.topic_partitions, plan.idle_timeout_ms
        )
        watermark = await advance_watermark(conn, q.query, candidate, stored_w)
        if watermark is None or watermark == stored_w:
            return None
        tally = StateTally()
        closing = replace(plan, closing=replace(plan.closing, local_rows=None, expiry=_scan(plan)))
        written, closed = await _close(conn, q, closing, watermark, stored_w, tally, None)
    await _take_progress_lock(conn, q, times, held)
    with times.phase("ledger"):
        # The state total carries on from the newest progress row: it takes this delta.
        await conn.execute(
            """UPDATE streamproc_progress SET state_rows_total = state_rows_total + $2
               WHERE query = $1 AND seq = (SELECT max(seq) FROM streamproc_progress
                                           WHERE query = $1)""",
            q.query,
            tally.delta,
        )
    return Executed(CommitOutcome((), written, closed, watermark), False, held.since)


def _scan(plan: CommitPlan) -> Any:
    return "scan" if plan.closing.expiry != "none" else "none"


def _every_partition(plan: CommitPlan) -> list[int]:
    known = [
        plan.topic_partitions,
        1,
        *(p + 1 for p in plan.states),
        *(p + 1 for p in plan.carried),
    ]
    return list(range(max(known)))


async def _lock_positions(conn: Any, q: QueryCommits, plan: CommitPlan) -> tuple[int, ...]:
    """Lock the positions the batch depends on; the partitions that moved (stale).

    A carried partition without a row yet gets one at the batch's start offset first
    (rolled back with the batch if it is stale), so that it is locked like the others.
    """
    carried = sorted(plan.partitions, key=lambda p: p.partition)
    placeholders: set[int] = set()
    if carried:
        rows = await conn.fetch(
            f"""INSERT INTO {_POSITIONS} (query, partition, topic, next_offset, batch_id)
                SELECT $1, p, $2, s, '' FROM unnest($3::int[], $4::bigint[]) AS u(p, s)
                ORDER BY p
                ON CONFLICT (query, partition) DO NOTHING RETURNING partition""",
            q.query,
            q.topic,
            [p.partition for p in carried],
            [p.start_offset for p in carried],
        )
        placeholders = {r["partition"] for r in rows}
    if plan.basis is not None:
        rows = await conn.fetch(
            f"""SELECT partition, next_offset FROM {_POSITIONS} WHERE query = $1
                ORDER BY partition FOR UPDATE""",
            q.query,
        )
    elif carried:
        rows = await conn.fetch(
            f"""SELECT partition, next_offset FROM {_POSITIONS}
                WHERE query = $1 AND partition = ANY($2::int[]) ORDER BY partition FOR UPDATE""",
            q.query,
            [p.partition for p in carried],
        )
    else:
        return ()
    committed = {
        r["partition"]: r["next_offset"] for r in rows if r["partition"] not in placeholders
    }
    batch = CommitBatch(plan.partitions, {}, {}, None, basis=plan.basis)
    return stale_partitions(batch, committed)


async def _write_rows(
    conn: Any,
    q: QueryCommits,
    plan: CommitPlan,
    step: RowsStep,
    staged: Any,
    held: _Held,
) -> int:
    """Step 3 of the plan: the rows a batch writes before closing."""
    encoded = staged.rows if staged is not None else None
    if step.kind in ("none", "sessions"):  # sessions: merged with the states (execute)
        return 0
    if step.kind == "insert":
        # One row per record, keyed by its source position: a position already in
        # the table (a rerun after `reset`) is left as it is.
        return await q.sink.write(conn, step.rows, insert_only=True, encoded=encoded)
    if step.kind == "upsert":
        return await q.sink.write(conn, step.rows, insert_only=False, encoded=encoded)
    if step.kind == "replace":
        return await replace_rows(conn, q.sink, q.query, step.deleted, step.rows, encoded)
    partitions = _every_partition(plan)
    claim = getattr(q.sink, "claim_rows", None)
    if claim is None or plan.own_rows is None:
        # A sink that cannot lock its rows: merges of the query take turns.
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", q.merge_key)
        held.took()
        keys = window_keys(step.touched)
        rows = merge_rows(q.spec, await states_of(conn, q.query, keys, partitions))
        return await q.sink.write(conn, rows, insert_only=False)
    own = plan.own_rows
    existing: list[int] = await claim(conn, own, staged.own_rows if staged is not None else None)
    if not existing:
        return len(own)
    await q.sink.write(conn, await merge_claimed(conn, q, plan, existing), insert_only=False)
    return len(own)


async def merge_claimed(
    conn: Any, q: QueryCommits, plan: CommitPlan, existing: list[int]
) -> list[ResultRow]:
    """The claimed rows that were in the table (their indexes in `plan.own_rows`), merged
    again from every partition's states: other workers may have contributed to them."""
    assert plan.own_rows is not None
    again = [plan.own_rows[i] for i in existing]
    keys = window_keys((r.key, r.window_start_ms) for r in again)
    return merge_rows(q.spec, await states_of(conn, q.query, keys, _every_partition(plan)))


async def _take_progress_lock(conn: Any, q: QueryCommits, times: PhaseTimes, held: _Held) -> None:
    with times.phase("lock_wait"):
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", q.progress_key)
    held.took()


async def _progress(
    conn: Any,
    q: QueryCommits,
    batch: CommitBatch,
    written: int,
    watermark: int | None,
    tally: StateTally,
    times: PhaseTimes,
    held: _Held,
) -> int:
    """The batch's progress row, under the progress lock (held until COMMIT)."""
    await _take_progress_lock(conn, q, times, held)
    with times.phase("ledger"):
        last = await conn.fetchrow(
            f"SELECT last_progress.seq, last_progress.state_rows_total FROM {_QUERIES} q "
            f"{LAST_PROGRESS_SQL} WHERE q.query = $1",
            q.query,
        )
        last_seq = last["seq"] if last is not None else None
        last_total = last["state_rows_total"] if last is not None else None
        row = progress_row(
            q.query,
            q.topic,
            batch,
            sink_rows=written,
            watermark_ms=watermark,
            timings_s=times.seconds,
        )
        total: int = await insert_progress(
            conn,
            q.query,
            row,
            last_seq=last_seq,
            state_total=None if last_total is None else last_total + tally.delta,
            keep=q.progress_keep,
        )
    return total

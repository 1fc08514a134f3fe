"""PostgreSQL as the checkpoint: positions, partial states, ledger, late rows, results.

One `commit()` is one transaction that makes a micro-batch durable, exactly
once (STREAMING.md, "Exactly once"):

    1. states        the partitions' absolute partial states, upserted (before
                     the lock: rows of the worker's own partitions only)
    --               the query's advisory lock, held from here to the commit
    2. stale check   every partition's batch starts at its position's next offset,
                     and (windowed stateTimeout) no partial is of an expired
                     (key, window) (else the transaction is rolled back, states
                     included)
    3. results       rows through the ResultSink: merged locally when this worker
                     owns every partition, else merged from the stored states
                     (a pass-through query: its records, inserted once by position)
    4. side tables   late rows (separatestream), dead letters (dlqType postgresql)
    5. ledger        one history row per partition
    6. positions     each partition's next offset, watermark, last record digest
    7. W             min over the topic's partitions, never below the stored W
    8. closing       append: windows with end <= W written once, states dropped;
                     update: states of closed windows dropped; evicted keys dropped;
                     windowed stateTimeout: idle (key, window)s replaced by
                     tombstones (append: their rows written once), tombstones of
                     closed windows dropped (postgres_expiry.py)
    9. progress      the batch's progress row (with the query's state rows total),
                     the oldest rows past PROGRESS_KEEP pruned: one statement

A batch that does not start at the position is stale (a replay, or a zombie
after a rebalance) and nothing of it is written. On restore, a partition's
position is checked against its ledger chain (`load_partition`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import asyncpg

from streamproc.engine import QuerySpec
from streamproc.engine.aggregates import plan_for
from streamproc.sinks.base import (
    BoundedRun,
    CommitBatch,
    CommitOutcome,
    PartitionCheckpoint,
    QueryIdentity,
    ResultSink,
    Watermarks,
)
from streamproc.sinks.commit_plan import CommitPlan, mode_strategy, plan_commit
from streamproc.sinks.layout import (
    LEDGER_TABLE,
    POSITIONS_TABLE,
    QUERIES_TABLE,
    STATE_TABLE,
    create_late_table_sql,
    create_stage_tables_sql,
    dead_letter_table_sql,
    quote_ident,
)
from streamproc.sinks.postgres_claims import WorkerClaim
from streamproc.sinks.postgres_commit import (
    QueryCommits,
    close_pending,
    execute,
    merge_claimed,
)
from streamproc.sinks.postgres_errors import raises_port_errors
from streamproc.sinks.postgres_expiry import (
    ensure_touched_column,
)
from streamproc.sinks.postgres_fastpath import (
    FastPath,
    Resume,
    existing_rows,
    outcome_of,
    refused_batch,
)
from streamproc.sinks.postgres_registry import (
    committed_offsets,
    ensure_registry_columns,
    ensure_tables,
    privilege_error,
    refuse_vanished_table,
    register_query,
)
from streamproc.sinks.postgres_restore import load_partition
from streamproc.sinks.postgres_runs import RunMembership
from streamproc.sinks.postgres_sessions import ensure_session_index
from streamproc.sinks.postgres_state import state_records
from streamproc.sinks.postgres_table import PostgresTableSink
from streamproc.sinks.progress_rows import PROGRESS_KEEP, progress_row
from streamproc.sinks.round_trips import CountingConnection
from streamproc.timing import PhaseTimes

log = logging.getLogger("streamproc.checkpoint")

# Seconds one statement may take before the server counts as unreachable
# (a sink transaction of a 20,000-record batch takes well under a second).
COMMAND_TIMEOUT_S = 120.0

_LEDGER = quote_ident(LEDGER_TABLE)
_POSITIONS = quote_ident(POSITIONS_TABLE)
_QUERIES = quote_ident(QUERIES_TABLE)
_STATE = quote_ident(STATE_TABLE)


class PostgresCheckpoint:
    """The exactly-once checkpoint of one query in PostgreSQL (a `Checkpoint`)."""

    def __init__(
        self,
        dsn: str,
        *,
        identity: QueryIdentity,
        spec: QuerySpec,
        sink: ResultSink,
        late_table: str | None = None,
        dlq_table: str | None = None,
        progress_keep: int = PROGRESS_KEEP,
        one_round_trip: bool = True,
    ) -> None:
        """Args:
        dsn: the database of the checkpoint (and of a result table).
        identity: the query, its definition and its result table.
        spec: the query's shape.
        sink: where result rows go, written inside each commit's transaction
            (a table of this database, or a topic: then the transaction
            commits only after the rows were delivered, so result messages
            are at-least-once).
        late_table: the separatestream side table, if any.
        dlq_table: the dead-letter table (dlqType postgresql), if any.
        progress_keep: rows of the progress table kept for the query.
        one_round_trip: run the plans it can in one call of the query's commit
            function (`postgres_fastpath`); False runs every plan statement by
            statement (the contract tests hold both to the same outcomes).
        """
        self._dsn = dsn
        self._identity = identity
        self._query = identity.query
        self._topic = identity.topic
        self._spec = spec
        self._sink = sink
        self._late_table = late_table
        self._dlq_table = dlq_table
        self._progress_keep = progress_keep
        self._pool: Any = None
        #: Windowed stateTimeout: partials carry their activity (`touched_ms`),
        #: idle (key, window)s are replaced by tombstones.
        self._expires_windows = spec.window is not None and spec.state_timeout_ms is not None
        self._touch_slot = plan_for(spec).touch_slot if self._expires_windows else None
        self._mode = mode_strategy(spec)
        self._commits = QueryCommits(
            identity.query,
            identity.topic,
            spec,
            sink,
            late_table,
            dlq_table,
            self._expires_windows,
            progress_keep,
        )
        self._fast = (
            FastPath(
                identity.query,
                identity.topic,
                spec,
                sink.layout,
                late_table,
                dlq_table,
                progress_keep,
            )
            if one_round_trip and isinstance(sink, PostgresTableSink)
            else None
        )
        self._run = RunMembership(dsn, identity.query)
        self._claim = WorkerClaim(dsn, identity.query)
        #: The registration this worker restored from (`Registration.incarnation`).
        self._incarnation: str | None = None
        #: Whether this worker made sure of the query's session index (`_index_sessions`).
        self._session_index_checked = False

    # ------------------------------------------------------------- lifecycle
    @raises_port_errors
    async def open(self) -> None:
        """Connect, create missing tables, register the query, check the result table."""
        # min_size=0: while the server is down the pool does not keep trying
        # (and logging) to refill a floor; the query's breaker paces reconnects.
        # command_timeout: a server that stops answering is an outage, not a hang.
        self._pool = await asyncpg.create_pool(
            self._dsn,
            min_size=0,
            max_size=2,
            timeout=10,
            command_timeout=COMMAND_TIMEOUT_S,
            init=self._prepare_connection,
        )
        # Before registering: `reset` and other workers see this worker from here on.
        await self._claim.take()
        try:
            await self._register()
        except BaseException:
            await self._claim.release()  # refused: this worker does not run the query
            raise

    async def _register(self) -> None:
        async with self._pool.acquire() as conn, conn.transaction():
            # Serialise DDL and registration between workers starting together.
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", "streamproc:ddl")
            late, dlq = self._late_table, self._dlq_table
            side = [(late, create_late_table_sql(late))] if late else []
            side += [(dlq, dead_letter_table_sql(dlq))] if dlq else []
            await ensure_tables(conn, side)
            await ensure_touched_column(conn)
            await ensure_registry_columns(conn)
            registration = await register_query(
                conn, self._identity, claim_pid=self._claim.backend_pid
            )
            self._incarnation = registration.incarnation
            await refuse_vanished_table(conn, self._identity)
            await self._sink.prepare(conn)
            if registration.changed_settings:
                offsets = await committed_offsets(conn, self._query)
                log.warning(
                    "query %s: changed since the last run: %s; applies from offsets %s on "
                    "(the records before them were counted under the old settings)",
                    self._query,
                    "; ".join(registration.changed_settings),
                    dict(sorted(offsets.items())),
                )

    async def _prepare_connection(self, conn: Any) -> None:
        """Per connection: the temporary tables batches are copied into (emptied at commit),
        and the query's commit function (`postgres_fastpath`)."""
        await conn.execute(create_stage_tables_sql())
        await self._sink.prepare_connection(conn)
        if self._fast is not None:
            await conn.execute(self._fast.create_sql())

    @raises_port_errors
    async def close(self) -> None:
        """Leave a bounded run, let go of the claim and close the connection pool."""
        await self._run.leave()
        await self._claim.release()
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    # ------------------------------------------------------------- restoring
    @raises_port_errors
    async def load_partition(self, partition: int) -> PartitionCheckpoint:
        """A partition's position and open states, after checking its ledger chain
        (`postgres_restore`)."""
        async with self._pool.acquire() as conn:
            return await load_partition(conn, self._query, self._topic, self._spec, partition)

    @raises_port_errors
    async def watermarks(self) -> Watermarks:
        """The committed watermark of every partition with a position, and W."""
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(
                f"SELECT partition, watermark_ms FROM {_POSITIONS} WHERE query = $1",
                self._query,
            )
            w = await conn.fetchval(
                f"SELECT global_watermark_ms FROM {_QUERIES} WHERE query = $1", self._query
            )
        return Watermarks({r["partition"]: r["watermark_ms"] for r in rows}, w)

    @raises_port_errors
    async def other_workers(self) -> int:
        """How many other workers of the query hold a claim on it now."""
        return await self._claim.others()

    @raises_port_errors
    async def committed_offsets(self) -> dict[int, int]:
        """The next offset of every partition with a position."""
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(
                f"SELECT partition, next_offset FROM {_POSITIONS} WHERE query = $1", self._query
            )
        return {r["partition"]: r["next_offset"] for r in rows}

    # ---------------------------------------------------------- bounded runs
    @raises_port_errors
    async def begin_run(
        self, trigger: str, take_ends: Callable[[], Awaitable[Mapping[int, int]]]
    ) -> BoundedRun:
        """Join the query's bounded run in progress, or begin one."""
        return await self._run.begin(self._pool, trigger, take_ends)

    @raises_port_errors
    async def finish_run(self, run: BoundedRun) -> None:
        """Mark the bounded run done and leave it."""
        await self._run.finish(self._pool, run)

    # ---------------------------------------------------------------- commit
    @raises_port_errors
    async def commit(self, batch: CommitBatch, *, dry_run: bool = False) -> CommitOutcome:
        """Make one micro-batch durable in one transaction, or report it stale.

        The batch's plan (`commit_plan`) runs in one transaction (`postgres_commit`);
        a closing it could not do in place runs in a short one of its own after it.
        With dry_run, everything is done and then rolled back: the outcome (or the
        error) says what the commit would do.
        """
        times = PhaseTimes()
        plan = plan_commit(batch, self._spec, self._mode)
        if plan.rows.kind == "sessions" and not self._session_index_checked:
            await self._index_sessions()
        staged: _Staged | None = batch.staged
        if staged is None:
            staged = self._encode(batch)
        if self._fast is not None and not dry_run and self._fast.applies(plan):
            return await self._commit_fast(self._fast, plan, batch, staged, times)
        lock_s = 0.0
        async with self._pool.acquire() as pooled:
            conn = CountingConnection(pooled)
            transaction = conn.transaction()
            await transaction.start()
            try:
                executed = await execute(
                    conn, self._commits, plan, batch, self._incarnation, times, staged
                )
            except asyncpg.InsufficientPrivilegeError as exc:
                await transaction.rollback()
                raise privilege_error(exc, f"query {self._query}: writing its batch") from None
            except BaseException:
                await transaction.rollback()
                raise
            with times.phase("commit"):
                if dry_run or executed.outcome.stale:
                    await transaction.rollback()
                else:
                    await transaction.commit()
            if executed.shared_since is not None:
                lock_s += time.perf_counter() - executed.shared_since
            outcome = executed.outcome
            if executed.closing_pending and not dry_run:
                closing = await self._close_pending(conn, plan, times)
                if closing is not None:
                    lock_s += closing[1]
                    outcome = _with_closing(outcome, closing[0])
        times.seconds["lock"] += lock_s
        return replace(outcome, timings=dict(times.seconds), round_trips=conn.round_trips)

    async def _index_sessions(self) -> None:
        """Before the first session merge over several workers: the query's index of the
        state table by key, in a short transaction of its own under the DDL lock.

        Made only then: a worker holding every partition never reads state rows by key,
        and each new state row would pay for the index (about 5 us on the sparse
        benchmark, where every record starts a partial session).
        """
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", "streamproc:ddl")
            await ensure_session_index(conn, self._query)
        self._session_index_checked = True

    async def _commit_fast(
        self,
        fast: FastPath,
        plan: CommitPlan,
        batch: CommitBatch,
        staged: _Staged,
        times: PhaseTimes,
    ) -> CommitOutcome:
        """The plan in calls of the query's commit function (`postgres_fastpath`).

        One call, in its own implicit transaction, for a plan the worker merged itself.
        Claimed rows (kind 'merge') run in a transaction of the caller's: the first call
        claims them and, when some were in the table already, stops there; they are
        merged again from every partition's states and a second call writes them and
        does the rest.
        """
        progress = progress_row(
            self._query, self._topic, batch, sink_rows=0, watermark_ms=None, timings_s={}
        )
        claims = plan.rows.kind == "merge"
        lock_s = 0.0
        async with self._pool.acquire() as pooled:
            conn = CountingConnection(pooled)
            transaction = conn.transaction() if claims else None
            with times.phase("transaction"):
                try:
                    if transaction is not None:
                        await transaction.start()
                    record = await self._call(fast, conn, plan, batch, staged, progress)
                    if transaction is not None:
                        await transaction.commit()
                except asyncpg.PostgresError as exc:
                    if transaction is not None:
                        await transaction.rollback()
                    stale = refused_batch(exc, self._query, len(plan.closing.local_rows or ()))
                    return CommitOutcome(
                        stale=stale, timings=dict(times.seconds), round_trips=conn.round_trips
                    )
                except BaseException:
                    if transaction is not None:
                        await transaction.rollback()
                    raise
            outcome, pending = outcome_of(record)
            lock_s += (record["held_ms"] or 0.0) / 1000
            if pending:
                closing = await self._close_pending(conn, plan, times)
                if closing is not None:
                    lock_s += closing[1]
                    outcome = _with_closing(outcome, closing[0])
        times.seconds["lock"] += lock_s
        return replace(outcome, timings=dict(times.seconds), round_trips=conn.round_trips)

    async def _call(
        self,
        fast: FastPath,
        conn: Any,
        plan: CommitPlan,
        batch: CommitBatch,
        staged: _Staged,
        progress: Any,
    ) -> Any:
        """The function's call, and for a claim that found rows in the table, its second."""
        args = fast.arguments(plan, batch, self._incarnation, staged, progress)
        record = await conn.fetchrow(fast.call_sql(), *args)
        if record["existing"] is None:
            return record
        existing = existing_rows(record["existing"], staged.own_rows or (), fast.key_width)
        merged = await merge_claimed(conn, self._commits, plan, existing)
        resume = Resume(
            self._sink.encode(merged) if merged else [],
            record["written"],
            record["inserted_states"] or 0,
        )
        args = fast.arguments(plan, batch, self._incarnation, staged, progress, resume)
        return await conn.fetchrow(fast.call_sql(), *args)

    async def _close_pending(
        self, conn: Any, plan: CommitPlan, times: PhaseTimes
    ) -> tuple[CommitOutcome, float] | None:
        """The closing a batch left for a transaction of its own; (outcome, seconds held)."""
        async with conn.transaction():
            executed = await close_pending(conn, self._commits, plan, times)
            if executed is None:
                return None
        held = 0.0 if executed.shared_since is None else time.perf_counter() - executed.shared_since
        return executed.outcome, held

    def stage(self, batch: CommitBatch) -> CommitBatch:
        """The batch with its state records and rows encoded for COPY.

        Runs on the thread batches are prepared on; the transaction then only
        sends them. A key or value that cannot be stored is left for `commit`,
        which refuses it the way the failure policy expects.
        """
        try:
            staged = self._encode(batch)
        except (ValueError, TypeError, OverflowError):
            return batch
        return replace(batch, staged=staged)

    def _encode(self, batch: CommitBatch) -> _Staged:
        """The COPY records of a batch's states and rows (raises for values that cannot go)."""
        states = state_records(self._sink, batch.partials, self._touch_slot)
        rows = batch.local_rows
        own = batch.own_rows
        return _Staged(
            states,
            self._sink.encode(rows) if rows else None,
            self._sink.encode(own) if own else None,
        )


@dataclass(frozen=True, slots=True)
class _Staged:
    """A batch's COPY records, encoded before its transaction (`PostgresCheckpoint.stage`)."""

    states: list[tuple[Any, ...]]
    rows: Any
    own_rows: Any = None


def _with_closing(outcome: CommitOutcome, closing: CommitOutcome) -> CommitOutcome:
    """A batch's outcome with the closing done after its transaction added."""
    return replace(
        outcome,
        result_rows=outcome.result_rows + closing.result_rows,
        closed_windows=outcome.closed_windows + closing.closed_windows,
        global_watermark_ms=closing.global_watermark_ms,
    )

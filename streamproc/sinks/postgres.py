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
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import asyncpg

from streamproc.engine import PartialRow, QuerySpec, ResultRow, WindowKey, finalize, merge_states
from streamproc.engine.aggregates import plan_for
from streamproc.sinks.base import (
    RESET_HINT,
    BoundedRun,
    CheckpointConflictError,
    ClosingWindowsError,
    CommitBatch,
    CommitOutcome,
    LateRow,
    PartitionCheckpoint,
    PartitionCommit,
    QueryIdentity,
    ResultSink,
    Watermarks,
    batch_id,
    batch_ids,
    behind_watermark,
    check_local_watermark,
    expiry_bounds,
    reset_under_worker,
    stale_partitions,
)
from streamproc.sinks.layout import (
    LEDGER_TABLE,
    POSITIONS_TABLE,
    QUERIES_TABLE,
    STAGE_KEYS,
    STAGE_STATES,
    STATE_TABLE,
    TOMBSTONE_PARTITION,
    create_late_table_sql,
    create_stage_tables_sql,
    dead_letter_table_sql,
    quote_ident,
)
from streamproc.sinks.postgres_claims import WorkerClaim
from streamproc.sinks.postgres_dlq import insert_dead_letters
from streamproc.sinks.postgres_expiry import (
    drop_closed_tombstones,
    ensure_touched_column,
    expire_idle,
    hits_tombstone,
    tombstone,
)
from streamproc.sinks.postgres_progress import LAST_PROGRESS_SQL, insert_progress
from streamproc.sinks.postgres_registry import (
    committed_offsets,
    ensure_registry_columns,
    ensure_tables,
    privilege_error,
    refuse_vanished_table,
    register_query,
)
from streamproc.sinks.postgres_runs import RunMembership
from streamproc.sinks.progress_rows import PROGRESS_KEEP, progress_row
from streamproc.sinks.rows import (
    decode_key,
    decode_state,
    encode_key,
    encode_state,
    ms_to_datetime,
    to_json,
)
from streamproc.timing import PhaseTimes

log = logging.getLogger("streamproc.checkpoint")

# Non-windowed aggregation stores its states with this window, so that one
# primary key serves both shapes.
NO_WINDOW_MS = 0
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
        self._lock_key = f"streamproc:{identity.query}"
        self._run = RunMembership(dsn, identity.query)
        self._claim = WorkerClaim(dsn, identity.query)
        #: The registration this worker restored from (`Registration.incarnation`).
        self._incarnation: str | None = None

    # ------------------------------------------------------------- lifecycle
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
        """Per connection: the temporary tables batches are copied into (emptied at commit)."""
        await conn.execute(create_stage_tables_sql())
        await self._sink.prepare_connection(conn)

    async def close(self) -> None:
        """Leave a bounded run, let go of the claim and close the connection pool."""
        await self._run.leave()
        await self._claim.release()
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    # ------------------------------------------------------------- restoring
    async def load_partition(self, partition: int) -> PartitionCheckpoint:
        """A partition's position and open states, after checking its ledger chain.

        Raises:
            CheckpointConflictError: the ledger and the position disagree (a row
                deleted or added by hand): resuming would apply a batch twice
                or skip one.
        """
        async with self._pool.acquire() as conn:
            position = await conn.fetchrow(
                f"""SELECT next_offset, max_event_time_ms, last_record FROM {_POSITIONS}
                    WHERE query = $1 AND partition = $2""",
                self._query,
                partition,
            )
            chain = await conn.fetchrow(
                f"""SELECT count(*) AS rows,
                           (array_agg(next_offset ORDER BY start_offset DESC))[1] AS last_next,
                           min(start_offset) FILTER (WHERE prev IS DISTINCT FROM start_offset
                                                       AND prev IS NOT NULL) AS break_at
                    FROM (SELECT start_offset, next_offset,
                                 lag(next_offset) OVER (ORDER BY start_offset) AS prev
                          FROM {_LEDGER} WHERE query = $1 AND topic = $2 AND partition = $3) c""",
                self._query,
                self._topic,
                partition,
            )
            # With the partition's partials, the query's tombstones (windowed
            # stateTimeout): an expired (key, window) takes no record of any partition.
            states = await conn.fetch(
                f"""SELECT key, window_start_ms, window_end_ms, state FROM {_STATE}
                    WHERE query = $1 AND partition IN ($2, {TOMBSTONE_PARTITION})""",
                self._query,
                partition,
            )
        self._check_chain(partition, position, chain)
        if position is None:
            return PartitionCheckpoint(partition, None, None, ())
        return PartitionCheckpoint(
            partition,
            position["next_offset"],
            position["max_event_time_ms"],
            tuple(self._partial_from_row(r) for r in states),
            position["last_record"],
        )

    def _check_chain(self, partition: int, position: Any, chain: Any) -> None:
        where = f"query {self._query}, partition {partition} of {self._topic}"
        problem = None
        if position is None and chain["rows"]:
            problem = f"its ledger has {chain['rows']} row(s) but no position"
        elif position is not None and not chain["rows"]:
            problem = f"its position is at offset {position['next_offset']} but its ledger is empty"
        elif chain["break_at"] is not None:
            problem = f"its ledger has a gap or an overlap at offset {chain['break_at']}"
        elif position is not None and chain["last_next"] != position["next_offset"]:
            problem = (
                f"its ledger ends at offset {chain['last_next']} but its position is at "
                f"{position['next_offset']} (a ledger row was deleted or added)"
            )
        if problem is not None:
            raise CheckpointConflictError(
                f"{where}: {problem}; resuming could apply a batch twice or skip one, so "
                f"nothing was processed; restore the rows, or {RESET_HINT}"
            )

    def _partial_from_row(self, r: Any) -> PartialRow:
        windowed = self._spec.window is not None
        return PartialRow(
            decode_key(r["key"]),
            r["window_start_ms"] if windowed else None,
            r["window_end_ms"] if windowed else None,
            decode_state(r["state"]),
        )

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

    async def committed_offsets(self) -> dict[int, int]:
        """The next offset of every partition with a position."""
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(
                f"SELECT partition, next_offset FROM {_POSITIONS} WHERE query = $1", self._query
            )
        return {r["partition"]: r["next_offset"] for r in rows}

    # ---------------------------------------------------------- bounded runs
    async def begin_run(
        self, trigger: str, take_ends: Callable[[], Awaitable[Mapping[int, int]]]
    ) -> BoundedRun:
        """Join the query's bounded run in progress, or begin one."""
        return await self._run.begin(self._pool, trigger, take_ends)

    async def finish_run(self, run: BoundedRun) -> None:
        """Mark the bounded run done and leave it."""
        await self._run.finish(self._pool, run)

    # ---------------------------------------------------------------- commit
    async def commit(self, batch: CommitBatch, *, dry_run: bool = False) -> CommitOutcome:
        """Make one micro-batch durable in one transaction, or report it stale.

        With dry_run, everything is done and then rolled back: the outcome (or
        the error) says what the commit would do.
        """
        times = PhaseTimes()
        async with self._pool.acquire() as conn:
            transaction = conn.transaction()
            await transaction.start()
            try:
                # The batch's own partial states go in before the lock: their
                # rows are keyed by partition, so workers' rows never meet, and
                # nobody sees them before the commit. A zombie's states meet the
                # new owner's at worst (a deadlock PostgreSQL breaks, retried as
                # an outage) and are rolled back when the check finds it stale.
                tally = _StateTally()
                await self._write_states(conn, batch, times, tally)
                with times.phase("lock_wait"):
                    # One query's commits never interleave, so merges from two
                    # workers cannot race and the position check is decisive.
                    await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", self._lock_key)
                locked = time.perf_counter()
                outcome = await self._commit_in(conn, batch, times, tally)
            except BaseException:
                await transaction.rollback()
                raise
            with times.phase("commit"):
                if dry_run or outcome.stale:
                    await transaction.rollback()
                else:
                    await transaction.commit()
            times.seconds["lock"] += time.perf_counter() - locked
        return replace(outcome, timings=dict(times.seconds))

    async def _commit_in(
        self, conn: Any, batch: CommitBatch, times: PhaseTimes, tally: _StateTally
    ) -> CommitOutcome:
        stale = await self._stale_partitions(conn, batch)
        # W and the newest progress row in one round trip (the progress row's
        # seq and state total carry on from it).
        stored = await conn.fetchrow(
            f"""SELECT q.global_watermark_ms, q.incarnation::text AS incarnation,
                       last_progress.seq, last_progress.state_rows_total
                FROM {_QUERIES} q {LAST_PROGRESS_SQL} WHERE q.query = $1""",
            self._query,
        )
        if stored is None or stored["incarnation"] != self._incarnation:
            # Reset (or registered again) under this worker: the checkpoint it restored
            # from is gone, and nothing may be written into the new one.
            raise CheckpointConflictError(reset_under_worker(self._query))
        tally.last_seq, tally.last_total = stored["seq"], stored["state_rows_total"]
        stored_w = stored["global_watermark_ms"]
        if not stale:
            stale = behind_watermark(batch, stored_w)
        if self._expires_windows:
            if not stale and await hits_tombstone(conn, self._query):
                stale = tuple(p.partition for p in batch.partitions) or tuple(batch.partials)
            await conn.execute(f"TRUNCATE {STAGE_STATES}")
        if stale:
            return CommitOutcome(stale=stale)  # nothing written: the caller reloads
        try:
            return await self._write(conn, batch, times, stored_w, tally)
        except asyncpg.InsufficientPrivilegeError as exc:
            raise privilege_error(exc, f"query {self._query}: writing its batch") from None

    def stage(self, batch: CommitBatch) -> CommitBatch:
        """The batch with its state records and local rows encoded for COPY.

        Runs on the thread batches are prepared on; the transaction then only
        sends them. A key or value that cannot be stored is left for `commit`,
        which refuses it the way the failure policy expects.
        """
        try:
            states = self._state_records(batch.partials)
            rows = batch.local_rows
            encoded = self._sink.encode(rows) if rows else None
        except (ValueError, TypeError, OverflowError):
            return batch
        return replace(batch, staged=_Staged(states, encoded))

    async def _write_states(
        self, conn: Any, batch: CommitBatch, times: PhaseTimes, tally: _StateTally
    ) -> None:
        staged: _Staged | None = batch.staged
        try:
            with times.phase("states"):
                states = staged.states if staged else self._state_records(batch.partials)
                tally.inserted += await self._upsert_states(conn, states)
        except asyncpg.InsufficientPrivilegeError as exc:
            raise privilege_error(exc, f"query {self._query}: writing its batch") from None

    async def _write(
        self,
        conn: Any,
        batch: CommitBatch,
        times: PhaseTimes,
        stored_w: int | None,
        tally: _StateTally,
    ) -> CommitOutcome:
        staged: _Staged | None = batch.staged
        written = 0
        mode = self._spec.output_mode
        if self._spec.passthrough:
            with times.phase("sink"):
                # One row per record, keyed by its source position: a position
                # already in the table (a rerun after `reset`) is left as it is.
                written = await self._sink.write(
                    conn,
                    batch.local_rows or (),
                    insert_only=True,
                    encoded=staged.rows if staged else None,
                )
        elif mode != "append":
            with times.phase("sink"):
                encoded = None
                if batch.local_rows is not None:
                    rows = batch.local_rows
                    encoded = staged.rows if staged else None
                else:
                    rows = await self._merge_touched(conn, batch.partials, _partitions(batch))
                written = await self._sink.write(conn, rows, insert_only=False, encoded=encoded)
        with times.phase("ledger"):
            await self._insert_late_rows(conn, batch.late_rows)
            await self._insert_dead_letters(conn, batch)
            await self._insert_ledger_rows(conn, batch.partitions)
            await self._upsert_positions(conn, batch.partitions)
        with times.phase("closing"):
            watermark = await self._global_watermark(conn, batch, stored_w)
            check_local_watermark(self._query, batch, watermark)
            closed = 0
            if self._spec.window is not None and watermark is not None:
                if mode == "append":
                    closed = await self._close_windows(conn, watermark, batch, tally)
                    written += closed
                elif mode == "update":
                    closed = await self._evict_closed(conn, watermark, batch)
                    tally.deleted += closed
                if self._expires_windows:
                    expired_rows = await self._expire(conn, watermark, stored_w, batch, tally)
                    written += expired_rows
                    closed += expired_rows
            if mode != "append":
                # stateTimeout evictions (and update-mode local evictions) drop
                # states that no longer count; closed append windows were
                # already removed by _close_windows.
                tally.deleted += await self._delete_states(conn, batch.evicted)
        with times.phase("ledger"):
            row = progress_row(
                self._query,
                self._topic,
                batch,
                sink_rows=written,
                watermark_ms=watermark,
                timings_s=times.seconds,
            )
            total = await insert_progress(
                conn,
                self._query,
                row,
                last_seq=tally.last_seq,
                state_total=tally.carried(),
                keep=self._progress_keep,
            )
        return CommitOutcome((), written, closed, watermark, state_rows_total=total)

    async def _stale_partitions(self, conn: Any, batch: CommitBatch) -> tuple[int, ...]:
        """The partitions whose position is not where the batch assumed (`stale_partitions`).

        A batch with a basis is checked against every partition's position, under the
        lock: what it merged locally must still be what is committed.
        """
        if batch.basis is None and not batch.partitions:
            return ()
        rows = await conn.fetch(
            f"""SELECT partition, next_offset FROM {_POSITIONS}
                WHERE query = $1 AND ($2::int[] IS NULL OR partition = ANY($2::int[]))""",
            self._query,
            None if batch.basis is not None else [p.partition for p in batch.partitions],
        )
        return stale_partitions(batch, {r["partition"]: r["next_offset"] for r in rows})

    def _state_records(self, partials: Mapping[int, Sequence[PartialRow]]) -> list[tuple[Any, ...]]:
        """The staging records of partial states; refuses keys the sink cannot hold."""
        self._sink.check_keys(row.key for rows in partials.values() for row in rows)
        touch = self._touch_slot
        return [
            (
                partition,
                encode_key(row.key),
                NO_WINDOW_MS if row.window_start_ms is None else row.window_start_ms,
                NO_WINDOW_MS if row.window_end_ms is None else row.window_end_ms,
                encode_state(row.state),
                None if touch is None else row.state[touch],
            )
            for partition, rows in partials.items()
            for row in rows
        ]

    async def _upsert_states(self, conn: Any, records: Sequence[tuple[Any, ...]]) -> int:
        """Upsert partial states; returns how many were new rows (not updates)."""
        if not records:
            return 0
        # Rows go in by binary COPY (encoded in C: a fraction of the client's
        # time of bind arrays) to a temporary table, then one upsert. A row
        # the upsert inserted has no xmax yet; one it updated has this
        # transaction's: so the same statement counts the new states.
        await conn.copy_records_to_table(STAGE_STATES, records=records)
        inserted: int = await conn.fetchval(
            f"""WITH upserted AS (
                  INSERT INTO {_STATE}
                    (query, partition, key, window_start_ms, window_end_ms, state, touched_ms)
                  SELECT $1, partition, key, window_start_ms, window_end_ms, state, touched_ms
                  FROM {STAGE_STATES}
                  ON CONFLICT (query, partition, window_start_ms, key)
                  DO UPDATE SET state = EXCLUDED.state, touched_ms = EXCLUDED.touched_ms
                  RETURNING xmax = 0 AS inserted)
                SELECT count(*) FILTER (WHERE inserted) FROM upserted""",
            self._query,
        )
        if not self._expires_windows:
            # (With a windowed stateTimeout they stay until the tombstone check.)
            await conn.execute(f"TRUNCATE {STAGE_STATES}")
        return inserted

    async def _delete_states(self, conn: Any, evicted: Mapping[int, Sequence[WindowKey]]) -> int:
        """Delete evicted states; returns how many rows went."""
        records = [
            (partition, encode_key(key), NO_WINDOW_MS if start is None else start)
            for partition, window_keys in evicted.items()
            for key, start, _end in window_keys
        ]
        if not records:
            return 0
        await conn.copy_records_to_table(STAGE_KEYS, records=records)
        status: str = await conn.execute(
            f"""DELETE FROM {_STATE} s USING {STAGE_KEYS} d
                WHERE s.query = $1 AND s.partition = d.partition AND s.key = d.key
                  AND s.window_start_ms = d.window_start_ms""",
            self._query,
        )
        await conn.execute(f"TRUNCATE {STAGE_KEYS}")
        return int(status.split()[-1])

    async def _merge_touched(
        self, conn: Any, partials: Mapping[int, Sequence[PartialRow]], partitions: list[int]
    ) -> list[ResultRow]:
        touched = {
            (encode_key(r.key), NO_WINDOW_MS if r.window_start_ms is None else r.window_start_ms)
            for rows in partials.values()
            for r in rows
        }
        if not touched:
            return []
        await conn.copy_records_to_table(
            STAGE_KEYS, records=[(0, key, start) for key, start in touched]
        )
        # Every partition of each touched (key, window): one index lookup each.
        rows = await conn.fetch(
            f"""SELECT s.key, s.window_start_ms, s.window_end_ms, s.state
                FROM {STAGE_KEYS} t CROSS JOIN unnest($2::int[]) AS p(partition)
                JOIN {_STATE} s ON s.query = $1 AND s.partition = p.partition
                  AND s.window_start_ms = t.window_start_ms AND s.key = t.key
                ORDER BY s.partition""",
            self._query,
            partitions,
        )
        await conn.execute(f"TRUNCATE {STAGE_KEYS}")
        return self._merge_rows(rows)

    def _merge_rows(self, rows: Iterable[Any]) -> list[ResultRow]:
        """Merge states of the same (key, window), in the order given (partition order)."""
        grouped: dict[tuple[bytes, int, int], list[Sequence[Any]]] = defaultdict(list)
        for r in rows:
            grouped[(r["key"], r["window_start_ms"], r["window_end_ms"])].append(
                decode_state(r["state"])
            )
        windowed = self._spec.window is not None
        merged: list[ResultRow] = []
        for (key, start, end), states in grouped.items():
            values = finalize(self._spec, merge_states(self._spec, states))
            merged.append(
                ResultRow(
                    decode_key(key),
                    start if windowed else None,
                    end if windowed else None,
                    values,
                )
            )
        return merged

    async def _insert_late_rows(self, conn: Any, late_rows: Sequence[LateRow]) -> None:
        if not late_rows or not self._late_table:
            return
        await conn.executemany(
            f"""INSERT INTO {quote_ident(self._late_table)}
                  (query, source_topic, source_partition, source_offset, event_time, watermark,
                   reason, record)
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb)
                ON CONFLICT (query, source_topic, source_partition, source_offset) DO NOTHING""",
            [
                (
                    self._query,
                    self._topic,
                    r.partition,
                    r.offset,
                    ms_to_datetime(r.event_ts_ms),
                    ms_to_datetime(r.watermark_ms),
                    r.reason,
                    to_json(r.record),
                )
                for r in late_rows
            ],
        )

    async def _insert_dead_letters(self, conn: Any, batch: CommitBatch) -> None:
        if not batch.dead_letter_rows or not self._dlq_table:
            return
        await insert_dead_letters(
            conn,
            self._dlq_table,
            query=self._query,
            topic=self._topic,
            rows=batch.dead_letter_rows,
            batch_of=batch_ids(self._query, self._topic, batch.partitions).__getitem__,
        )

    async def _insert_ledger_rows(self, conn: Any, partitions: Sequence[PartitionCommit]) -> None:
        if not partitions:
            return
        await conn.executemany(
            f"""INSERT INTO {_LEDGER}
                  (query, topic, partition, start_offset, next_offset, batch_id, records,
                   aggregated, late, bad, filtered, max_event_time, watermark, dead_lettered,
                   error)
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)""",
            [
                (
                    self._query,
                    self._topic,
                    p.partition,
                    p.start_offset,
                    p.next_offset,
                    batch_id(self._query, self._topic, p.partition, p.start_offset, p.next_offset),
                    p.records,
                    p.aggregated,
                    p.late,
                    p.bad,
                    p.filtered,
                    ms_to_datetime(p.max_event_ts_ms),
                    ms_to_datetime(p.watermark_ms),
                    p.dead_lettered,
                    p.error,
                )
                for p in partitions
            ],
        )

    async def _upsert_positions(self, conn: Any, partitions: Sequence[PartitionCommit]) -> None:
        if not partitions:
            return
        await conn.executemany(
            f"""INSERT INTO {_POSITIONS}
                  (query, partition, topic, next_offset, batch_id, max_event_time_ms,
                   watermark_ms, last_record, committed_at)
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8, now())
                ON CONFLICT (query, partition) DO UPDATE SET
                  topic = EXCLUDED.topic, next_offset = EXCLUDED.next_offset,
                  batch_id = EXCLUDED.batch_id, max_event_time_ms = EXCLUDED.max_event_time_ms,
                  watermark_ms = EXCLUDED.watermark_ms, last_record = EXCLUDED.last_record,
                  committed_at = now()""",
            [
                (
                    self._query,
                    p.partition,
                    self._topic,
                    p.next_offset,
                    batch_id(self._query, self._topic, p.partition, p.start_offset, p.next_offset),
                    p.max_event_ts_ms,
                    p.watermark_ms,
                    p.last_record,
                )
                for p in partitions
            ],
        )

    async def _global_watermark(
        self, conn: Any, batch: CommitBatch, stored: int | None
    ) -> int | None:
        """W = min over every partition of the topic of its committed watermark, monotonic.

        A partition with no position holds W back (it stays where it was),
        unless idleTimeout is set and the position is older than it. W never
        goes back: a partition added later does not reopen closed windows.
        """
        rows = await conn.fetch(
            f"""SELECT watermark_ms, extract(epoch from now() - committed_at) * 1000 AS age_ms
                FROM {_POSITIONS} WHERE query = $1""",
            self._query,
        )
        idle = batch.idle_timeout_ms
        marks: list[int] = []
        held_back = len(rows) < batch.topic_partitions and idle is None
        for r in rows:
            if idle is not None and float(r["age_ms"]) > idle:
                continue
            if r["watermark_ms"] is None:
                held_back = True
                break
            marks.append(r["watermark_ms"])
        current = None if held_back or not marks else min(marks)
        if current is None or (stored is not None and current <= stored):
            return None if stored is None else int(stored)
        await conn.execute(
            f"UPDATE {_QUERIES} SET global_watermark_ms = $2 WHERE query = $1",
            self._query,
            current,
        )
        return current

    async def _close_windows(
        self, conn: Any, watermark_ms: int, batch: CommitBatch, tally: _StateTally
    ) -> int:
        """Append mode: write every window with end <= W once, then drop its states.

        The rows are the worker's own merge when it closes windows locally,
        else merged here from every partition's stored states. A window row
        already in the table means something else wrote it (its states are
        only ever closed once): the query stops rather than drop this one's
        contribution.
        """
        encoded = None
        if batch.closes_locally:
            tally.deleted += await self._evict_closed(conn, watermark_ms, batch)
            merged = list(batch.local_rows or ())
            staged: _Staged | None = batch.staged
            encoded = staged.rows if staged else None
        else:
            rows = await conn.fetch(
                f"""DELETE FROM {_STATE}
                    WHERE query = $1 AND partition = ANY($3::int[]) AND window_start_ms <= $2
                    RETURNING key, window_start_ms, window_end_ms, state, partition""",
                self._query,
                watermark_ms - self._window_size_ms(),
                _partitions(batch),
            )
            tally.deleted += len(rows)
            merged = self._merge_rows(sorted(rows, key=lambda r: r["partition"]))
        return await self._write_final(conn, merged, encoded)

    async def _write_final(self, conn: Any, merged: list[ResultRow], encoded: Any = None) -> int:
        """Insert the rows of windows that are final (closed, or expired): each once."""
        try:
            written = await self._sink.write(conn, merged, insert_only=True, encoded=encoded)
        except Exception as exc:
            raise ClosingWindowsError(exc, len(merged)) from exc
        if written < len(merged):
            raise CheckpointConflictError(
                f"query {self._query}: {len(merged) - written} closing window row(s) were "
                "already in the result table, which only this query may write; nothing of "
                "the batch was written"
            )
        return len(merged)

    async def _expire(
        self,
        conn: Any,
        watermark: int,
        stored_w: int | None,
        batch: CommitBatch,
        tally: _StateTally,
    ) -> int:
        """Windowed stateTimeout: tombstones for expired (key, window)s; rows written.

        Tombstones of closed windows go first. A worker that closes windows itself
        names what its engine expired (append rows among its local rows); else the
        (key, window)s idle over all partitions are found here and, in append mode,
        their rows merged from every partition's partials and written once.
        """
        size = self._window_size_ms()
        parts = _partitions(batch)
        tally.deleted += await drop_closed_tombstones(conn, self._query, watermark, size)
        if batch.closes_locally:
            gone, marked = await tombstone(conn, self._query, parts, batch.expired, size)
            tally.deleted += gone
            tally.inserted += marked
            return 0
        bounds = expiry_bounds(self._spec, watermark, stored_w)
        if bounds is None:
            return 0
        rows, marked = await expire_idle(conn, self._query, parts, *bounds)
        tally.deleted += len(rows)
        tally.inserted += marked
        if self._spec.output_mode != "append" or not rows:
            return 0
        return await self._write_final(conn, self._merge_rows(rows))

    async def _evict_closed(self, conn: Any, watermark_ms: int, batch: CommitBatch) -> int:
        """States of windows with end <= W can never change again: drop them.

        By window start (end - size), partition by partition: a range of the index.
        """
        status: str = await conn.execute(
            f"""DELETE FROM {_STATE}
                WHERE query = $1 AND partition = ANY($3::int[]) AND window_start_ms <= $2""",
            self._query,
            watermark_ms - self._window_size_ms(),
            _partitions(batch),
        )
        return int(status.split()[-1])

    def _window_size_ms(self) -> int:
        window = self._spec.window
        assert window is not None  # only windowed queries close windows
        return window.size_ms


@dataclass(slots=True)
class _StateTally:
    """States a transaction inserted and deleted, and the newest progress row before it."""

    inserted: int = 0
    deleted: int = 0
    last_seq: int | None = None
    last_total: int | None = None

    def carried(self) -> int | None:
        """The state rows total after the transaction; None when there is no total to carry."""
        if self.last_total is None:
            return None
        return self.last_total + self.inserted - self.deleted


@dataclass(frozen=True, slots=True)
class _Staged:
    """A batch's COPY records, encoded before its transaction (`PostgresCheckpoint.stage`)."""

    states: list[tuple[Any, ...]]
    rows: Any


def _partitions(batch: CommitBatch) -> list[int]:
    """Every partition of the topic that may hold states (as far as the batch knows)."""
    known = [batch.topic_partitions, *(p + 1 for p in batch.partials), 1]
    known += [p.partition + 1 for p in batch.partitions]
    return list(range(max(known)))

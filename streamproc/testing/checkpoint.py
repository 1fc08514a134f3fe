"""An in-memory checkpoint: the `Checkpoint` port without PostgreSQL.

`MemoryCheckpoint` is one query's view of a `MemoryDatabase` (where several
workers' checkpoints meet, as in one PostgreSQL database), with the same commit
semantics as `PostgresCheckpoint`: the contract tests run both. Its result
table is a `MemoryTableSink`; `db.dead_letter_tables` holds the dead-letter
tables of dlqType postgresql. How the database is told to fail like PostgreSQL
does is said in `streamproc.testing.database`.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any

from streamproc.engine import (
    EXPIRED_STATE,
    PartialRow,
    QuerySpec,
    ResultRow,
    finalize,
    merge_states,
)
from streamproc.engine.aggregates import plan_for
from streamproc.sinks.base import (
    RESET_HINT,
    BoundedRun,
    CheckpointConflictError,
    ClosingWindowsError,
    CommitBatch,
    CommitOutcome,
    PartitionCheckpoint,
    PartitionCommit,
    QueryIdentity,
    ResultSink,
    Watermarks,
    batch_ids,
    behind_watermark,
    check_local_watermark,
    expiry_bounds,
    reset_under_worker,
    stale_partitions,
)
from streamproc.sinks.commit_plan import mode_strategy, plan_commit
from streamproc.sinks.definition import definition_changes
from streamproc.sinks.layout import TOMBSTONE_PARTITION
from streamproc.sinks.progress_rows import PROGRESS_KEEP, progress_row
from streamproc.testing.database import (
    LedgerEntry,
    MemoryDatabase,
    Position,
    RefusedError,
    Registered,
    Run,
    StateKey,
    StoredDeadLetter,
    TypedKey,
    typed_key,
)


class MemoryCheckpoint:
    """One query's checkpoint in a `MemoryDatabase` (a `Checkpoint`), as `PostgresCheckpoint`."""

    def __init__(
        self,
        db: MemoryDatabase,
        *,
        identity: QueryIdentity,
        spec: QuerySpec,
        sink: ResultSink,
        late_table: str | None = None,
        dlq_table: str | None = None,
        progress_keep: int = PROGRESS_KEEP,
    ) -> None:
        self._db = db
        self._progress_keep = progress_keep
        self._identity = identity
        self._query = identity.query
        self._topic = identity.topic
        self._spec = spec
        self._sink = sink
        self._late_table = late_table
        self._dlq_table = dlq_table
        self._incarnation = 0
        self._mode = mode_strategy(spec)

    def stage(self, batch: CommitBatch) -> CommitBatch:
        """Nothing to encode: rows and states are kept as they are."""
        return batch

    async def open(self) -> None:
        """Register the query (or check its definition); create the tables."""
        db = self._db
        db.check_reachable()
        if self._late_table:
            db.late_tables.setdefault(self._late_table, {})
        if self._dlq_table:
            db.dead_letter_tables.setdefault(self._dlq_table, {})
        db.claims.setdefault(self._query, set()).add(id(self))
        try:
            self._open_tables()
        except BaseException:
            db.claims[self._query].discard(id(self))  # refused: it does not run the query
            raise
        await self._sink.prepare(None)

    def _open_tables(self) -> None:
        db = self._db
        self._register()
        table = self._identity.result_table
        if (
            table is not None
            and table not in db.tables
            and any(k[0] == self._query for k in db.ledger)
        ):
            raise CheckpointConflictError(
                f"query {self._query}: its result table {table} does not exist, but its "
                "checkpoint holds committed batches whose rows were written there; restore "
                "the table, or start over with `streamproc reset CONFIG --drop-results`"
            )

    def _register(self) -> None:
        db, identity, query = self._db, self._identity, self._query
        registered = db.queries.get(query)
        if registered is not None:
            changes = definition_changes(registered.definition, identity.definition)
            if not changes:
                self._incarnation = registered.incarnation
                return
            if self._has_state():
                raise CheckpointConflictError(
                    f"query {query}: its checkpoint was made by another definition ("
                    + "; ".join(changes)
                    + f"), and running on it would give wrong results; {RESET_HINT}"
                )
            if db.claims.get(query, set()) - {id(self)}:
                raise CheckpointConflictError(
                    f"query {query}: another worker runs it with another definition ("
                    + "; ".join(changes)
                    + "); nothing was written; give this config another queryName, or stop "
                    "the other worker"
                )
        elif any(k[0] == query for k in db.ledger):
            raise CheckpointConflictError(
                f"query {query}: its ledger has rows but no definition in streamproc_queries: "
                f"the checkpoint was written by an older streamproc (layout 1), or its "
                f"registration was deleted; {RESET_HINT}"
            )
        owner = next(
            (
                q
                for q, r in db.queries.items()
                if q != query and identity.result_table and r.result_table == identity.result_table
            ),
            None,
        )
        if owner is not None:
            raise CheckpointConflictError(
                f"query {query}: table {identity.result_table} belongs to query {owner}; two "
                "queries writing one table would overwrite or drop each other's rows; give "
                f"load.table another name, or run `streamproc reset` on query {owner}"
            )
        db.registrations += 1
        self._incarnation = db.registrations
        db.queries[query] = Registered(
            dict(identity.definition), identity.result_table, self._incarnation
        )

    def _has_state(self) -> bool:
        db, query = self._db, self._query
        return any(k[0] == query for k in (*db.positions, *db.partials, *db.ledger))

    async def close(self) -> None:
        """Leave a bounded run and let go of the claim."""
        self._db.run_members.get(self._query, set()).discard(id(self))
        self._db.claims.get(self._query, set()).discard(id(self))

    async def load_partition(self, partition: int) -> PartitionCheckpoint:
        """The partition's position and open states, after checking its ledger chain."""
        db = self._db
        db.check_reachable()
        position = db.positions.get((self._query, partition))
        chain = [e.commit for e in db.ledger.get((self._query, self._topic, partition), [])]
        self._check_chain(partition, position, chain)
        if position is None:
            return PartitionCheckpoint(partition, None, None, ())
        # Tombstones are the query's, not the partition's: a record of any
        # partition for an expired (key, window) is late.
        partials = tuple(
            row
            for (q, _k, _ws, p), row in db.partials.items()
            if q == self._query and p in (partition, TOMBSTONE_PARTITION)
        )
        return PartitionCheckpoint(
            partition,
            position.next_offset,
            position.max_event_ts_ms,
            partials,
            position.last_record,
        )

    def _check_chain(
        self, partition: int, position: Position | None, chain: Sequence[PartitionCommit]
    ) -> None:
        where = f"query {self._query}, partition {partition} of {self._topic}"
        breaks = [
            b.start_offset for a, b in itertools.pairwise(chain) if a.next_offset != b.start_offset
        ]
        problem = None
        if position is None and chain:
            problem = f"its ledger has {len(chain)} row(s) but no position"
        elif position is not None and not chain:
            problem = f"its position is at offset {position.next_offset} but its ledger is empty"
        elif breaks:
            problem = f"its ledger has a gap or an overlap at offset {breaks[0]}"
        elif position is not None and chain[-1].next_offset != position.next_offset:
            problem = (
                f"its ledger ends at offset {chain[-1].next_offset} but its position is at "
                f"{position.next_offset} (a ledger row was deleted or added)"
            )
        if problem is not None:
            raise CheckpointConflictError(
                f"{where}: {problem}; resuming could apply a batch twice or skip one, so "
                f"nothing was processed; restore the rows, or {RESET_HINT}"
            )

    async def watermarks(self) -> Watermarks:
        """The committed watermark of every partition with a position, and W."""
        db = self._db
        db.check_reachable()
        marks = {p: pos.watermark_ms for (q, p), pos in db.positions.items() if q == self._query}
        registered = db.queries.get(self._query)
        return Watermarks(marks, registered.global_watermark_ms if registered else None)

    async def other_workers(self) -> int:
        """How many other open checkpoints hold a claim on the query."""
        self._db.check_reachable()
        return len(self._db.claims.get(self._query, set()) - {id(self)})

    async def committed_offsets(self) -> dict[int, int]:
        """The next offset of every partition with a position."""
        self._db.check_reachable()
        return {
            p: pos.next_offset for (q, p), pos in self._db.positions.items() if q == self._query
        }

    async def begin_run(
        self, trigger: str, take_ends: Callable[[], Awaitable[Mapping[int, int]]]
    ) -> BoundedRun:
        """Join the run in progress (another member is in it), or begin one."""
        db = self._db
        db.check_reachable()
        members = db.run_members.setdefault(self._query, set())
        runs = db.runs.setdefault(self._query, [])
        others = members - {id(self)}
        members.add(id(self))
        if runs and runs[-1].status == "running":
            if others:
                return BoundedRun(runs[-1].run_id, dict(runs[-1].ends), joined=True)
            runs[-1].status = "abandoned"
        ends = dict(await take_ends())
        run = Run(len(runs) + 1, ends)
        runs.append(run)
        return BoundedRun(run.run_id, dict(ends))

    async def finish_run(self, run: BoundedRun) -> None:
        """Mark the run done and leave it."""
        for r in self._db.runs.get(self._query, []):
            if r.run_id == run.run_id and r.status == "running":
                r.status = "done"
        await self.close()

    async def commit(self, batch: CommitBatch, *, dry_run: bool = False) -> CommitOutcome:
        """One atomic commit: nothing is changed unless everything can be (dry_run: nothing)."""
        db = self._db
        # Like a round trip to a server: other tasks (the next batch, a
        # rebalance) run while the commit is in flight.
        await asyncio.sleep(0)
        step = db.before_commit.pop(db.commits, None)
        if step is not None:
            waiting = step()
            if waiting is not None:
                await waiting  # the commit is in flight meanwhile: others go on
        db.check_reachable()
        if db.fail_commits:
            raise db.fail_commits.pop(0)
        query = self._query
        plan = plan_commit(batch, self._spec, self._mode)
        stale = stale_partitions(
            batch, {p: pos.next_offset for (q, p), pos in db.positions.items() if q == query}
        )
        registered = db.queries.get(query)
        if registered is None or registered.incarnation != self._incarnation:
            raise CheckpointConflictError(reset_under_worker(query))
        if not stale:
            stale = behind_watermark(batch, registered.global_watermark_ms)
        if not stale and self._spec.state_timeout_ms is not None and self._spec.window:
            stale = self._hits_tombstone(batch)
        if stale:
            return CommitOutcome(stale=stale)
        for rows in batch.partials.values():
            for row in rows:
                db.check_key(row.key)
        self._sink.check_keys(row.key for rows in batch.partials.values() for row in rows)
        # Work on copies: a refusal half-way leaves the database as it was.
        partials = dict(db.partials)
        for partition, rows in batch.partials.items():
            for row in rows:
                partials[(query, typed_key(row.key), row.window_start_ms, partition)] = row
        to_write: list[tuple[Sequence[ResultRow], bool]] = []
        rows_step = plan.rows
        passthrough = rows_step.kind == "insert"
        if rows_step.kind in ("insert", "upsert"):
            to_write.append((rows_step.rows, passthrough))
        elif rows_step.kind == "merge":
            to_write.append((self._merge_touched(partials, rows_step.touched), False))
        now = db.clock_ms()
        ledger = {k: list(v) for k, v in db.ledger.items()}
        positions = dict(db.positions)
        for p in batch.partitions:
            ledger.setdefault((query, self._topic, p.partition), []).append(LedgerEntry(p, now))
            positions[(query, p.partition)] = Position(
                p.next_offset, p.max_event_ts_ms, p.watermark_ms, p.last_record, now
            )
        watermark = self._global_watermark(positions, registered, batch, now)
        check_local_watermark(query, batch, watermark)
        closed = 0
        closing = plan.closing
        if self._spec.window is not None and watermark is not None:
            ending = [k for k, row in partials.items() if self._closes(k, row, watermark)]
            # Tombstones of closing windows go: their rows were written when they expired.
            for k in [k for k in ending if k[3] == TOMBSTONE_PARTITION]:
                partials.pop(k)
            ending = [k for k in ending if k[3] != TOMBSTONE_PARTITION]
            if closing.kind == "append":
                closed_states = {k: partials.pop(k) for k in sorted(ending, key=lambda k: k[3])}
                merged = (
                    list(closing.local_rows)
                    if closing.local_rows is not None
                    else self._merge(closed_states.values())
                )
                to_write.append((merged, True))
                closed = len(merged)
            elif closing.kind == "evict":
                for k in ending:
                    partials.pop(k)
                closed = len(ending)
            if closing.expiry != "none":
                final = self._expire(partials, batch, watermark, registered.global_watermark_ms)
                if final:
                    to_write.append((final, True))
                    closed += len(final)
        if closing.kind != "append":
            for partition, keys in batch.evicted.items():
                for key, start, _end in keys:
                    partials.pop((query, typed_key(key), start, partition), None)
        for result_rows, insert_only in to_write:
            try:
                for result in result_rows:
                    db.check_key(result.key)
            except RefusedError as exc:
                if insert_only:
                    raise ClosingWindowsError(exc, len(result_rows)) from exc
                raise
            if insert_only and not passthrough:
                table = db.tables.get(getattr(self._sink, "table", ""), {})
                taken = [
                    r
                    for r in result_rows
                    if (typed_key(r.key), r.window_start_ms, r.window_end_ms) in table
                ]
                if taken:
                    raise CheckpointConflictError(
                        f"query {query}: {len(taken)} closing window row(s) were already in the "
                        "result table, which only this query may write; nothing of the batch "
                        "was written"
                    )
        if dry_run:
            return CommitOutcome((), sum(len(r) for r, _ in to_write), closed, watermark)
        written = 0
        for result_rows, insert_only in to_write:
            written += await self._sink.write(None, result_rows, insert_only=insert_only)
        if self._late_table:
            late = db.late_tables.setdefault(self._late_table, {})
            for r in batch.late_rows:
                late.setdefault((query, self._topic, r.partition, r.offset), r)
        if self._dlq_table and batch.dead_letter_rows:
            letters = db.dead_letter_tables.setdefault(self._dlq_table, {})
            ids = batch_ids(query, self._topic, batch.partitions)
            for d in batch.dead_letter_rows:
                stored = StoredDeadLetter(d, ids[d.partition], now)
                letters.setdefault((query, self._topic, d.partition, d.offset), stored)
        db.partials = partials
        db.ledger = ledger
        db.positions = positions
        registered.global_watermark_ms = watermark
        db.commits += 1
        total = sum(1 for k in partials if k[0] == query)
        kept = db.progress.setdefault(query, [])
        kept.append(
            (
                progress_row(
                    query,
                    self._topic,
                    batch,
                    sink_rows=written,
                    watermark_ms=watermark,
                    timings_s={},
                ),
                total,
            )
        )
        del kept[: -self._progress_keep]
        return CommitOutcome((), written, closed, watermark, state_rows_total=total)

    def _hits_tombstone(self, batch: CommitBatch) -> tuple[int, ...]:
        """The batch's partitions when one of its partials is of an expired (key, window).

        Its worker had not seen the tombstone (another worker's commit made it): the
        batch is stale, and its replay, with the tombstones restored, finds those
        records late ("state expired") instead of starting the state afresh.
        """
        partials = self._db.partials
        for rows in batch.partials.values():
            for row in rows:
                k = (self._query, typed_key(row.key), row.window_start_ms, TOMBSTONE_PARTITION)
                if k in partials:
                    return tuple(p.partition for p in batch.partitions) or tuple(batch.partials)
        return ()

    def _expire(
        self,
        partials: dict[StateKey, PartialRow],
        batch: CommitBatch,
        watermark: int,
        stored_w: int | None,
    ) -> list[ResultRow]:
        """Replace the partials of expired (key, window)s by tombstones (windowed stateTimeout).

        The worker's own list when it closes windows itself (their append rows are
        among its local rows), else every open (key, window) whose activity merged
        over all partitions is the timeout or more behind W. Returns the rows to
        write now: append mode, found here.
        """
        query, spec = self._query, self._spec
        if batch.closes_locally:
            found = {(typed_key(key), ws): (key, ws, we) for key, ws, we in batch.expired}
            rows: list[ResultRow] = []
        else:
            bounds = expiry_bounds(spec, watermark, stored_w)
            if bounds is None:
                return []
            low, high = bounds
            slot = plan_for(spec).touch_slot
            assert slot is not None
            groups: dict[tuple[TypedKey, int | None], list[PartialRow]] = {}
            for (q, k, ws, p), row in sorted(partials.items(), key=_by_partition):
                if q == query and p != TOMBSTONE_PARTITION and ws is not None and low < ws <= high:
                    groups.setdefault((k, ws), []).append(row)
            idle = {
                g: members
                for g, members in groups.items()
                if max(r.state[slot] for r in members) <= high
            }
            found = {
                g: (members[0].key, g[1], members[0].window_end_ms) for g, members in idle.items()
            }
            rows = (
                []
                if spec.output_mode != "append"
                else self._merge(r for members in idle.values() for r in members)
            )
        if not found:
            return rows
        held = [x for x in partials if x[0] == query and (x[1], x[2]) in found]
        for x in held:
            partials.pop(x)
        for (k, ws), (key, _ws, we) in found.items():
            tomb = (query, k, ws, TOMBSTONE_PARTITION)
            partials[tomb] = PartialRow(key, ws, we, EXPIRED_STATE)
        return rows

    def _closes(self, k: StateKey, row: PartialRow, w: int) -> bool:
        return k[0] == self._query and row.window_end_ms is not None and row.window_end_ms <= w

    def _merge_touched(
        self,
        partials: Mapping[StateKey, PartialRow],
        keys: Iterable[tuple[Sequence[Any], int | None]],
    ) -> list[ResultRow]:
        touched = {(typed_key(key), start) for key, start in keys}
        return self._merge(
            row
            for (q, k, ws, _p), row in sorted(partials.items(), key=_by_partition)
            if q == self._query and (k, ws) in touched
        )

    def _merge(self, rows: Any) -> list[ResultRow]:
        grouped: dict[tuple[TypedKey, int | None], list[PartialRow]] = {}
        for row in rows:
            grouped.setdefault((typed_key(row.key), row.window_start_ms), []).append(row)
        windowed = self._spec.window is not None
        out = []
        for group in grouped.values():
            first = group[0]
            values = finalize(self._spec, merge_states(self._spec, [r.state for r in group]))
            out.append(
                ResultRow(
                    first.key,
                    first.window_start_ms if windowed else None,
                    first.window_end_ms if windowed else None,
                    values,
                )
            )
        return out

    def _global_watermark(
        self,
        positions: Mapping[tuple[str, int], Position],
        registered: Registered,
        batch: CommitBatch,
        now_ms: int,
    ) -> int | None:
        idle = batch.idle_timeout_ms
        mine = [pos for (q, _p), pos in positions.items() if q == self._query]
        held_back = len(mine) < batch.topic_partitions and idle is None
        marks: list[int] = []
        for pos in mine:
            if idle is not None and now_ms - pos.committed_at_ms > idle:
                continue
            if pos.watermark_ms is None:
                held_back = True
                break
            marks.append(pos.watermark_ms)
        stored = registered.global_watermark_ms
        current = None if held_back or not marks else min(marks)
        if current is None or (stored is not None and current <= stored):
            return stored
        return current


def _by_partition(item: tuple[StateKey, PartialRow]) -> int:
    return item[0][3]

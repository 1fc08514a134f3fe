"""A commit plan carried out on a `MemoryDatabase`: the transaction of `MemoryCheckpoint.commit`.

`plan_commit` decides what a batch makes durable (`streamproc.sinks.commit_plan`
lists the steps); `MemoryCommits` executes the plan as `PostgresCheckpoint` does
in SQL. It works on copies of the database's states, ledger and positions (a
`_Draft`) and swaps them in only once every check passed, so a refusal half-way
leaves the database as it was, as a rolled-back transaction does. The checkpoint
keeps what surrounds the transaction: the round trip, the failures a test
injects, the registration it checks the commit against.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from streamproc.engine import PartialRow, QuerySpec, ResultRow, WindowKey
from streamproc.sinks.base import (
    CheckpointConflictError,
    ClosingWindowsError,
    CommitBatch,
    CommitOutcome,
    ResultSink,
    batch_ids,
    reset_under_worker,
)
from streamproc.sinks.commit_checks import behind_watermark, check_local_watermark, stale_partitions
from streamproc.sinks.commit_plan import ClosingStep, RowsStep, mode_strategy, plan_commit
from streamproc.sinks.layout import TOMBSTONE_PARTITION
from streamproc.sinks.progress_rows import progress_row
from streamproc.testing.database import (
    LedgerEntry,
    MemoryDatabase,
    Position,
    RefusedError,
    Registered,
    StateKey,
    StoredDeadLetter,
    typed_key,
)
from streamproc.testing.states import (
    close_sessions,
    expire_idle,
    hits_tombstone,
    merge_session_rows,
    merged_rows,
    touched_rows,
)

#: Result rows to write, and whether only the absent ones are inserted (closing
#: windows, pass-through records) rather than upserted.
Write = tuple[Sequence[ResultRow], bool]


@dataclass
class _Draft:
    """What one commit is about to make durable, on copies of the database's dicts."""

    partials: dict[StateKey, PartialRow]
    ledger: dict[tuple[str, str, int], list[LedgerEntry]]
    positions: dict[tuple[str, int], Position]
    writes: list[Write] = field(default_factory=list)
    #: Result rows (key, start, end) deleted before the writes (sessions that moved).
    deletes: list[WindowKey] = field(default_factory=list)
    #: Windows closed (or expired) by the commit, for its outcome.
    closed: int = 0

    @classmethod
    def copy_of(cls, db: MemoryDatabase) -> _Draft:
        """Copies that the commit may change and a refusal may drop."""
        return cls(
            dict(db.partials), {k: list(v) for k, v in db.ledger.items()}, dict(db.positions)
        )


class MemoryCommits:
    """One query's commits in a `MemoryDatabase`: each a commit plan executed at once."""

    def __init__(
        self,
        db: MemoryDatabase,
        *,
        query: str,
        topic: str,
        spec: QuerySpec,
        sink: ResultSink,
        late_table: str | None,
        dlq_table: str | None,
        progress_keep: int,
    ) -> None:
        self._db = db
        self._query = query
        self._topic = topic
        self._spec = spec
        self._sink = sink
        self._late_table = late_table
        self._dlq_table = dlq_table
        self._progress_keep = progress_keep
        self._mode = mode_strategy(spec)

    async def run(self, batch: CommitBatch, *, incarnation: int, dry_run: bool) -> CommitOutcome:
        """Commit a batch of the registration `incarnation` (dry_run: change nothing)."""
        db, query = self._db, self._query
        plan = plan_commit(batch, self._spec, self._mode)
        stale = stale_partitions(
            batch, {p: pos.next_offset for (q, p), pos in db.positions.items() if q == query}
        )
        registered = db.queries.get(query)
        if registered is None or registered.incarnation != incarnation:
            raise CheckpointConflictError(reset_under_worker(query))
        if not stale:
            stale = behind_watermark(batch, registered.global_watermark_ms)
        if not stale and self._spec.state_timeout_ms is not None and self._spec.window:
            stale = hits_tombstone(db.partials, query, batch)
        if stale:
            return CommitOutcome(stale=stale)
        self._check_state_keys(batch)
        draft = _Draft.copy_of(db)
        self._draft_states(draft, batch)
        if plan.rows.kind == "sessions":
            changes = merge_session_rows(
                db.partials, draft.partials, query, self._spec, plan.rows.touched, plan.states
            )
            if changes is None:  # replayed on the checkpoint's state: late, or merged
                return CommitOutcome(stale=tuple(plan.carried) or tuple(plan.states))
            if self._spec.output_mode != "append":
                draft.deletes += changes.deleted
                draft.writes.append((changes.upserted, False))
        self._draft_rows(draft, plan.rows)
        now = db.clock_ms()
        self._draft_positions(draft, batch, now)
        watermark = self._global_watermark(draft.positions, registered, batch, now)
        if self._spec.session is not None and plan.closing.kind == "none":
            watermark = registered.global_watermark_ms  # a dead letter's: W waits
        check_local_watermark(query, batch, watermark)
        if self._spec.window is not None and watermark is not None:
            self._close_windows(draft, plan.closing, batch, watermark, registered)
        elif plan.closing.kind == "sessions":
            draft.closed, final = close_sessions(
                draft.partials, query, self._spec, plan.closing, watermark, plan.closes_locally
            )
            if final:
                draft.writes.append((final, True))
        if plan.closing.kind != "append":
            for partition, keys in batch.evicted.items():
                for key, start, _end in keys:
                    draft.partials.pop((query, typed_key(key), start, partition), None)
        self._check_writes(draft.writes, passthrough=plan.rows.kind == "insert")
        if dry_run:
            return CommitOutcome((), sum(len(r) for r, _ in draft.writes), draft.closed, watermark)
        written = 0
        if draft.deletes:
            await self._sink.delete_rows(None, draft.deletes)  # type: ignore[attr-defined]
        for result_rows, insert_only in draft.writes:
            written += await self._sink.write(None, result_rows, insert_only=insert_only)
        self._write_side_rows(batch, now)
        db.partials = draft.partials
        db.ledger = draft.ledger
        db.positions = draft.positions
        registered.global_watermark_ms = watermark
        db.commits += 1
        total = sum(1 for k in draft.partials if k[0] == query)
        self._keep_progress(batch, written, watermark, total)
        return CommitOutcome((), written, draft.closed, watermark, state_rows_total=total)

    def _check_state_keys(self, batch: CommitBatch) -> None:
        """Refuse the batch, as the server would, when a state's key cannot be stored."""
        for rows in batch.partials.values():
            for row in rows:
                self._db.check_key(row.key)
        self._sink.check_keys(row.key for rows in batch.partials.values() for row in rows)

    def _draft_states(self, draft: _Draft, batch: CommitBatch) -> None:
        """Step 2: the partitions' states, written over those the database holds
        (sessions: the deleted ones first, as their rows are merged next)."""
        query = self._query
        if self._spec.session is not None:
            for partition, keys in batch.evicted.items():
                for key, start, _end in keys:
                    draft.partials.pop((query, typed_key(key), start, partition), None)
        for partition, rows in batch.partials.items():
            for row in rows:
                key = (query, typed_key(row.key), row.window_start_ms, partition)
                draft.partials[key] = row

    def _draft_rows(self, draft: _Draft, rows_step: RowsStep) -> None:
        """Step 3: the rows the output mode writes now (none in append mode)."""
        passthrough = rows_step.kind == "insert"
        if rows_step.kind in ("insert", "upsert", "replace"):
            draft.deletes += rows_step.deleted
            draft.writes.append((rows_step.rows, passthrough))
        elif rows_step.kind == "merge":
            touched = touched_rows(draft.partials, self._query, self._spec, rows_step.touched)
            draft.writes.append((touched, False))

    def _draft_positions(self, draft: _Draft, batch: CommitBatch, now_ms: int) -> None:
        """Step 4, in part: a ledger row and the new position of each carried partition."""
        query = self._query
        for p in batch.partitions:
            draft.ledger.setdefault((query, self._topic, p.partition), []).append(
                LedgerEntry(p, now_ms)
            )
            draft.positions[(query, p.partition)] = Position(
                p.next_offset, p.max_event_ts_ms, p.watermark_ms, p.last_record, now_ms
            )

    def _close_windows(
        self,
        draft: _Draft,
        closing: ClosingStep,
        batch: CommitBatch,
        watermark: int,
        registered: Registered,
    ) -> None:
        """Step 5: windows W closed written once (append) or dropped (update); idle ones expired."""
        partials = draft.partials
        ending = [k for k, row in partials.items() if self._window_closed(k, row, watermark)]
        # Tombstones of closing windows go: their rows were written when they expired.
        for k in [k for k in ending if k[3] == TOMBSTONE_PARTITION]:
            partials.pop(k)
        ending = [k for k in ending if k[3] != TOMBSTONE_PARTITION]
        if closing.kind == "append":
            closed_states = {k: partials.pop(k) for k in sorted(ending, key=lambda k: k[3])}
            merged = (
                list(closing.local_rows)
                if closing.local_rows is not None
                else merged_rows(self._spec, closed_states.values())
            )
            draft.writes.append((merged, True))
            draft.closed = len(merged)
        elif closing.kind == "evict":
            for k in ending:
                partials.pop(k)
            draft.closed = len(ending)
        if closing.expiry != "none":
            final = expire_idle(
                partials,
                self._query,
                self._spec,
                batch,
                watermark,
                registered.global_watermark_ms,
            )
            if final:
                draft.writes.append((final, True))
                draft.closed += len(final)

    def _check_writes(self, writes: Sequence[Write], *, passthrough: bool) -> None:
        """Refuse the batch before anything is written: a refused key, a closed row taken."""
        db, query = self._db, self._query
        for result_rows, insert_only in writes:
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

    def _write_side_rows(self, batch: CommitBatch, now_ms: int) -> None:
        """Step 4, the rest: late rows and dead letters, each record's once."""
        db, query = self._db, self._query
        if self._late_table:
            late = db.late_tables.setdefault(self._late_table, {})
            for r in batch.late_rows:
                late.setdefault((query, self._topic, r.partition, r.offset), r)
        if self._dlq_table and batch.dead_letter_rows:
            letters = db.dead_letter_tables.setdefault(self._dlq_table, {})
            ids = batch_ids(query, self._topic, batch.partitions)
            for d in batch.dead_letter_rows:
                stored = StoredDeadLetter(d, ids[d.partition], now_ms)
                letters.setdefault((query, self._topic, d.partition, d.offset), stored)

    def _keep_progress(
        self, batch: CommitBatch, written: int, watermark: int | None, state_rows: int
    ) -> None:
        """Step 6: the batch's progress row, the newest `progress_keep` kept."""
        query = self._query
        kept = self._db.progress.setdefault(query, [])
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
                state_rows,
            )
        )
        del kept[: -self._progress_keep]

    def _window_closed(self, state_key: StateKey, row: PartialRow, watermark: int) -> bool:
        """Whether the state is of one of this query's windows that W has passed."""
        end = row.window_end_ms
        return state_key[0] == self._query and end is not None and end <= watermark

    def _global_watermark(
        self,
        positions: Mapping[tuple[str, int], Position],
        registered: Registered,
        batch: CommitBatch,
        now_ms: int,
    ) -> int | None:
        """W after the commit: the least partition watermark, never moving back.

        Held back (the stored W stays) while a partition of the topic has no
        watermark yet, unless idle partitions are left out (idleTimeout).
        """
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

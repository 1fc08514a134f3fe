"""A commit as a plan: what a micro-batch makes durable, decided once, with no I/O.

    plan_commit(batch, mode) -> CommitPlan

The plan names every step of the batch's one transaction; a checkpoint only
executes it (`PostgresCheckpoint` in PostgreSQL, `MemoryCheckpoint` in dicts), so
the semantics of a commit are written here once and the contract tests hold both
executors to them:

    1. positions   each carried partition starts where its position stands; with a
                   basis, every partition of the topic is where the batch assumed
                   (`stale_partitions`); none of a stale batch is written
    2. states      the partitions' absolute partial states, written; evicted ones deleted
    3. rows        per the output mode (`RowsStep`): rows merged by the worker
                   upserted, rows merged from every partition's states, records
                   inserted once by position, sessions' rows replaced (the rows of
                   sessions that moved or merged deleted, then the others
                   upserted), or nothing (append)
    4. side rows   late rows, dead letters, ledger rows, positions
    5. closing     once W is known (`ClosingStep`): closed windows' rows written once
                   (append) or their states dropped (update); idle (key, window)s
                   expired (windowed stateTimeout); sessions: the closed ones'
                   rows written once (append), their fences kept a gap past W
    6. progress    the batch's row

The output mode is a strategy (`mode_strategy`) chosen once per query, like the
late and bad routers; it decides steps 3 and 5.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from streamproc.engine import PartialRow, QuerySpec, ResultRow, WindowKey
from streamproc.sinks.base import (
    CheckpointError,
    CommitBatch,
    DeadLetterRow,
    LateRow,
    PartitionCommit,
    ProgressNote,
)
from streamproc.sinks.rows import encode_key

RowsKind = Literal["none", "upsert", "merge", "insert", "replace", "sessions"]
ClosingKind = Literal["none", "append", "evict", "sessions"]
ExpiryKind = Literal["none", "given", "scan"]


@dataclass(frozen=True, slots=True)
class RowsStep:
    """Step 3: what the batch writes to the result table before closing.

    Attributes:
        kind: 'upsert' the worker's merged `rows`; 'merge' the (key, window)s in
            `touched` from every partition's stored states, then upsert; 'insert'
            `rows` once each (a pass-through query's records, keyed by position);
            'replace' (sessions): delete `deleted` (key, start, end), then upsert
            `rows`; 'sessions': the keys in `touched` (start None) made the chains of
            every partition's state rows (`session_merge`); 'none'. `touched` holds
            each (key, start) once, keys told apart by their stored encoding: 1 and
            true are two keys, although Python holds them equal (a set would keep one).
    """

    kind: RowsKind
    rows: Sequence[ResultRow] = ()
    touched: tuple[tuple[tuple[object, ...], int | None], ...] = ()
    deleted: Sequence[WindowKey] = ()


@dataclass(frozen=True, slots=True)
class ClosingStep:
    """Step 5: what happens to windows W closes, and to idle (key, window)s.

    Attributes:
        kind: 'append': each closed window's row is written once (the worker's
            `local_rows` when it closes windows itself, else merged from every
            partition's states), and its states dropped; 'evict': closed windows'
            states dropped (update mode); 'sessions': the sessions the worker closed
            (`closed`), or, when it does not close them, those W closes over every
            partition's state rows: their rows written once in append mode
            (`local_rows`), their fences kept (append, update) until W passes end +
            `gap_ms`, when they go; 'none' (complete mode, pass-through,
            non-windowed queries).
        local_rows: append, worker-merged: the rows of the windows closing now.
        expiry: windowed stateTimeout: 'given' (the worker names the (key, window)s
            it expired, in `expired`), 'scan' (the checkpoint finds the idle ones
            over every partition), or 'none'.
    """

    kind: ClosingKind
    local_rows: Sequence[ResultRow] | None = None
    expiry: ExpiryKind = "none"
    expired: Sequence[WindowKey] = ()
    closed: Sequence[WindowKey] = ()
    fences: bool = False
    gap_ms: int = 0
    #: State rows of closed sessions the checkpoint deleted (closed there).
    gone: int = 0


@dataclass(frozen=True, slots=True)
class CommitPlan:
    """Everything one commit does, in order (see the module docstring).

    Attributes:
        partitions: The carried partitions: position checks, ledger rows, positions.
        basis: Every partition's expected position, when the rows depend on all of them.
        states: Partial states to write, per partition.
        evicted: Partial states to delete, per partition (stateTimeout, local evictions).
        rows: Step 3.
        closing: Step 5.
        closes_locally: The worker closes windows itself: the checkpoint's W must be
            the worker's (`watermark_ms`).
    """

    partitions: tuple[PartitionCommit, ...]
    basis: Mapping[int, int | None] | None
    states: Mapping[int, Sequence[PartialRow]]
    evicted: Mapping[int, Sequence[WindowKey]]
    rows: RowsStep
    closing: ClosingStep
    closes_locally: bool
    watermark_ms: int | None
    topic_partitions: int
    idle_timeout_ms: int | None
    late_rows: Sequence[LateRow]
    dead_letter_rows: Sequence[DeadLetterRow]
    progress: ProgressNote | None
    #: 'merge' rows: the worker's merge over the partitions it owns (`CommitBatch.own_rows`).
    own_rows: Sequence[ResultRow] | None = None

    @property
    def carried(self) -> list[int]:
        """The partitions the batch carries, in order."""
        return [p.partition for p in self.partitions]


class OutputModeStrategy(Protocol):
    """What an output mode writes: the rows of a batch, and what closing does."""

    def rows(self, batch: CommitBatch) -> RowsStep:
        """Step 3 for this batch."""
        ...

    def closing(self, batch: CommitBatch) -> ClosingKind:
        """Step 5's kind for this query."""
        ...


Touched = tuple[tuple[tuple[object, ...], int | None], ...]


def distinct(pairs: Iterable[tuple[Sequence[object], int | None]]) -> Touched:
    """(key, start) pairs, each once: keys compared by their stored encoding.

    Python's equality first (cheap); a pair equal to one kept but of other types (1
    and true) is kept apart under its encoding.
    """
    seen: dict[object, tuple[tuple[object, ...], int | None]] = {}
    for key, start in pairs:
        pair = (tuple(key), start)
        kept = seen.setdefault(pair, pair)
        if kept is not pair and list(map(type, kept[0])) != list(map(type, pair[0])):
            seen.setdefault((encode_key(pair[0]), start), pair)
    return tuple(seen.values())


def _touched(batch: CommitBatch) -> Touched:
    return distinct((r.key, r.window_start_ms) for rows in batch.partials.values() for r in rows)


class _Upserting:
    """update and complete: rows after every batch, merged by the worker or from states."""

    def __init__(self, closing: ClosingKind) -> None:
        self._closing = closing

    def rows(self, batch: CommitBatch) -> RowsStep:
        if batch.local_rows is not None:
            return RowsStep("upsert", batch.local_rows)
        return RowsStep("merge", touched=_touched(batch))

    def closing(self, batch: CommitBatch) -> ClosingKind:
        return self._closing


class _Appending:
    """append: nothing until a window closes; then its row, once."""

    def rows(self, batch: CommitBatch) -> RowsStep:
        return RowsStep("none")

    def closing(self, batch: CommitBatch) -> ClosingKind:
        return "append"


class _Sessions:
    """Session windows.

    A worker that owns every partition closes sessions itself: its engine's merge is
    exact, so its rows are the table's: update and complete replace the rows of
    sessions that moved or merged, append inserts closed ones. With partitions on
    other workers, the checkpoint merges the touched keys' state rows of every
    partition and closes sessions by W over all of them (`session_merge`).
    """

    def __init__(self, query_mode: str) -> None:
        self._mode = query_mode

    def rows(self, batch: CommitBatch) -> RowsStep:
        if batch.sessions is None and _empty(batch):
            return RowsStep("none")  # a dead letter's batch: positions only
        if batch.sessions is None:
            raise CheckpointError(
                "internal error: a session-window batch without its sessions part; "
                "nothing of the batch was written"
            )
        if not batch.closes_locally:
            keys = [(r.key, None) for rows in batch.partials.values() for r in rows]
            keys += [(k, None) for gone in batch.evicted.values() for k, _, _ in gone]
            return RowsStep("sessions", touched=distinct(keys))
        if self._mode == "append":
            return RowsStep("none")
        return RowsStep("replace", batch.local_rows or (), deleted=batch.sessions.deleted_rows)

    def closing(self, batch: CommitBatch) -> ClosingKind:
        return "sessions"


class _PassingThrough:
    """No aggregation: each record a row, inserted once by its position."""

    def rows(self, batch: CommitBatch) -> RowsStep:
        return RowsStep("insert", batch.local_rows or ())

    def closing(self, batch: CommitBatch) -> ClosingKind:
        return "none"


def mode_strategy(spec: QuerySpec) -> OutputModeStrategy:
    """The query's output-mode strategy (chosen once, when its checkpoint is made)."""
    if spec.passthrough:
        return _PassingThrough()
    if spec.session is not None:
        return _Sessions(spec.output_mode)
    if spec.output_mode == "append":
        return _Appending()
    windowed = spec.window is not None
    if spec.output_mode == "update":
        return _Upserting("evict" if windowed else "none")
    return _Upserting("none")


def plan_commit(batch: CommitBatch, spec: QuerySpec, mode: OutputModeStrategy) -> CommitPlan:
    """The plan of a batch's commit (pure)."""
    rows = mode.rows(batch)
    if spec.session is not None:
        return _session_plan(batch, spec, rows)
    closing_kind = mode.closing(batch) if spec.window is not None else "none"
    expires = spec.window is not None and spec.state_timeout_ms is not None
    expiry: ExpiryKind = "none"
    if expires:
        expiry = "given" if batch.closes_locally else "scan"
    local_closing = batch.local_rows if batch.closes_locally and closing_kind == "append" else None
    return CommitPlan(
        partitions=batch.partitions,
        basis=batch.basis,
        states=batch.partials,
        evicted=batch.evicted,
        rows=rows,
        closing=ClosingStep(closing_kind, local_closing, expiry, batch.expired),
        closes_locally=batch.closes_locally,
        watermark_ms=batch.watermark_ms,
        topic_partitions=batch.topic_partitions,
        idle_timeout_ms=batch.idle_timeout_ms,
        late_rows=batch.late_rows,
        dead_letter_rows=batch.dead_letter_rows,
        progress=batch.progress,
        own_rows=batch.own_rows,
    )


def _empty(batch: CommitBatch) -> bool:
    """The batch changes no state and writes no row."""
    return (
        not any(batch.partials.values())
        and not any(batch.evicted.values())
        and not batch.local_rows
    )


def _session_plan(batch: CommitBatch, spec: QuerySpec, rows: RowsStep) -> CommitPlan:
    """The plan of a session-window batch (its strategy checked its sessions part).

    A batch without one (a dead letter's: positions and side rows only) closes
    nothing, and W waits for the next batch, which closes what it passed.
    """
    assert spec.session is not None
    append = spec.output_mode == "append"
    closing = (
        ClosingStep("none")
        if batch.sessions is None
        else ClosingStep(
            "sessions",
            local_rows=(batch.local_rows or ()) if append and batch.closes_locally else None,
            closed=batch.sessions.closed,
            # Complete mode keeps closed sessions in state: a worker closing them itself
            # knows them; else the checkpoint fences those closing (rule (b)).
            fences=spec.output_mode != "complete" or not batch.closes_locally,
            gap_ms=spec.session.gap_ms,
        )
    )
    return CommitPlan(
        partitions=batch.partitions,
        basis=batch.basis,
        states=batch.partials,
        evicted=batch.evicted,
        rows=rows,
        closing=closing,
        closes_locally=batch.closes_locally,
        watermark_ms=batch.watermark_ms,
        topic_partitions=batch.topic_partitions,
        idle_timeout_ms=batch.idle_timeout_ms,
        late_rows=batch.late_rows,
        dead_letter_rows=batch.dead_letter_rows,
        progress=batch.progress,
    )

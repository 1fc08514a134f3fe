"""What a session-window emit makes durable: the batch's session part, and its fences.

A `SessionEmission` (streamproc.engine.session_engine) says what happened to the
partial sessions of each local partition and which result rows exist no more. Its
commit (docs/sessions-design.md, "State rows" and "Result rows, per output mode"):

    states     per partition, the upserts of `SessionEmission.state_rows` go to
               `CommitBatch.partials`, its deletes to `CommitBatch.evicted`
    rows       append: the closed sessions' rows, inserted once (closing);
               update, complete: `deleted_rows` deleted, then `rows` upserted,
               in the same transaction (never two overlapping sessions of a key)
    fences     the sessions the emit closed (append, update) become rows of
               partition -1 with an empty state, dropped once W passes end + gap:
               a restore hands them to `SessionEngine.restore(closed=...)`

Pure: no I/O. Only a worker that owns every partition commits sessions yet (it
closes them itself, `CommitBatch.closes_locally`); the plan refuses the others.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from streamproc.engine import PartialRow, ResultRow, SessionEmission, WindowKey

#: A fence's state: empty (no partial session has an empty state).
FENCE_STATE: tuple[()] = ()


@dataclass(frozen=True, slots=True)
class SessionCommit:
    """The session-only part of a batch (`CommitBatch.sessions`).

    Attributes:
        deleted_rows: (key, start, end) of result rows that no longer exist (update,
            complete): deleted before the batch's rows are upserted.
        closed: (key, start, end) of the merged sessions the emit closed; in append and
            update mode each becomes a fence.
    """

    deleted_rows: Sequence[WindowKey] = ()
    closed: Sequence[WindowKey] = ()


@dataclass(frozen=True, slots=True)
class SessionBatchParts:
    """A session emit as the fields of a `CommitBatch`."""

    partials: Mapping[int, Sequence[PartialRow]]
    evicted: Mapping[int, Sequence[WindowKey]]
    rows: Sequence[ResultRow]
    sessions: SessionCommit


def session_batch_parts(emission: SessionEmission, partitions: Iterable[int]) -> SessionBatchParts:
    """The state-row upserts and deletes, rows and session part of one emit.

    Args:
        emission: What the engine's emit returned.
        partitions: The local partitions (every one with a change is among them).
    """
    partials: dict[int, list[PartialRow]] = {}
    evicted: dict[int, list[WindowKey]] = {}
    for p in sorted(set(partitions) | set(emission.changes)):
        upserts, deletes = emission.state_rows(p)
        if upserts:
            partials[p] = upserts
        if deletes:
            evicted[p] = deletes
    return SessionBatchParts(
        partials,
        evicted,
        emission.rows,
        SessionCommit(emission.deleted_rows, emission.closed),
    )


def fence_row(closed: WindowKey) -> PartialRow:
    """The state row (partition -1) that keeps a closed session as a fence."""
    key, start, end = closed
    return PartialRow(key, start, end, FENCE_STATE)


def fence_expired(row: PartialRow, watermark_ms: int, gap_ms: int) -> bool:
    """W passed the fence's end by a gap: no record that is not late touches it."""
    end = row.window_end_ms
    return end is not None and end + gap_ms <= watermark_ms


def fences_of(rows: Iterable[PartialRow]) -> tuple[WindowKey, ...]:
    """(key, start, end) of fence rows, for `SessionEngine.restore(closed=...)`."""
    return tuple((r.key, r.window_start_ms, r.window_end_ms) for r in rows)


__all__ = [
    "FENCE_STATE",
    "SessionBatchParts",
    "SessionCommit",
    "fence_expired",
    "fence_row",
    "fences_of",
    "session_batch_parts",
]

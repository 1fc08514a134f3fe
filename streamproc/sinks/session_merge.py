"""Sessions merged and closed by the checkpoint, over every partition's state rows.

With partitions spread over several workers, no worker's merge is the session's: the
checkpoint chains the state rows of every partition (`merge_sessions`, the rule the
engine uses) for each key a batch touched, and makes the key's result rows those
chains. Pure: each checkpoint reads the rows and applies what these return.

    rows      the chains of a key's state rows before the batch are its rows in the
              table (every commit keeps them so); after the batch's state rows are
              applied, rows of chains that no longer exist are deleted, the others
              upserted (update, complete)
    stale     a batch whose state rows overlap a fence (a session closed already: its
              records are late, "session closed"), or another partial session of their
              partition (a worker forgot a closed piece the batch touches) is stale:
              replayed on a state restored from the checkpoint, the records are late
              or merge into the stored piece
    closing   chains with end <= W are closed: append writes their rows once; append
              and update drop their state rows and keep fences; complete keeps them in
              state and keeps fences of those that closed within a gap of W
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from streamproc.engine import MergedSession, PartialRow, QuerySpec, ResultRow, WindowKey
from streamproc.engine.aggregates import plan_for
from streamproc.engine.sessions import chain_bounds, merge_sessions
from streamproc.sinks.rows import encode_key

#: (partition, state row) of a partial session (partition >= 0) or a fence (-1).
Stored = tuple[int, PartialRow]


def _chains(spec: QuerySpec, rows: Iterable[Stored]) -> list[MergedSession]:
    return merge_sessions(spec, [(p, r) for p, r in rows if p >= 0])


def session_rows(spec: QuerySpec, rows: Iterable[Stored]) -> list[ResultRow]:
    """The result rows of the merged sessions of partial sessions (fences left out)."""
    finalize = plan_for(spec).finalize
    return [
        ResultRow(m.key, m.start_ms, m.end_ms, finalize(list(m.state))) for m in _chains(spec, rows)
    ]


@dataclass(frozen=True, slots=True)
class RowChanges:
    """What a batch does to the result rows of the keys it touched."""

    deleted: list[WindowKey]
    upserted: list[ResultRow]


#: (partition, key as compared, group values, start, end) of a stored row: its
#: bounds without its state (the rows before a batch need no more).
Span = tuple[int, Any, tuple[Any, ...], int, int]
#: (key as compared, start, end) -> (group values, start, end) of merged sessions.
Chained = dict[tuple[Any, int, int], WindowKey]


def chained_bounds(spans: Iterable[Span]) -> Chained:
    """The merged sessions of partial sessions (fences left out), by bounds alone."""
    by_key: dict[Any, tuple[tuple[Any, ...], list[tuple[int, int]]]] = {}
    for p, compared, values, start, end in spans:
        if p >= 0:
            by_key.setdefault(compared, (values, []))[1].append((start, end))
    return {
        (compared, s, e): (values, s, e)
        for compared, (values, bounds) in by_key.items()
        for s, e in chain_bounds(bounds)
    }


def spans_of(rows: Iterable[Stored], key_of: Any = encode_key) -> list[Span]:
    """Stored rows as spans (`key_of` compares keys: type-exact)."""
    out: list[Span] = []
    for p, r in rows:
        assert r.window_start_ms is not None and r.window_end_ms is not None
        out.append((p, key_of(r.key), tuple(r.key), r.window_start_ms, r.window_end_ms))
    return out


def row_changes(
    spec: QuerySpec, before: Chained, after: Sequence[Stored], key_of: Any = encode_key
) -> RowChanges:
    """Rows of the touched keys: chains before the batch (`chained_bounds`) and after it.

    Keys are compared by `key_of` (their stored encoding): 1, 1.0 and true are not
    one key, although Python holds them equal.
    """
    rows = session_rows(spec, after)
    now = {(key_of(r.key), r.window_start_ms, r.window_end_ms) for r in rows}
    gone = sorted((b for k, b in before.items() if k not in now), key=repr)
    return RowChanges(gone, rows)


def conflicts(rows: Iterable[Stored], written: Iterable[Stored], key_of: Any = encode_key) -> bool:
    """A partial session the batch wrote overlaps a fence of its key, or another partial
    session of its partition.

    Args:
        rows: Every stored row (partials and fences) of the keys a batch touched, after it.
        written: (partition, state row) the batch upserted.
        key_of: Maps a group key to a comparable one that keeps types apart (1,
            "1", true): its stored encoding.
    """
    fences: dict[Any, list[tuple[int, int]]] = {}
    mine: dict[tuple[Any, int], list[tuple[int, int]]] = {}
    for p, r in rows:
        assert r.window_start_ms is not None and r.window_end_ms is not None
        span = (r.window_start_ms, r.window_end_ms)
        if p < 0:
            fences.setdefault(key_of(r.key), []).append(span)
        else:
            mine.setdefault((key_of(r.key), p), []).append(span)
    for p, r in written:
        s, e = r.window_start_ms, r.window_end_ms
        assert s is not None and e is not None
        key = key_of(r.key)
        if any(fs < e and s < fe for fs, fe in fences.get(key, ())):
            return True
        if any(os != s and os < e and s < oe for os, oe in mine.get((key, p), ())):
            return True
    return False


def newly_closed(
    spec: QuerySpec, rows: Iterable[Stored], watermark_ms: int, gap_ms: int
) -> list[MergedSession]:
    """Complete mode keeps closed sessions in state: those W closed within a gap (their
    fences, rule (b) of "session closed")."""
    return [m for m in _chains(spec, rows) if watermark_ms - gap_ms < m.end_ms <= watermark_ms]


def closing(
    spec: QuerySpec, rows: Iterable[Stored], watermark_ms: int
) -> tuple[list[MergedSession], list[tuple[int, WindowKey]]]:
    """Merged sessions W closes, and (partition, (key, start, end)) of their state rows."""
    closed = [m for m in _chains(spec, rows) if m.end_ms <= watermark_ms]
    parts: list[tuple[int, WindowKey]] = [
        (p, (m.key, s, e)) for m in closed for p, s, e in m.partials
    ]
    return closed, parts


__all__ = [
    "Chained",
    "RowChanges",
    "Span",
    "Stored",
    "chained_bounds",
    "closing",
    "conflicts",
    "row_changes",
    "session_rows",
    "spans_of",
]

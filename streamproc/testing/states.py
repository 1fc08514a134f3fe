"""A query's partial states in a `MemoryDatabase`: merged into result rows, or expired.

Each partition keeps its own partial state of a (key, window); a result row is
those states merged, in partition order as `PostgresCheckpoint` reads them. A
windowed stateTimeout replaces the states of an idle (key, window) by one
tombstone (`TOMBSTONE_PARTITION`), so that its late records are told from new
ones. Pure functions over the states' dict: the commit (`MemoryCommits`) calls
them on its draft, before anything is written.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
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
from streamproc.sinks.base import CommitBatch
from streamproc.sinks.commit_checks import expiry_bounds
from streamproc.sinks.commit_plan import ClosingStep
from streamproc.sinks.layout import TOMBSTONE_PARTITION
from streamproc.sinks.session_commit import fence_expired, fence_row
from streamproc.sinks.session_merge import (
    RowChanges,
    Stored,
    chained_bounds,
    closing,
    conflicts,
    newly_closed,
    row_changes,
    spans_of,
)
from streamproc.testing.database import StateKey, TypedKey, typed_key


def merged_rows(spec: QuerySpec, rows: Iterable[PartialRow]) -> list[ResultRow]:
    """One result row per (key, window): its partitions' states merged, then finalized."""
    grouped: dict[tuple[TypedKey, int | None], list[PartialRow]] = {}
    for row in rows:
        grouped.setdefault((typed_key(row.key), row.window_start_ms), []).append(row)
    windowed = spec.window is not None
    out = []
    for group in grouped.values():
        first = group[0]
        values = finalize(spec, merge_states(spec, [r.state for r in group]))
        out.append(
            ResultRow(
                first.key,
                first.window_start_ms if windowed else None,
                first.window_end_ms if windowed else None,
                values,
            )
        )
    return out


def touched_rows(
    partials: Mapping[StateKey, PartialRow],
    query: str,
    spec: QuerySpec,
    keys: Iterable[tuple[Sequence[Any], int | None]],
) -> list[ResultRow]:
    """The rows of the (key, window)s a batch touched, merged over every partition."""
    touched = {(typed_key(key), start) for key, start in keys}
    return merged_rows(
        spec,
        (
            row
            for (q, k, ws, _p), row in sorted(partials.items(), key=_by_partition)
            if q == query and (k, ws) in touched
        ),
    )


def hits_tombstone(
    partials: Mapping[StateKey, PartialRow], query: str, batch: CommitBatch
) -> tuple[int, ...]:
    """The batch's partitions when one of its partials is of an expired (key, window).

    Its worker had not seen the tombstone (another worker's commit made it): the
    batch is stale, and its replay, with the tombstones restored, finds those
    records late ("state expired") instead of starting the state afresh.
    """
    for rows in batch.partials.values():
        for row in rows:
            k = (query, typed_key(row.key), row.window_start_ms, TOMBSTONE_PARTITION)
            if k in partials:
                return tuple(p.partition for p in batch.partitions) or tuple(batch.partials)
    return ()


def expire_idle(
    partials: dict[StateKey, PartialRow],
    query: str,
    spec: QuerySpec,
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
        found = {g: (members[0].key, g[1], members[0].window_end_ms) for g, members in idle.items()}
        rows = (
            []
            if spec.output_mode != "append"
            else merged_rows(spec, (r for members in idle.values() for r in members))
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


def _by_partition(item: tuple[StateKey, PartialRow]) -> int:
    """Sort key: states in partition order, as `PostgresCheckpoint` reads them to merge."""
    return item[0][3]


def _stored(
    partials: Mapping[StateKey, PartialRow], query: str, keys: set[TypedKey] | None
) -> list[Stored]:
    return [
        (k[3], row)
        for k, row in sorted(partials.items(), key=_by_partition)
        if k[0] == query and (keys is None or k[1] in keys)
    ]


def merge_session_rows(
    before: Mapping[StateKey, PartialRow],
    after: Mapping[StateKey, PartialRow],
    query: str,
    spec: QuerySpec,
    touched: Iterable[tuple[Sequence[Any], int | None]],
    written: Mapping[int, Sequence[PartialRow]],
) -> RowChanges | None:
    """Step 3 of a session batch not closed by its worker: the touched keys' rows made
    the chains of every partition's state rows; None when the batch is stale."""
    keys = {typed_key(key) for key, _ in touched}
    now = _stored(after, query, keys)
    if conflicts(now, [(p, r) for p, rows in written.items() for r in rows], typed_key):
        return None
    before_spans = spans_of(_stored(before, query, keys), typed_key)
    return row_changes(spec, chained_bounds(before_spans), now, typed_key)


def close_sessions(
    partials: dict[StateKey, PartialRow],
    query: str,
    spec: QuerySpec,
    step: ClosingStep,
    watermark: int | None,
    local: bool,
) -> tuple[int, list[ResultRow]]:
    """Step 5 of a session batch: (sessions closed, rows to insert once).

    A worker that closes sessions itself names them (their state rows are among the
    batch's deletes, their rows in `local_rows`); else the chains of every partition's
    state rows with end <= W are closed here. Fences are kept (append, update), fences
    W passed by a gap dropped, and in append mode the closed rows inserted once.
    """
    if not local:
        step = _closed_here(partials, query, spec, step, watermark)
    if step.fences:
        for closed in step.closed:
            row = fence_row(closed)
            partials[(query, typed_key(row.key), row.window_start_ms, TOMBSTONE_PARTITION)] = row
    if watermark is not None:
        gone = [
            k
            for k, row in partials.items()
            if k[0] == query
            and k[3] == TOMBSTONE_PARTITION
            and fence_expired(row, watermark, step.gap_ms)
        ]
        for k in gone:
            del partials[k]
    return len(step.closed), list(step.local_rows or ())


def _closed_here(
    partials: dict[StateKey, PartialRow],
    query: str,
    spec: QuerySpec,
    step: ClosingStep,
    watermark: int | None,
) -> ClosingStep:
    """The sessions W closes over every partition: their state rows dropped (append,
    update), named in the step with their rows (append)."""
    if watermark is None:
        return step
    if spec.output_mode == "complete":  # kept in state; fenced for rule (b)
        recent = {
            k[1]
            for k, row in partials.items()
            if k[0] == query
            and k[3] >= 0
            and watermark - step.gap_ms < (row.window_end_ms or 0) <= watermark
        }
        found = newly_closed(spec, _stored(partials, query, recent), watermark, step.gap_ms)
        return replace(step, closed=[(m.key, m.start_ms, m.end_ms) for m in found])
    ending = {
        k[1]
        for k, row in partials.items()
        if k[0] == query and k[3] >= 0 and (row.window_end_ms or 0) <= watermark
    }
    if not ending:
        return replace(step, closed=())
    closed, parts = closing(spec, _stored(partials, query, ending), watermark)
    for p, (key, start, _end) in parts:
        del partials[(query, typed_key(key), start, p)]
    finalize = plan_for(spec).finalize
    rows = [ResultRow(m.key, m.start_ms, m.end_ms, finalize(list(m.state))) for m in closed]
    return replace(
        step,
        closed=[(m.key, m.start_ms, m.end_ms) for m in closed],
        local_rows=rows if spec.output_mode == "append" else None,
    )

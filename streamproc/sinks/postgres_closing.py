"""Closing in PostgreSQL: the global watermark W, windows it closes, idle (key, window)s.

Runs under the query's closing lock held exclusively (`postgres_commit`): no batch of
the query is in flight meanwhile, so every partition's states and positions hold
still. Either inside a batch's transaction (its worker closes windows itself, or
nobody else was committing), or as a short transaction of its own after a batch.

    W           min over every partition of the topic of its committed watermark,
                never lower than the stored W
    append      every window with end <= W: its row written once (the worker's own
                merge, or merged here from every partition's states), its states dropped
    update      the states of windows with end <= W dropped
    expiry      windowed stateTimeout: tombstones of closed windows dropped; idle
                (key, window)s replaced by tombstones (append: their rows written once)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from streamproc.engine import QuerySpec, ResultRow
from streamproc.sinks.base import (
    CheckpointConflictError,
    ClosingWindowsError,
    ResultSink,
)
from streamproc.sinks.commit_checks import expiry_bounds
from streamproc.sinks.commit_plan import ClosingStep
from streamproc.sinks.layout import POSITIONS_TABLE, QUERIES_TABLE, STATE_TABLE, quote_ident
from streamproc.sinks.postgres_errors import port_error
from streamproc.sinks.postgres_expiry import (
    drop_closed_tombstones,
    expire_idle,
    tombstone,
)
from streamproc.sinks.postgres_state import merge_rows

_POSITIONS = quote_ident(POSITIONS_TABLE)
_QUERIES = quote_ident(QUERIES_TABLE)
_STATE = quote_ident(STATE_TABLE)


@dataclass(slots=True)
class StateTally:
    """State rows a transaction inserted and deleted (for the progress row's total)."""

    inserted: int = 0
    deleted: int = 0

    @property
    def delta(self) -> int:
        """The change of the query's state rows."""
        return self.inserted - self.deleted


@dataclass(frozen=True, slots=True)
class Closer:
    """What closing needs to know of the query."""

    query: str
    spec: QuerySpec
    sink: ResultSink
    expires_windows: bool = False
    partitions: list[int] = field(default_factory=list)

    @property
    def size_ms(self) -> int:
        """The window size (only windowed queries close windows)."""
        window = self.spec.window
        assert window is not None
        return window.size_ms


async def candidate_watermark(
    conn: Any, query: str, topic_partitions: int, idle_timeout_ms: int | None
) -> int | None:
    """min over the topic's partitions of their watermarks, as the positions stand (or None).

    A partition with no position holds W back, unless idleTimeout is set and the
    position is older than it.
    """
    rows = await conn.fetch(
        f"""SELECT watermark_ms, extract(epoch from now() - committed_at) * 1000 AS age_ms
            FROM {_POSITIONS} WHERE query = $1""",
        query,
    )
    marks: list[int] = []
    if len(rows) < topic_partitions and idle_timeout_ms is None:
        return None
    for r in rows:
        if idle_timeout_ms is not None and float(r["age_ms"]) > idle_timeout_ms:
            continue
        if r["watermark_ms"] is None:
            return None
        marks.append(r["watermark_ms"])
    return min(marks) if marks else None


async def advance_watermark(
    conn: Any, query: str, current: int | None, stored: int | None
) -> int | None:
    """W after this step: the candidate when it is ahead of the stored W (stored then)."""
    if current is None or (stored is not None and current <= stored):
        return stored
    await conn.execute(
        f"UPDATE {_QUERIES} SET global_watermark_ms = $2 WHERE query = $1", query, current
    )
    return current


async def close(
    conn: Any,
    closer: Closer,
    step: ClosingStep,
    watermark: int,
    stored_w: int | None,
    tally: StateTally,
    encoded_local: Any = None,
) -> tuple[int, int]:
    """Close what W closes, per the plan's closing step; (rows written, windows closed)."""
    written = closed = 0
    if step.kind == "append":
        written = closed = await _close_windows(
            conn, closer, watermark, step.local_rows, encoded_local, tally
        )
    elif step.kind == "evict":
        closed = await _evict_closed(conn, closer, watermark)
        tally.deleted += closed
    if step.expiry != "none":
        expired = await _expire(conn, closer, step, watermark, stored_w, tally)
        written += expired
        closed += expired
    return written, closed


async def _close_windows(
    conn: Any,
    closer: Closer,
    watermark_ms: int,
    local_rows: Sequence[ResultRow] | None,
    encoded: Any,
    tally: StateTally,
) -> int:
    """Append mode: write every window with end <= W once, then drop its states.

    The rows are the worker's own merge when it closes windows itself, else merged
    here from every partition's stored states. A window row already in the table
    means something else wrote it (its states are only ever closed once): the
    query stops rather than drop this one's contribution.
    """
    if local_rows is not None:
        tally.deleted += await _evict_closed(conn, closer, watermark_ms)
        return await write_final(conn, closer, list(local_rows), encoded)
    rows = await conn.fetch(
        f"""DELETE FROM {_STATE}
            WHERE query = $1 AND partition = ANY($3::int[]) AND window_start_ms <= $2
            RETURNING key, window_start_ms, window_end_ms, state, partition""",
        closer.query,
        watermark_ms - closer.size_ms,
        closer.partitions,
    )
    tally.deleted += len(rows)
    merged = merge_rows(closer.spec, sorted(rows, key=lambda r: r["partition"]))
    return await write_final(conn, closer, merged)


async def write_final(
    conn: Any, closer: Closer, merged: list[ResultRow], encoded: Any = None
) -> int:
    """Insert the rows of windows that are final (closed, or expired): each once."""
    try:
        written = await closer.sink.write(conn, merged, insert_only=True, encoded=encoded)
    except Exception as exc:
        # The sink's own client-side error, in the ports' terms (an outage or not).
        raise ClosingWindowsError(port_error(exc), len(merged)) from exc
    if written < len(merged):
        raise CheckpointConflictError(
            f"query {closer.query}: {len(merged) - written} closing window row(s) were "
            "already in the result table, which only this query may write; nothing of "
            "the batch was written"
        )
    return len(merged)


async def _evict_closed(conn: Any, closer: Closer, watermark_ms: int) -> int:
    """States of windows with end <= W can never change again: drop them.

    By window start (end - size), partition by partition: a range of the index.
    """
    status: str = await conn.execute(
        f"""DELETE FROM {_STATE}
            WHERE query = $1 AND partition = ANY($3::int[]) AND window_start_ms <= $2""",
        closer.query,
        watermark_ms - closer.size_ms,
        closer.partitions,
    )
    return int(status.split()[-1])


async def _expire(
    conn: Any,
    closer: Closer,
    step: ClosingStep,
    watermark: int,
    stored_w: int | None,
    tally: StateTally,
) -> int:
    """Windowed stateTimeout: tombstones for expired (key, window)s; rows written.

    Tombstones of closed windows go first. A worker that closes windows itself names
    what its engine expired (append rows among its local rows); else the (key,
    window)s idle over all partitions are found here and, in append mode, their rows
    merged from every partition's partials and written once.
    """
    size = closer.size_ms
    parts = closer.partitions
    tally.deleted += await drop_closed_tombstones(conn, closer.query, watermark, size)
    if step.expiry == "given":
        gone, marked = await tombstone(conn, closer.query, parts, step.expired, size)
        tally.deleted += gone
        tally.inserted += marked
        return 0
    bounds = expiry_bounds(closer.spec, watermark, stored_w)
    if bounds is None:
        return 0
    rows, marked = await expire_idle(conn, closer.query, parts, *bounds)
    tally.deleted += len(rows)
    tally.inserted += marked
    if closer.spec.output_mode != "append" or not rows:
        return 0
    return await write_final(conn, closer, merge_rows(closer.spec, rows))

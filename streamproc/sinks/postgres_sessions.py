"""Session windows in PostgreSQL: the rows that moved deleted, closed sessions and fences.

A session batch comes from a worker that owns every partition and closes sessions
itself (`commit_plan`, `session_commit`): its state-row upserts and deletes are the
batch's states and evictions, applied as for windows. What is particular to sessions:

    rows      update, complete: the rows of sessions that moved or merged deleted,
              then the batch's rows upserted, in the same transaction
    closing   append: the closed sessions' rows inserted once; append, update: each
              closed session kept as a fence (a row of partition -1 with an empty
              state) until W passes its end + gap, when it is deleted
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from streamproc.engine import QuerySpec, ResultRow, WindowKey
from streamproc.sinks.base import CheckpointError, ResultSink
from streamproc.sinks.commit_plan import ClosingStep
from streamproc.sinks.layout import STATE_TABLE, TOMBSTONE_PARTITION, quote_ident
from streamproc.sinks.postgres_closing import Closer, StateTally, write_final
from streamproc.sinks.rows import encode_key, encode_state
from streamproc.sinks.session_commit import FENCE_STATE

_STATE = quote_ident(STATE_TABLE)


async def replace_rows(
    conn: Any,
    sink: ResultSink,
    query: str,
    deleted: Sequence[WindowKey],
    rows: Sequence[ResultRow],
    encoded: Any,
) -> int:
    """Delete the rows of sessions that no longer exist, then upsert the batch's rows."""
    if deleted:
        delete = getattr(sink, "delete_rows", None)
        if delete is None:
            raise CheckpointError(
                f"query {query}: its sink cannot delete the rows of sessions that moved or "
                "merged (update and complete mode need a postgresql table); nothing of the "
                "batch was written"
            )
        await delete(conn, deleted)
    return await sink.write(conn, rows, insert_only=False, encoded=encoded)


async def keep_fences(
    conn: Any, query: str, closing: ClosingStep, watermark_ms: int | None
) -> tuple[int, int]:
    """Fences of the sessions closed now written, those W passed by a gap deleted.

    Returns:
        (fence rows inserted, fence rows deleted), for the state total.
    """
    inserted = deleted = 0
    if closing.fences and closing.closed:
        status: str = await conn.execute(
            f"""INSERT INTO {_STATE} (query, partition, key, window_start_ms, window_end_ms, state)
                SELECT $1, $2, k, ws, we, $6
                FROM unnest($3::bytea[], $4::bigint[], $5::bigint[]) AS f(k, ws, we)
                ON CONFLICT (query, partition, window_start_ms, key)
                DO UPDATE SET window_end_ms = EXCLUDED.window_end_ms""",
            query,
            TOMBSTONE_PARTITION,
            [encode_key(key) for key, _, _ in closing.closed],
            [start for _, start, _ in closing.closed],
            [end for _, _, end in closing.closed],
            encode_state(FENCE_STATE),
        )
        inserted = int(status.split()[-1])
    if watermark_ms is not None and closing.fences:
        status = await conn.execute(
            f"""DELETE FROM {_STATE} WHERE query = $1 AND partition = $2
                AND window_end_ms <= $3""",
            query,
            TOMBSTONE_PARTITION,
            watermark_ms - closing.gap_ms,
        )
        deleted = int(status.split()[-1])
    return inserted, deleted


async def close_sessions(
    conn: Any,
    query: str,
    spec: QuerySpec,
    sink: ResultSink,
    closing: ClosingStep,
    watermark_ms: int | None,
    tally: StateTally,
    encoded: Any,
) -> tuple[int, int]:
    """Sessions the worker closed: fences kept and expired, append rows inserted once.

    Returns:
        (rows written, sessions closed).
    """
    inserted, deleted = await keep_fences(conn, query, closing, watermark_ms)
    tally.inserted += inserted
    tally.deleted += deleted
    written = 0
    if closing.local_rows:
        closer = Closer(query, spec, sink)
        written = await write_final(conn, closer, list(closing.local_rows), encoded)
    return written, len(closing.closed)

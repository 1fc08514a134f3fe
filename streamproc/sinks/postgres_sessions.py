"""Session windows in PostgreSQL: the rows that moved deleted, closed sessions and fences.

A session batch comes from a worker that owns every partition and closes sessions
itself (`commit_plan`, `session_commit`): its state-row upserts and deletes are the
batch's states and evictions, applied as for windows. What is particular to sessions:

    rows      update, complete: the rows of sessions that moved or merged deleted,
              then the batch's rows upserted, in the same transaction
    closing   append: the closed sessions' rows inserted once; append, update: each
              closed session kept as a fence (a row of partition -1 with an empty
              state) until W passes its end + gap, when it is deleted
    index     a session query's state rows are read by key (every partition's) when
              several workers merge them: a partial index of the state table on the
              query's rows only serves those reads (`ensure_session_index`, made
              before the query's first such merge; other queries' writes never touch
              it). Its statements name the query as a literal, so that the planner
              can use an index whose predicate names it. No index by end: it would
              make every state update (a session's end moves) a non-HOT one; closing
              by W over several workers reads the query's state rows once per move
              of W instead.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import asyncpg

from streamproc.config.names import quote_literal
from streamproc.engine import PartialRow, QuerySpec, ResultRow, WindowKey
from streamproc.engine.aggregates import plan_for
from streamproc.sinks.base import CheckpointError, ResultSink
from streamproc.sinks.commit_plan import ClosingStep, RowsStep
from streamproc.sinks.layout import STATE_TABLE, TOMBSTONE_PARTITION, quote_ident
from streamproc.sinks.postgres_closing import Closer, StateTally, write_final
from streamproc.sinks.rows import decode_key, decode_state, encode_key, encode_state
from streamproc.sinks.session_commit import FENCE_STATE
from streamproc.sinks.session_merge import (
    Chained,
    Span,
    Stored,
    chained_bounds,
    conflicts,
    newly_closed,
    row_changes,
)
from streamproc.sinks.session_merge import closing as merged_closing

log = logging.getLogger(__name__)
_STATE = quote_ident(STATE_TABLE)
#: No lower bound on a closing session's end (append, update: every one W passed).
_NO_LOWER = -(2**62)


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
    if watermark_ms is not None:
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
    local: bool,
) -> tuple[int, int]:
    """Sessions closed: fences kept and expired, append rows inserted once.

    A worker that closes sessions itself names them; else W closes here the chains of
    every partition's state rows with end <= W.

    Returns:
        (rows written, sessions closed).
    """
    if not local and watermark_ms is not None:
        closing = await close_merged(conn, query, spec, closing, watermark_ms)
        tally.deleted += closing.gone
    inserted, deleted = await keep_fences(conn, query, closing, watermark_ms)
    tally.inserted += inserted
    tally.deleted += deleted
    written = 0
    if closing.local_rows:
        closer = Closer(query, spec, sink)
        encoded = encoded if local else None
        written = await write_final(conn, closer, list(closing.local_rows), encoded)
    return written, len(closing.closed)


def session_index_name(query: str) -> str:
    """The name of a session query's partial index of the state table (<= 63 bytes)."""
    return f"streamproc_state_sk_{hashlib.sha1(query.encode()).hexdigest()[:16]}"


async def ensure_session_index(conn: Any, query: str) -> None:
    """Create the query's partial index of the state table (by key) when missing.

    Inside the caller's transaction, under its DDL lock (a short one of its own:
    building the index holds back every query's writes of state rows). Looked up
    first: `CREATE INDEX IF NOT EXISTS` would lock the state table against every
    query's writes even when the index exists. A user who may write the state table
    but does not own it cannot index it: the query runs without (merges over several
    workers then read the query's state rows whole), and a warning says so.
    """
    name = session_index_name(query)
    if await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", name):
        return
    try:
        async with conn.transaction():  # a savepoint: a refusal leaves the rest standing
            await conn.execute(
                f"CREATE INDEX IF NOT EXISTS {name} ON {_STATE} (key) "
                f"WHERE query = {quote_literal(query)}"
            )
    except asyncpg.InsufficientPrivilegeError as exc:
        log.warning(
            "query %s: cannot index its session state rows (%s); it runs without the "
            "index: merging sessions over several workers reads every state row of the query",
            query,
            exc,
        )


async def drop_session_index(conn: Any, query: str) -> None:
    """Drop a session query's index of the state table (its reset), if it has one."""
    name = session_index_name(query)
    if await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", name):
        await conn.execute(f"DROP INDEX IF EXISTS {name}")


def read_sessions_sql(query: str, *, states: bool = True) -> str:
    """Every stored row of the encoded keys $1 (the query's index by key serves it);
    without `states`, their bounds only."""
    state = ", state" if states else ""
    return f"""SELECT partition, key, window_start_ms, window_end_ms{state} FROM {_STATE}
               WHERE query = {quote_literal(query)} AND key = ANY($1::bytea[]) ORDER BY partition"""


async def read_sessions(conn: Any, query: str, keys: Sequence[bytes]) -> list[Stored]:
    """Every stored row (partials of every partition, fences) of these encoded keys."""
    rows = await conn.fetch(read_sessions_sql(query), list(keys))
    return [
        (
            r["partition"],
            PartialRow(
                decode_key(r["key"]),
                r["window_start_ms"],
                r["window_end_ms"],
                decode_state(r["state"]),
            ),
        )
        for r in rows
    ]


async def read_spans(conn: Any, query: str, keys: Sequence[bytes]) -> list[Span]:
    """The bounds of every stored row of these encoded keys (states are not read)."""
    rows = await conn.fetch(read_sessions_sql(query, states=False), list(keys))
    decoded: dict[bytes, tuple[tuple[Any, ...], bytes]] = {}
    out: list[Span] = []
    for r in rows:
        found = decoded.get(r["key"])
        if found is None:
            values = tuple(decode_key(r["key"]))
            # Compared as the rows after are: the encoding of the decoded values.
            found = decoded[r["key"]] = (values, encode_key(values))
        out.append((r["partition"], found[1], found[0], r["window_start_ms"], r["window_end_ms"]))
    return out


async def read_before(
    conn: Any, query: str, spec: QuerySpec, step: RowsStep
) -> tuple[list[bytes], Chained]:
    """The encoded keys a batch not closed by its worker touched, and their merged
    sessions before the batch (none needed in append mode: its rows are written at
    closing). Under the query's merge lock, taken by the caller."""
    keys = sorted({encode_key(key) for key, _ in step.touched})
    if spec.output_mode == "append":
        return keys, {}
    return keys, chained_bounds(await read_spans(conn, query, keys))


async def merge_touched(
    conn: Any,
    query: str,
    spec: QuerySpec,
    sink: ResultSink,
    keys: Sequence[bytes],
    before: Chained,
    written: Mapping[int, Sequence[PartialRow]],
) -> int | None:
    """The touched keys' rows made the chains of every partition's state rows (update,
    complete; the batch's states applied). Returns rows written, None: stale."""
    after = await read_sessions(conn, query, keys)
    if conflicts(after, [(p, r) for p, rows in written.items() for r in rows]):
        return None
    if spec.output_mode == "append":
        return 0
    changes = row_changes(spec, before, after)
    return await replace_rows(conn, sink, query, changes.deleted, changes.upserted, None)


async def close_merged(
    conn: Any, query: str, spec: QuerySpec, closing: ClosingStep, watermark_ms: int
) -> ClosingStep:
    """Sessions W closes over every partition's state rows: their state rows deleted
    (append, update), named in the step, with their rows in append mode; complete mode
    keeps them and names those that closed within a gap of W (fences)."""
    complete = spec.output_mode == "complete"
    keys = await conn.fetch(
        f"""SELECT DISTINCT key FROM {_STATE}
            WHERE query = $1 AND partition >= 0 AND window_end_ms <= $2
              AND window_end_ms > $3""",
        query,
        watermark_ms,
        watermark_ms - closing.gap_ms if complete else _NO_LOWER,
    )
    if not keys:
        return replace(closing, closed=())
    stored = [s for s in await read_sessions(conn, query, [k["key"] for k in keys]) if s[0] >= 0]
    if complete:  # kept in state; fenced for rule (b)
        found = newly_closed(spec, stored, watermark_ms, closing.gap_ms)
        return replace(closing, closed=[(m.key, m.start_ms, m.end_ms) for m in found])
    closed, parts = merged_closing(spec, stored, watermark_ms)
    await conn.execute(
        f"""DELETE FROM {_STATE} s
            USING unnest($2::int[], $3::bytea[], $4::bigint[]) AS d(p, k, ws)
            WHERE s.query = $1 AND s.partition = d.p AND s.key = d.k
              AND s.window_start_ms = d.ws""",
        query,
        [p for p, _ in parts],
        [encode_key(key) for _, (key, _, _) in parts],
        [start for _, (_, start, _) in parts],
    )
    finalize = plan_for(spec).finalize
    rows = [ResultRow(m.key, m.start_ms, m.end_ms, finalize(list(m.state))) for m in closed]
    return replace(
        closing,
        closed=[(m.key, m.start_ms, m.end_ms) for m in closed],
        local_rows=rows if spec.output_mode == "append" else None,
        gone=len(parts),
    )

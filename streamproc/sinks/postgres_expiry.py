"""Windowed stateTimeout in PostgreSQL: tombstones, the stale check, and expiry.

An expired (key, window) keeps one row in `streamproc_state`, under partition -1
(`TOMBSTONE_PARTITION`), with the empty state: its tombstone. It replaces the
partials of every partition, is loaded with every partition's partials (a record
of any partition for that (key, window) is late, "state expired"), and goes when
W passes the window's end, with the closing of the window (its row, if any, was
written when it expired).

Idle (key, window)s are found from `touched_ms`, the max event time of each
partial's records (the state bytes cannot be queried): a (key, window) is idle
when the max over its partitions' rows is the timeout or more behind W. All
statements run inside the commit's transaction, under the query's lock.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from streamproc.engine import EXPIRED_STATE, WindowKey
from streamproc.sinks.layout import (
    STAGE_KEYS,
    STAGE_STATES,
    STATE_TABLE,
    STATE_TOUCHED_COLUMN,
    TOMBSTONE_PARTITION,
    quote_ident,
)
from streamproc.sinks.rows import encode_key, encode_state

_STATE = quote_ident(STATE_TABLE)
#: The stored state of a tombstone.
TOMBSTONE_STATE = encode_state(EXPIRED_STATE)


async def ensure_touched_column(conn: Any) -> None:
    """Add `touched_ms` to a state table made before it existed (once; no lock otherwise)."""
    present = await conn.fetchval(
        """SELECT EXISTS (SELECT 1 FROM pg_attribute
                          WHERE attrelid = to_regclass($1) AND attname = $2
                            AND NOT attisdropped)""",
        STATE_TABLE,
        STATE_TOUCHED_COLUMN,
    )
    if not present:
        await conn.execute(
            f"ALTER TABLE {_STATE} ADD COLUMN IF NOT EXISTS {STATE_TOUCHED_COLUMN} bigint"
        )


async def hits_tombstone(conn: Any, query: str) -> bool:
    """True when a partial staged by this commit is of an expired (key, window).

    Its worker had not seen the tombstone (another commit made it after the
    worker restored its state): the batch is stale, and its replay, with the
    tombstones restored, finds those records late instead of starting afresh.
    One index probe per staged partial.
    """
    found: bool = await conn.fetchval(
        f"""SELECT EXISTS (
              SELECT 1 FROM {STAGE_STATES} t
              JOIN {_STATE} s ON s.query = $1 AND s.partition = {TOMBSTONE_PARTITION}
                AND s.window_start_ms = t.window_start_ms AND s.key = t.key)""",
        query,
    )
    return found


async def expire_idle(
    conn: Any, query: str, partitions: list[int], low: int, high: int
) -> tuple[list[Any], int]:
    """Replace every idle (key, window) by its tombstone; return its deleted partials.

    Idle: its window starts in (low, high] (open, and able to hold activity <= high)
    and the max `touched_ms` over its partitions' rows is <= high (W - timeout). The
    scan reads the rows of those windows (a primary-key range per partition); the
    deletes are one index probe per (key, window) and partition.

    Returns:
        The deleted partials (partition, key, window_start_ms, window_end_ms, state),
        in partition order, and the number of tombstones inserted.
    """
    rows = await conn.fetch(
        f"""WITH idle AS (
              SELECT key, window_start_ms FROM {_STATE}
              WHERE query = $1 AND partition = ANY($2::int[])
                AND window_start_ms > $3 AND window_start_ms <= $4
              GROUP BY key, window_start_ms
              HAVING max(touched_ms) <= $4),
            gone AS (
              DELETE FROM {_STATE} s USING idle i, unnest($2::int[]) AS p(partition)
              WHERE s.query = $1 AND s.partition = p.partition
                AND s.window_start_ms = i.window_start_ms AND s.key = i.key
              RETURNING s.partition, s.key, s.window_start_ms, s.window_end_ms, s.state),
            marked AS (
              INSERT INTO {_STATE} (query, partition, key, window_start_ms, window_end_ms, state)
              SELECT DISTINCT $1, {TOMBSTONE_PARTITION}, key, window_start_ms, window_end_ms,
                     $5::bytea
              FROM gone
              ON CONFLICT DO NOTHING RETURNING 1)
            SELECT g.*, (SELECT count(*) FROM marked) AS marked FROM gone g
            ORDER BY g.partition""",
        query,
        partitions,
        low,
        high,
        TOMBSTONE_STATE,
    )
    return list(rows), (int(rows[0]["marked"]) if rows else 0)


async def tombstone(
    conn: Any, query: str, partitions: list[int], expired: Sequence[WindowKey], size_ms: int
) -> tuple[int, int]:
    """Replace the partials of (key, window)s a worker expired by tombstones.

    Returns:
        Partials deleted, tombstones inserted.
    """
    if not expired:
        return 0, 0
    records = [(0, encode_key(key), start) for key, start, _end in expired if start is not None]
    await conn.copy_records_to_table(STAGE_KEYS, records=records)
    counts = await conn.fetchrow(
        f"""WITH gone AS (
              DELETE FROM {_STATE} s USING {STAGE_KEYS} d, unnest($2::int[]) AS p(partition)
              WHERE s.query = $1 AND s.partition = p.partition
                AND s.window_start_ms = d.window_start_ms AND s.key = d.key
              RETURNING 1),
            marked AS (
              INSERT INTO {_STATE} (query, partition, key, window_start_ms, window_end_ms, state)
              SELECT $1, {TOMBSTONE_PARTITION}, key, window_start_ms, window_start_ms + $3,
                     $4::bytea
              FROM {STAGE_KEYS}
              ON CONFLICT DO NOTHING RETURNING 1)
            SELECT (SELECT count(*) FROM gone) AS gone, (SELECT count(*) FROM marked) AS marked""",
        query,
        partitions,
        size_ms,
        TOMBSTONE_STATE,
    )
    await conn.execute(f"TRUNCATE {STAGE_KEYS}")
    return int(counts["gone"]), int(counts["marked"])


async def drop_closed_tombstones(conn: Any, query: str, watermark_ms: int, size_ms: int) -> int:
    """Tombstones of windows with end <= W go (a range of the index); returns how many."""
    status: str = await conn.execute(
        f"""DELETE FROM {_STATE}
            WHERE query = $1 AND partition = {TOMBSTONE_PARTITION} AND window_start_ms <= $2""",
        query,
        watermark_ms - size_ms,
    )
    return int(status.split()[-1])

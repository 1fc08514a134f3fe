"""The progress table in PostgreSQL: one statement per commit, inside its transaction.

    last_progress      the query's newest row (seq, state rows total), read with W
                       by the statement the commit already makes
    insert_progress    the new row, the state total, and the prune of rows past
                       PROGRESS_KEEP: one statement

The state rows total is carried from row to row: the previous total plus the
states this transaction inserted minus those it deleted. A query with no row
yet (its first commit, or a checkpoint older than the table) counts its
states once instead.
"""

from __future__ import annotations

from typing import Any

from streamproc.sinks.layout import PROGRESS_TABLE, STATE_TABLE, quote_ident
from streamproc.sinks.progress_rows import PROGRESS_KEEP, ProgressRow
from streamproc.sinks.rows import ms_to_datetime

_PROGRESS = quote_ident(PROGRESS_TABLE)

#: Joined to the registry's row: the query's newest progress row, by the primary key.
LAST_PROGRESS_SQL = f"""LEFT JOIN LATERAL (
    SELECT seq, state_rows_total FROM {_PROGRESS}
    WHERE query = $1 ORDER BY seq DESC LIMIT 1) last_progress ON true"""

_INSERT_SQL = f"""
WITH added AS (
  INSERT INTO {_PROGRESS}
    (query, seq, pipeline, batch_id, worker, partitions, input_rows, aggregated, late, bad,
     filtered, dead_lettered, sink_rows, state_rows_updated, state_rows_total,
     min_event_time, max_event_time, watermark, input_rows_per_second,
     processed_rows_per_second, duration_ms, sources, breaker, breaker_opened, retries)
  VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14,
          coalesce($15::bigint, (SELECT count(*) FROM {quote_ident(STATE_TABLE)} WHERE query = $1)),
          $16, $17, $18, $19, $20, $21::jsonb, $22::jsonb, $23, $24, $25)
  RETURNING state_rows_total
), pruned AS (
  DELETE FROM {_PROGRESS} WHERE query = $1 AND seq <= $2 - $26::bigint
)
SELECT state_rows_total FROM added"""


async def insert_progress(
    conn: Any,
    query: str,
    row: ProgressRow,
    *,
    last_seq: int | None,
    state_total: int | None,
    keep: int = PROGRESS_KEEP,
) -> int:
    """Write a commit's progress row and prune the oldest; returns the state rows total.

    Args:
        conn: The commit's connection, inside its transaction (holding the query's lock).
        query: The query name.
        row: The row.
        last_seq: The query's newest row's seq (None: no row yet).
        state_total: The state rows total after this commit, carried from the
            newest row; None to count the query's states instead.
        keep: Rows to keep per query (this one included).
    """
    total: int = await conn.fetchval(
        _INSERT_SQL,
        query,
        (last_seq or 0) + 1,
        row.pipeline_id,
        row.batch_number,
        row.worker,
        row.partitions,
        row.input_rows,
        row.aggregated,
        row.late,
        row.bad,
        row.filtered,
        row.dead_lettered,
        row.sink_rows,
        row.state_rows_updated,
        state_total,
        ms_to_datetime(row.min_event_ts_ms),
        ms_to_datetime(row.max_event_ts_ms),
        ms_to_datetime(row.watermark_ms),
        row.input_rows_per_second,
        row.processed_rows_per_second,
        row.duration_json(),
        row.sources_json(),
        row.breaker_state,
        row.breaker_opened,
        row.retries,
        keep,
    )
    return total

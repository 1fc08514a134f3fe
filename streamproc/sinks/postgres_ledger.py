"""A commit's side rows in PostgreSQL: late rows, ledger rows and positions.

Every statement runs inside the commit's transaction (`postgres_commit`): the
rows land with the batch's results or not at all.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from streamproc.sinks.base import LateRow, PartitionCommit, batch_id
from streamproc.sinks.layout import LEDGER_TABLE, POSITIONS_TABLE, quote_ident
from streamproc.sinks.rows import ms_to_datetime, to_json

_LEDGER = quote_ident(LEDGER_TABLE)
_POSITIONS = quote_ident(POSITIONS_TABLE)


async def insert_late_rows(
    conn: Any, query: str, topic: str, table: str | None, late_rows: Sequence[LateRow]
) -> None:
    """Late rows (separatestream); a position already in the table is left as it is."""
    if not late_rows or not table:
        return
    await conn.executemany(
        f"""INSERT INTO {quote_ident(table)}
              (query, source_topic, source_partition, source_offset, event_time, watermark,
               reason, record)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb)
            ON CONFLICT (query, source_topic, source_partition, source_offset) DO NOTHING""",
        [
            (
                query,
                topic,
                r.partition,
                r.offset,
                ms_to_datetime(r.event_ts_ms),
                ms_to_datetime(r.watermark_ms),
                r.reason,
                to_json(r.record),
            )
            for r in late_rows
        ],
    )


async def insert_ledger_rows(
    conn: Any, query: str, topic: str, partitions: Sequence[PartitionCommit]
) -> None:
    """One ledger row per carried partition: the history of its positions."""
    if not partitions:
        return
    await conn.executemany(
        f"""INSERT INTO {_LEDGER}
              (query, topic, partition, start_offset, next_offset, batch_id, records,
               aggregated, late, bad, filtered, max_event_time, watermark, dead_lettered,
               error)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)""",
        [
            (
                query,
                topic,
                p.partition,
                p.start_offset,
                p.next_offset,
                batch_id(query, topic, p.partition, p.start_offset, p.next_offset),
                p.records,
                p.aggregated,
                p.late,
                p.bad,
                p.filtered,
                ms_to_datetime(p.max_event_ts_ms),
                ms_to_datetime(p.watermark_ms),
                p.dead_lettered,
                p.error,
            )
            for p in partitions
        ],
    )


async def upsert_positions(
    conn: Any, query: str, topic: str, partitions: Sequence[PartitionCommit]
) -> None:
    """Where each carried partition resumes, with its watermark and last record's digest."""
    if not partitions:
        return
    await conn.executemany(
        f"""INSERT INTO {_POSITIONS}
              (query, partition, topic, next_offset, batch_id, max_event_time_ms,
               watermark_ms, last_record, committed_at)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, now())
            ON CONFLICT (query, partition) DO UPDATE SET
              topic = EXCLUDED.topic, next_offset = EXCLUDED.next_offset,
              batch_id = EXCLUDED.batch_id, max_event_time_ms = EXCLUDED.max_event_time_ms,
              watermark_ms = EXCLUDED.watermark_ms, last_record = EXCLUDED.last_record,
              committed_at = now()""",
        [
            (
                query,
                p.partition,
                topic,
                p.next_offset,
                batch_id(query, topic, p.partition, p.start_offset, p.next_offset),
                p.max_event_ts_ms,
                p.watermark_ms,
                p.last_record,
            )
            for p in partitions
        ],
    )

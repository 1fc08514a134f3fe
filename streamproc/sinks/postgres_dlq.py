"""The dead-letter table (dlqType postgresql): the insert, inside a caller's transaction.

One row per dead record: its raw key and value bytes, why it is dead, where it
was read (source topic, partition, offset), the batch that dead-lettered it
and when. Rows are unique on (query, source topic, partition, offset), and an
insert of a position already there does nothing: a replayed batch, or a
rerun of a batch job over the same input, never doubles a row. Streaming
queries write it in their checkpoint transaction, batch jobs in their one
load transaction, so it holds exactly what committed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from streamproc.sinks.base import DeadLetterRow
from streamproc.sinks.layout import quote_ident


def storable_text(text: str) -> str:
    """Text PostgreSQL can store: a reason may quote the record (a NUL, a lone surrogate)."""
    return text.replace("\x00", "\\x00").encode("utf-8", "replace").decode("utf-8")


async def insert_dead_letters(
    conn: Any,
    table: str,
    *,
    query: str,
    topic: str,
    rows: Sequence[DeadLetterRow],
    batch_of: Callable[[int], str],
) -> None:
    """Insert dead letters (a position already in the table is left as it is).

    Args:
        batch_of: The batch id of a partition's share of the commit.
    """
    if not rows:
        return
    await conn.executemany(
        f"""INSERT INTO {quote_ident(table)}
              (query, source_topic, source_partition, source_offset, record_key, record_value,
               reason, error, batch_id)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
            ON CONFLICT (query, source_topic, source_partition, source_offset) DO NOTHING""",
        [
            (
                query,
                r.source or topic,
                r.partition,
                r.offset,
                r.key,
                r.value,
                storable_text(r.reason),
                None if r.error is None else storable_text(r.error),
                batch_of(r.partition),
            )
            for r in rows
        ],
    )

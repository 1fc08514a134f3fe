"""Reading what a query left in PostgreSQL: its result table, late table, partials, ledger.

Tables come back keyed like the model's (`tests.reference.Outcome.table`), so that they
compare row by row with it.
"""

from __future__ import annotations

import json
from typing import Any

from streamproc.sinks.layout import quote_ident
from streamproc.sinks.rows import datetime_to_ms, decode_key, decode_state
from tests.reference import Query


async def read_table(
    pg: Any, table: str, query: Query, *, sessions: bool = False
) -> dict[tuple[Any, ...], tuple[Any, ...]]:
    """A (possibly schema-qualified) result table as {(*key, window start ms, end ms): values}.

    Args:
        pg: An asyncpg connection.
        table: The result table.
        query: The query that writes it (its group-by, window and aggregates).
        sessions: The query has session windows (the model's `Query` has no gap field):
            the rows have window bounds although `query.size_ms` is None.

    Returns:
        The rows; (None, None) for the window of a non-windowed query.
    """
    rows = await pg.fetch(f"SELECT * FROM {quote_ident(table)}")
    out: dict[tuple[Any, ...], tuple[Any, ...]] = {}
    for r in rows:
        key = tuple(r[c] for c in query.group_by)
        if query.size_ms or sessions:
            key += (datetime_to_ms(r["window_start"]), datetime_to_ms(r["window_end"]))
        else:
            key += (None, None)
        values = []
        for out_name, _col, func in query.aggregations:
            v = r[out_name]
            if func in ("first", "last") and v is not None:
                v = json.loads(v)
            values.append(v)
        out[key] = tuple(values)
    return out


async def read_late_table(pg: Any, table: str, query: str) -> dict[tuple[int, int], Any]:
    """A separatestream table as {(partition, offset): (event ms, watermark ms, reason, record)}.

    Args:
        pg: An asyncpg connection.
        table: The late table.
        query: The query name whose rows to read.

    Returns:
        The rows, comparable with `tests.reference.Outcome.late`.
    """
    rows = await pg.fetch(
        f"""SELECT source_partition, source_offset, event_time, watermark, reason,
                   record::text AS record
            FROM {quote_ident(table)} WHERE query = $1""",
        query,
    )
    return {
        (r["source_partition"], r["source_offset"]): (
            datetime_to_ms(r["event_time"]),
            datetime_to_ms(r["watermark"]),
            r["reason"],
            json.loads(r["record"]),
        )
        for r in rows
    }


async def read_partials(pg: Any, query: str) -> dict[tuple[Any, ...], Any]:
    """The query's partial states as {(partition, key, window start, end): state}.

    Args:
        pg: An asyncpg connection.
        query: The query name.

    Returns:
        The decoded partials (the working state a restore starts from).
    """
    rows = await pg.fetch(
        """SELECT partition, key, window_start_ms, window_end_ms, state
           FROM streamproc_state WHERE query = $1""",
        query,
    )
    return {
        (r["partition"], decode_key(r["key"]), r["window_start_ms"], r["window_end_ms"]): (
            decode_state(r["state"])
        )
        for r in rows
    }


async def ledger_records(pg: Any, query: str) -> int:
    """Records a query committed so far (its progress); 0 before any worker started.

    Args:
        pg: An asyncpg connection.
        query: The query name.

    Returns:
        The sum of `records` over the query's ledger rows.
    """
    if not await pg.fetchval("SELECT to_regclass('streamproc_ledger') IS NOT NULL"):
        return 0
    n = await pg.fetchval(
        "SELECT coalesce(sum(records), 0) FROM streamproc_ledger WHERE query = $1", query
    )
    return int(n)

"""The result table in PostgreSQL: created when missing, checked, written in the commit.

`PostgresTableSink` is the `ResultSink` of a `postgresql` load: rows are
upserted (update and complete modes) or inserted once (append-mode windows
closing) with one `INSERT ... SELECT unnest(...)` per call, inside the
checkpoint's transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from streamproc.engine import ResultRow
from streamproc.sinks.layout import (
    ResultTableLayout,
    create_result_table_sql,
    layout_differences,
    quote_ident,
)
from streamproc.sinks.rows import key_text, ms_to_datetime, to_json

_SQL_ARRAY_TYPE = {
    "text": "text[]",
    "timestamp with time zone": "timestamptz[]",
    "bigint": "bigint[]",
    "double precision": "float8[]",
    "jsonb": "jsonb[]",
}


class IncompatibleTableError(RuntimeError):
    """An existing result table does not have the layout the query needs."""


class PostgresTableSink:
    """Result rows into one table of the checkpoint's database (a `ResultSink`)."""

    def __init__(self, layout: ResultTableLayout) -> None:
        self.layout = layout

    async def start(self) -> None:
        """Nothing to open: rows go through the checkpoint's connection."""

    async def stop(self) -> None:
        """Nothing to close."""

    async def prepare(self, tx: Any) -> None:
        """Create the table when missing; refuse an existing one that does not fit."""
        layout = self.layout
        existing = await tx.fetch(
            """SELECT a.attname AS name, format_type(a.atttypid, a.atttypmod) AS type
               FROM pg_attribute a
               WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped
               ORDER BY a.attnum""",
            quote_ident(layout.table),
        )
        if not existing:
            await tx.execute(create_result_table_sql(layout))
            return
        keys = await tx.fetch(
            """SELECT array_agg(a.attname::text ORDER BY a.attnum) AS cols
               FROM pg_index i JOIN pg_attribute a
                 ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
               WHERE i.indrelid = to_regclass($1) AND i.indisunique
               GROUP BY i.indexrelid""",
            quote_ident(layout.table),
        )
        key_sets = [list(r["cols"]) for r in keys]
        wanted = sorted(layout.key_columns)
        existing_key = next(
            (k for k in key_sets if sorted(k) == wanted), key_sets[0] if key_sets else []
        )
        diffs = layout_differences(layout, [(r["name"], r["type"]) for r in existing], existing_key)
        if diffs:
            raise IncompatibleTableError(
                f"table {layout.table} exists with an incompatible layout: "
                + "; ".join(diffs)
                + " (drop or rename it, or point load.table elsewhere)"
            )

    async def write(self, tx: Any, rows: Sequence[ResultRow], *, insert_only: bool) -> int:
        """Upsert rows, or insert them where absent (append-mode closing)."""
        if not rows:
            return 0
        layout = self.layout
        columns: list[list[Any]] = [[] for _ in layout.columns]
        json_columns = {i for i, c in enumerate(layout.columns) if c.sql_type == "jsonb"}
        for row in rows:
            i = 0
            for value in row.key:
                columns[i].append(key_text(value))
                i += 1
            if layout.windowed:
                columns[i].append(ms_to_datetime(row.window_start_ms))
                columns[i + 1].append(ms_to_datetime(row.window_end_ms))
                i += 2
            for value in row.values:
                columns[i].append(to_json(value) if i in json_columns else value)
                i += 1
        names = ", ".join(quote_ident(c.name) for c in layout.columns)
        params = ", ".join(
            f"${i + 1}::{_SQL_ARRAY_TYPE[c.sql_type]}" for i, c in enumerate(layout.columns)
        )
        conflict = ", ".join(quote_ident(c) for c in layout.key_columns)
        if not insert_only and layout.value_columns:
            action = "DO UPDATE SET " + ", ".join(
                f"{quote_ident(c)} = EXCLUDED.{quote_ident(c)}" for c in layout.value_columns
            )
        else:
            action = "DO NOTHING"
        await tx.execute(
            f"""INSERT INTO {quote_ident(layout.table)} ({names})
                SELECT * FROM unnest({params})
                ON CONFLICT ({conflict}) {action}""",
            *columns,
        )
        return len(rows)

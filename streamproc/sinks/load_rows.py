"""What a batch load writes, as pure values: one JSON document per row, and the SQL.

A batch job's load (`batch/load.py`) and the pass-through streaming sink
(`postgres_records.py`) both write rows this way, so it lives with the sinks,
below the batch package that uses it too.

Every row travels as a jsonb document and PostgreSQL turns it into the table's
row with `jsonb_populate_record`: a field goes to the column of its name,
converted to the column's type by PostgreSQL itself, so a value the column
cannot hold is refused by the server for that row alone (and reported), and
the same path serves aggregation rows and records loaded as they are.

Write modes, each inside the load's one transaction:

    append      INSERT every row
    overwrite   DELETE every row of the table, then INSERT (readers see the old
                table until the commit: DELETE, not TRUNCATE, so nothing blocks them)
    upsert      INSERT ... ON CONFLICT (upsert keys) DO UPDATE; of rows sharing a
                key in one run, the last read wins
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Literal

from streamproc.engine import ResultRow
from streamproc.sinks.layout import GROUP_KEY_TYPES, ResultTableLayout, quote_ident
from streamproc.sinks.rows import key_text, key_types, ms_to_datetime

WriteMode = Literal["append", "overwrite", "upsert"]
#: The temporary table a chunk of documents is copied into (dropped at commit).
STAGE = "streamproc_batch_stage"
#: A jsonb column of this name receives the whole record (records loaded as they are).
RECORD_COLUMN = "record"


def result_doc(layout: ResultTableLayout, row: ResultRow) -> str:
    """An aggregation's result row as the JSON document of its table row.

    Group values as the streaming sink stores them (text, JSON types in
    `group_key_types`), window bounds as ISO-8601 UTC, aggregates as they are.

    Raises:
        ValueError: a value JSON cannot carry (a non-finite number).
    """
    doc: dict[str, Any] = {c: key_text(v) for c, v in zip(layout.group_by, row.key, strict=True)}
    if layout.typed:
        doc[GROUP_KEY_TYPES] = key_types(row.key)
    if layout.windowed:
        doc["window_start"] = _iso(row.window_start_ms)
        doc["window_end"] = _iso(row.window_end_ms)
    doc.update(zip(layout.value_columns, row.values, strict=True))
    return json.dumps(doc, separators=(",", ":"), allow_nan=False)


def _iso(ms: int | None) -> str | None:
    moment = ms_to_datetime(ms)
    return None if moment is None else moment.isoformat()


def create_stage_sql() -> str:
    """DDL of the staging table: (position in the load, document)."""
    return f"CREATE TEMPORARY TABLE IF NOT EXISTS {STAGE} (seq bigint, doc jsonb) ON COMMIT DROP"


def passthrough_table_sql(table: str, upsert_keys: Sequence[str]) -> str:
    """DDL of a table created for records loaded as they are.

    The upsert keys (if any) as jsonb columns under a unique key, so that keys
    compare as group keys do: by JSON value, `1` and `"1"` apart, `1` and `1.0`
    one; then the whole record as jsonb.
    """
    columns = [f"{quote_ident(k)} jsonb" for k in upsert_keys]
    columns.append(f"{quote_ident(RECORD_COLUMN)} jsonb NOT NULL")
    if upsert_keys:
        name = table.split(".")[-1][:59] + "_key"
        keys = ", ".join(quote_ident(k) for k in upsert_keys)
        columns.append(f"CONSTRAINT {quote_ident(name)} UNIQUE NULLS NOT DISTINCT ({keys})")
    return f"CREATE TABLE IF NOT EXISTS {quote_ident(table)} (\n  " + ",\n  ".join(columns) + "\n)"


def insert_sql(
    table: str,
    columns: Sequence[str],
    mode: WriteMode,
    conflict: Sequence[str] = (),
    record_column: str | None = None,
    *,
    stage: str = STAGE,
    stage_columns: Sequence[str] = (),
) -> str:
    """The statement that moves the staged documents into the table.

    Args:
        table: the target table.
        columns: the columns written, each from the document's field of its name.
        mode: the write mode (overwrite deletes first, then inserts like append).
        conflict: upsert: the columns of the unique key rows are matched on;
            append: a row whose key is already there is left as it is.
        record_column: a column (among `columns`) that takes the whole document.
        stage: the staging table: (seq, doc, then `stage_columns`).
        stage_columns: columns (among `columns`) taken from the staging table's
            column of the same name rather than from the document.
    """
    t = quote_ident(table)

    def source(c: str) -> str:
        if c == record_column:
            return "s.doc"
        return f"s.{quote_ident(c)}" if c in stage_columns else f"r.{quote_ident(c)}"

    names = ", ".join(quote_ident(c) for c in columns)
    values = ", ".join(source(c) for c in columns)
    rows = f"FROM {stage} s CROSS JOIN LATERAL jsonb_populate_record(NULL::{t}, s.doc) r"
    if mode != "upsert":
        keep = (
            f" ON CONFLICT ({', '.join(quote_ident(c) for c in conflict)}) DO NOTHING"
            if conflict
            else ""
        )
        return f"INSERT INTO {t} ({names}) SELECT {values} {rows} ORDER BY s.seq{keep}"
    keys = ", ".join(source(c) for c in conflict)
    # One statement may not touch a row twice: of the documents sharing a key,
    # the last one staged (the last read) goes in.
    updated = [c for c in columns if c not in conflict]
    action = (
        "DO UPDATE SET "
        + ", ".join(f"{quote_ident(c)} = EXCLUDED.{quote_ident(c)}" for c in updated)
        if updated
        else "DO NOTHING"
    )
    return (
        f"INSERT INTO {t} ({names}) SELECT DISTINCT ON ({keys}) {values} {rows} "
        f"ORDER BY {keys}, s.seq DESC "
        f"ON CONFLICT ({', '.join(quote_ident(c) for c in conflict)}) {action}"
    )


def passthrough_columns(
    table_columns: Sequence[tuple[str, str]], fields: set[str], upsert_keys: Sequence[str]
) -> tuple[list[str], str | None]:
    """Which columns of an existing table a pass-through load writes.

    A column named after a field of some record (or an upsert key) is written
    from that field (NULL in rows whose record lacks it); a jsonb column named
    `record` takes the whole record; other columns keep their defaults.

    Args:
        table_columns: (name, SQL type) of the table's writable columns, in order.
        fields: every field name that occurs in the records.
        upsert_keys: the upsert keys (written even when no record has them).

    Returns:
        (columns, the whole-record column or None).
    """
    record_column = None
    columns: list[str] = []
    for name, sql_type in table_columns:
        if name == RECORD_COLUMN and sql_type == "jsonb":
            record_column = name
            columns.append(name)
        elif name in fields or name in upsert_keys:
            columns.append(name)
    return columns, record_column

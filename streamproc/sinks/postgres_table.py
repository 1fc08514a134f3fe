"""The result table in PostgreSQL: created when missing, checked, written in the commit.

`PostgresTableSink` is the `ResultSink` of a `postgresql` load: rows are
upserted (update and complete modes) or inserted once (append-mode windows
closing) with one `INSERT ... SELECT unnest(...)` per call, inside the
checkpoint's transaction. Group values are text, with their JSON types in
`group_key_types` (see `layout.result_layout`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from streamproc.engine import ResultRow, WindowKey
from streamproc.sinks.base import CheckpointError
from streamproc.sinks.layout import (
    GROUP_KEY_TYPES,
    STAGE_ROWS,
    ResultTableLayout,
    create_result_table_sql,
    create_stage_rows_sql,
    layout_differences,
    quote_ident,
)
from streamproc.sinks.postgres_registry import create_if_missing
from streamproc.sinks.rows import TYPE_LETTER, key_text, key_types, to_json


class IncompatibleTableError(CheckpointError):
    """An existing result table does not have the layout the query needs."""


class PostgresTableSink:
    """Result rows into one table of the checkpoint's database (a `ResultSink`)."""

    def __init__(self, layout: ResultTableLayout) -> None:
        self.layout = layout
        self._upsert_sql = self._insert_sql(insert_only=False)
        self._insert_only_sql = self._insert_sql(insert_only=True)
        self._claim_sql = self._claim_rows_sql()
        #: Staging columns that name a row: group values, their types, window start.
        self._key_width = len(layout.group_by) + int(layout.typed) + int(layout.windowed)

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
            await create_if_missing(tx, layout.table, create_result_table_sql(layout))
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

    def check_keys(self, keys: Iterable[Sequence[Any]]) -> None:
        """Refuse group values a text column cannot hold, before they reach the states.

        PostgreSQL text holds no NUL character and only valid UTF-8; such a
        value would otherwise be refused only when its window closes, long
        after its record's batch, where it cannot be told apart any more.

        Raises:
            ValueError: naming the value (a refusal: the record is isolated).
        """
        for key in keys:
            for value in key:
                if type(value) is str:
                    if "\x00" in value:
                        raise ValueError(f"group value {value[:40]!r} holds a NUL character")
                    if not value.isascii():
                        value.encode("utf-8")  # raises UnicodeEncodeError (a ValueError)

    async def prepare_connection(self, conn: Any) -> None:
        """Per connection: the temporary table rows are copied into before the upsert."""
        await conn.execute(create_stage_rows_sql(self.layout))

    async def write(
        self, tx: Any, rows: Sequence[ResultRow], *, insert_only: bool, encoded: Any = None
    ) -> int:
        """Upsert rows, or insert them where absent (append-mode closing).

        The rows go in by binary COPY to a temporary table (encoded in C), then
        one INSERT ... ON CONFLICT applies them.
        """
        if not rows:
            return 0
        records = encoded if encoded is not None else self.encode(rows)
        await tx.copy_records_to_table(STAGE_ROWS, records=records)
        statement = self._insert_only_sql if insert_only else self._upsert_sql
        status: str = await tx.execute(statement)
        await tx.execute(f"TRUNCATE {STAGE_ROWS}")
        return int(status.split()[-1]) if insert_only else len(rows)

    async def claim_rows(
        self, tx: Any, rows: Sequence[ResultRow], encoded: Any = None
    ) -> list[int] | None:
        """Insert the rows not in the table yet; lock, unchanged, those that are.

        For rows merged by a worker from its own partitions only: a row that does not
        exist yet has no other contribution (whoever committed one wrote its row), so
        the worker's merge is its value; a row that exists is locked, so that nobody
        else merges it until this transaction ends, and must be merged again from every
        partition's states. Rows are claimed in key order: two transactions claiming
        overlapping rows wait for each other instead of deadlocking.

        Returns:
            The indexes (into `rows`) of the rows that existed, now locked.
        """
        if not rows:
            return []
        records = encoded if encoded is not None else self.encode(rows)
        await tx.copy_records_to_table(STAGE_ROWS, records=records)
        existing = await tx.fetch(self._claim_sql)
        await tx.execute(f"TRUNCATE {STAGE_ROWS}")
        width = self._key_width
        index = {tuple(record[:width]): i for i, record in enumerate(records)}
        return [index[tuple(r)] for r in existing]

    async def delete_rows(self, tx: Any, keys: Sequence[WindowKey]) -> int:
        """Delete rows by (group key, window start, window end): rows of sessions that
        moved or merged (update and complete mode). Returns how many were there."""
        if not keys:
            return 0
        layout = self.layout
        names = [f"k{i}" for i in range(len(layout.group_by))]
        names += ["types"] if layout.typed else []
        names += ["ws", "we"]
        args = [list(column) for column in zip(*deleted_rows(layout, keys), strict=True)]
        arrays = [f"${i + 1}::text[]" for i in range(len(names) - 2)]
        arrays += [f"${len(names) - 1}::bigint[]", f"${len(names)}::bigint[]"]
        source = f"unnest({', '.join(arrays)}) AS d({', '.join(names)})"
        match = session_row_match(layout, lambda i: f"d.k{i}", "d.types", "d.ws", "d.we")
        table = quote_ident(layout.table)
        nulls = any(v is None for key, _, _ in keys for v in key)
        statement = (
            f"WITH a AS (DELETE FROM {table} t USING {source} WHERE {match.equal} RETURNING 1)"
            + (
                f", b AS (DELETE FROM {table} t USING {source} WHERE {match.has_null} "
                f"AND {match.null_safe} RETURNING 1)"
                if nulls
                else ""
            )
            + " SELECT (SELECT count(*) FROM a)"
            + (" + (SELECT count(*) FROM b)" if nulls else "")
        )
        return int(await tx.fetchval(statement, *args))

    def encode(self, rows: Sequence[ResultRow]) -> list[Sequence[Any]]:
        """Rows as the staging table's records (see `create_stage_rows_sql`)."""
        layout = self.layout
        if len(layout.group_by) == 1 and layout.windowed and not any(_json_values(layout)):
            return encode_one_key_windowed(rows)
        return encode_rows(layout, rows)

    def _insert_sql(self, *, insert_only: bool) -> str:
        layout = self.layout
        selected = [f"k{i}" for i in range(len(layout.group_by))]
        if layout.typed:
            selected.append("types")
        if layout.windowed:
            # Epoch milliseconds to timestamptz, exactly (intervals are microseconds).
            selected += [
                "timestamptz 'epoch' + ws * interval '1 millisecond'",
                "timestamptz 'epoch' + we * interval '1 millisecond'",
            ]
        selected += [f"v{i}" for i in range(len(layout.value_columns))]
        names = ", ".join(quote_ident(c.name) for c in layout.columns)
        conflict = ", ".join(quote_ident(c) for c in layout.key_columns)
        if not insert_only and layout.value_columns:
            action = "DO UPDATE SET " + ", ".join(
                f"{quote_ident(c)} = EXCLUDED.{quote_ident(c)}" for c in layout.value_columns
            )
        else:
            action = "DO NOTHING"
        return (
            f"INSERT INTO {quote_ident(layout.table)} ({names}) "
            f"SELECT {', '.join(selected)} FROM {STAGE_ROWS} "
            f"ON CONFLICT ({conflict}) {action}"
        )

    def _claim_rows_sql(self) -> str:
        """`claim_rows`: insert the new rows, lock the others; return the others' keys."""
        layout = self.layout
        keys = [f"k{i}" for i in range(len(layout.group_by))]
        keys += ["types"] if layout.typed else []
        keys += ["ws"] if layout.windowed else []
        insert = self._insert_sql(insert_only=True).replace(
            f"FROM {STAGE_ROWS} ", f"FROM {STAGE_ROWS} ORDER BY {', '.join(keys) or '1'} "
        )
        first_value = quote_ident(layout.value_columns[0]) if layout.value_columns else None
        lock = (
            f"DO UPDATE SET {first_value} = EXCLUDED.{first_value} WHERE false"
            if first_value
            else "DO NOTHING"
        )
        insert = insert.replace("DO NOTHING", lock)
        returned = [quote_ident(c) for c in layout.group_by]
        returned += [quote_ident(GROUP_KEY_TYPES)] if layout.typed else []
        returned += ["window_start"] if layout.windowed else []
        # Equalities only, so that PostgreSQL hashes the anti-join (IS NOT DISTINCT FROM
        # made it a nested loop: rows x rows, 8 s for a batch of 70,000 rows). A null
        # group value is told from an empty string by group_key_types ('-' and 's').
        matches = [
            f"coalesce(i.{c}, '') = coalesce(s.k{n}, '')"
            for n, c in enumerate(returned[: len(layout.group_by)])
        ]
        if layout.typed:
            matches.append(f"i.{quote_ident(GROUP_KEY_TYPES)} = s.types")
        if layout.windowed:
            matches.append("i.window_start = timestamptz 'epoch' + s.ws * interval '1 millisecond'")
        return (
            f"WITH i AS ({insert} RETURNING {', '.join(returned) or '1'}) "
            f"SELECT {', '.join(keys)} FROM {STAGE_ROWS} s "
            f"WHERE NOT EXISTS (SELECT 1 FROM i WHERE {' AND '.join(matches) or 'true'})"
        )


def deleted_rows(layout: ResultTableLayout, keys: Sequence[WindowKey]) -> list[list[Any]]:
    """Rows to delete by (group key, start, end) as `session_row_match` matches them:
    group values as stored (text, None for null), their types when the table has
    them, start and end in ms."""
    typed = layout.typed
    return [
        [*map(key_text, key), *([key_types(key)] if typed else []), start, end]
        for key, start, end in keys
    ]


@dataclass(frozen=True, slots=True)
class RowMatch:
    """How a result row `t` is matched to a (group key, start, end) to delete.

    Attributes:
        equal: Equalities of every group value, its types and bounds: what an index
            serves; it never matches a key with a null group value.
        has_null: The key to delete has a null group value.
        null_safe: A null group value matches a null one (the rows `equal` misses); no
            index serves it (a scan of the table), so it is used only for such keys.
    """

    equal: str
    has_null: str
    null_safe: str


def session_row_match(
    layout: ResultTableLayout, value: Callable[[int], str], types: str, ws: str, we: str
) -> RowMatch:
    """The conditions matching a result row `t` to a key given as SQL expressions.

    Args:
        value: The SQL of the i-th group value (text, null for null).
        types, ws, we: The SQL of its types letters, window start and end in ms.
    """
    columns = [f"t.{quote_ident(c)}" for c in layout.group_by]
    rest = [f"t.{quote_ident(GROUP_KEY_TYPES)} = {types}"] if layout.typed else []
    rest += [
        f"t.window_start = timestamptz 'epoch' + ({ws})::bigint * interval '1 millisecond'",
        f"t.window_end = timestamptz 'epoch' + ({we})::bigint * interval '1 millisecond'",
    ]
    equal = [f"{c} = {value(i)}" for i, c in enumerate(columns)] + rest
    null_safe = [f"coalesce({c}, '') = coalesce({value(i)}, '')" for i, c in enumerate(columns)]
    has_null = " OR ".join(f"{value(i)} IS NULL" for i in range(len(columns))) or "false"
    return RowMatch(" AND ".join(equal), f"({has_null})", " AND ".join(null_safe + rest))


def _json_values(layout: ResultTableLayout) -> list[bool]:
    """Per value column, True when it is jsonb (first/last): sent as JSON text."""
    return [c.sql_type == "jsonb" for c in layout.columns[-len(layout.value_columns) :]]


def encode_rows(layout: ResultTableLayout, rows: Sequence[ResultRow]) -> list[Sequence[Any]]:
    """Rows as the staging table's records, for any layout."""
    typed, windowed = layout.typed, layout.windowed
    json_values = _json_values(layout)
    records: list[Sequence[Any]] = []
    for row in rows:
        record: list[Any] = [key_text(value) for value in row.key]
        if typed:
            record.append(key_types(row.key))
        if windowed:
            record += (row.window_start_ms, row.window_end_ms)
        if any(json_values):
            record += [
                to_json(v) if is_json else v
                for v, is_json in zip(row.values, json_values, strict=True)
            ]
        else:
            record += row.values
        records.append(record)
    return records


def encode_one_key_windowed(rows: Sequence[ResultRow]) -> list[Sequence[Any]]:
    """`encode_rows` for the common shape (one group-by column, windowed, no jsonb), fast.

    The same records, one tuple per row.
    """
    letter = TYPE_LETTER.get
    records: list[Sequence[Any]] = []
    append = records.append
    for row in rows:
        value = row.key[0]
        kind = type(value)
        text = value if kind is str or value is None else key_text(value)
        append((text, letter(kind, "s"), row.window_start_ms, row.window_end_ms, *row.values))
    return records

"""The table of a pass-through streaming query: one row per record, written in the commit.

`PostgresRecordSink` is the `ResultSink` of a streaming pipeline without
aggregation. Its rows are the records (`engine.passthrough`), loaded the way a
batch job loads records as they are (`load_rows`): each record travels as a
jsonb document and `jsonb_populate_record` puts each field into the column of
its name, converted by PostgreSQL; a jsonb column `record` takes the whole
record. Two columns say where the record came from, and are the table's key:

    source_partition integer, source_offset bigint   UNIQUE together

A row is inserted once: a position already in the table is left as it is, so
no replay can double it (the checkpoint's position check already refuses a
batch twice; the key also covers a rerun after `streamproc reset` without
--drop-results). A table created here has those two columns and `record`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from streamproc.engine import ResultRow
from streamproc.sinks.layout import quote_ident
from streamproc.sinks.load_rows import insert_sql, passthrough_columns
from streamproc.sinks.postgres_registry import (
    create_if_missing,
    has_unique_index,
    writable_columns,
)
from streamproc.sinks.postgres_table import IncompatibleTableError

#: The columns naming a row's source record, the table's unique key.
POSITION_COLUMNS = ("source_partition", "source_offset")
#: The temporary table a batch's documents are copied into (per connection).
STAGE_RECORDS = "streamproc_records_stage"


def create_record_table_sql(table: str) -> str:
    """DDL of the table created for a pass-through query."""
    name = table.split(".")[-1][:54] + "_position"
    return (
        f"CREATE TABLE IF NOT EXISTS {quote_ident(table)} (\n"
        "  source_partition integer NOT NULL,\n"
        "  source_offset bigint NOT NULL,\n"
        "  record jsonb NOT NULL,\n"
        f"  CONSTRAINT {quote_ident(name)} UNIQUE (source_partition, source_offset)\n)"
    )


@dataclass(frozen=True, slots=True)
class EncodedRecords:
    """A batch's staging records, and every field name that occurs in its records."""

    records: list[tuple[int, str, int, int]]
    fields: frozenset[str]


class PostgresRecordSink:
    """Records of a pass-through query into one table (a `ResultSink`)."""

    def __init__(self, table: str) -> None:
        self.table = table
        self._columns: list[tuple[str, str]] = []

    async def start(self) -> None:
        """Nothing to open: rows go through the checkpoint's connection."""

    async def stop(self) -> None:
        """Nothing to close."""

    async def prepare(self, tx: Any) -> None:
        """Create the table when missing; refuse one without the position key.

        Raises:
            IncompatibleTableError: one line saying what the table lacks.
        """
        await create_if_missing(tx, self.table, create_record_table_sql(self.table))
        columns = await writable_columns(tx, self.table)
        names = {name for name, _ in columns}
        missing = [c for c in POSITION_COLUMNS if c not in names]
        problem = None
        if missing:
            problem = f"has no column {', '.join(missing)}"
        elif not await has_unique_index(tx, self.table, POSITION_COLUMNS):
            problem = "has no unique index on (source_partition, source_offset)"
        elif len(names - set(POSITION_COLUMNS)) == 0:
            problem = "has no column for the records' fields and no jsonb column 'record'"
        if problem is not None:
            raise IncompatibleTableError(
                f"table {self.table} {problem}: a streaming query without aggregation writes "
                "each record once, keyed by its source position (drop or rename the table, "
                "or add the columns: source_partition integer, source_offset bigint, "
                "UNIQUE (source_partition, source_offset))"
            )
        self._columns = columns

    async def prepare_connection(self, conn: Any) -> None:
        """Per connection: the temporary table documents are copied into."""
        await conn.execute(
            f"CREATE TEMPORARY TABLE IF NOT EXISTS {STAGE_RECORDS} (seq bigint, doc jsonb, "
            "source_partition integer, source_offset bigint) ON COMMIT DELETE ROWS"
        )

    def check_keys(self, keys: Iterable[Sequence[Any]]) -> None:
        """A pass-through query has no group keys (its rows' keys are positions)."""

    def encode(self, rows: Sequence[ResultRow]) -> EncodedRecords:
        """The staging records of the rows.

        Raises:
            ValueError: a value JSON cannot carry (NaN, an infinity): the record
                is refused, and the failure policy isolates it.
        """
        fields: set[str] = set()
        records: list[tuple[int, str, int, int]] = []
        for seq, row in enumerate(rows):
            partition, offset = row.key
            record = row.values[0]
            fields.update(record)
            records.append(
                (seq, json.dumps(record, separators=(",", ":"), allow_nan=False), partition, offset)
            )
        return EncodedRecords(records, frozenset(fields))

    async def write(
        self, tx: Any, rows: Sequence[ResultRow], *, insert_only: bool, encoded: Any = None
    ) -> int:
        """Insert the rows whose position is not in the table yet; returns how many."""
        if not rows:
            return 0
        staged: EncodedRecords = encoded if encoded is not None else self.encode(rows)
        columns, record_column = passthrough_columns(
            self._columns, set(staged.fields), POSITION_COLUMNS
        )
        statement = insert_sql(
            self.table,
            columns,
            "append",
            POSITION_COLUMNS,
            record_column,
            stage=STAGE_RECORDS,
            stage_columns=POSITION_COLUMNS,
        )
        await tx.copy_records_to_table(STAGE_RECORDS, records=staged.records)
        status: str = await tx.execute(statement)
        await tx.execute(f"TRUNCATE {STAGE_RECORDS}")
        return int(status.split()[-1])

"""A result table in a `MemoryDatabase`: the `ResultSink` of the in-memory checkpoint.

Rows are keyed as the table's primary key keys them (group key, window), so
an upsert replaces and an insert-only write skips a row already there, as in
PostgreSQL; refusals come from the database (`MemoryDatabase.refuse_key`),
checked by the checkpoint before anything is written.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from streamproc.engine import ResultRow, WindowKey
from streamproc.testing.database import MemoryDatabase, typed_key


class MemoryTableSink:
    """A result table in a `MemoryDatabase` (a `ResultSink`)."""

    def __init__(self, db: MemoryDatabase, table: str) -> None:
        self._db = db
        self.table = table

    async def start(self) -> None:
        """Nothing to open."""

    async def stop(self) -> None:
        """Nothing to close."""

    async def prepare(self, tx: Any) -> None:
        """Create the table when missing."""
        self._db.tables.setdefault(self.table, {})

    async def prepare_connection(self, conn: Any) -> None:
        """Nothing per connection."""

    def check_keys(self, keys: Any) -> None:
        """Any key fits (refusals come from `MemoryDatabase.refuse_key`)."""

    def encode(self, rows: Sequence[ResultRow]) -> None:
        """Rows are kept as they are."""

    async def write(
        self, tx: Any, rows: Sequence[ResultRow], *, insert_only: bool, encoded: Any = None
    ) -> int:
        """Upsert rows, or insert the absent ones (returns how many were inserted)."""
        table = self._db.tables.setdefault(self.table, {})
        written = 0
        for row in rows:
            row_id = (typed_key(row.key), row.window_start_ms, row.window_end_ms)
            if insert_only and row_id in table:
                continue
            table[row_id] = row
            written += 1
        return written

    async def delete_rows(self, tx: Any, keys: Sequence[WindowKey]) -> int:
        """Delete rows by (key, window start, window end); returns how many were there."""
        table = self._db.tables.setdefault(self.table, {})
        return sum(
            table.pop((typed_key(key), start, end), None) is not None for key, start, end in keys
        )

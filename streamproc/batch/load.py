"""The load of a batch job: ONE PostgreSQL transaction per run.

Create the table when missing (or check it), delete its rows for overwrite,
then copy the documents in chunks of `batchsize` and move each chunk into the
table with one statement (`rows.insert_sql`). A chunk the table refuses (a value
a column cannot hold, a constraint) is retried in halves under savepoints until
each refused row stands alone: that row is reported, the others go in. With
failFast the first refused row ends the load and the transaction rolls back.
Dead letters are sent before the commit, or written in the transaction
(`before_commit` gets the connection), so a failed run has written nothing to
the table, and a run that wrote its table sent (or wrote) its letters.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from streamproc.port_errors import FailureKind
from streamproc.runtime.failure_kinds import classify_failure, first_line
from streamproc.sinks.layout import ResultTableLayout, quote_ident
from streamproc.sinks.load_rows import (
    STAGE,
    WriteMode,
    create_stage_sql,
    insert_sql,
    passthrough_columns,
    passthrough_table_sql,
)
from streamproc.sinks.postgres_errors import port_error, raises_port_errors
from streamproc.sinks.postgres_owners import register_batch_job
from streamproc.sinks.postgres_registry import (
    create_if_missing,
    has_unique_index,
    privilege_error,
    writable_columns,
)
from streamproc.sinks.postgres_table import PostgresTableSink

#: A document to load: (its position in the load, JSON text).
Doc = tuple[int, str]


class LoadError(RuntimeError):
    """The table cannot take this load at all (one line: what and what to do)."""


@dataclass(frozen=True, slots=True)
class Refusal:
    """A row the table refused: its position in the load and PostgreSQL's reason."""

    seq: int
    reason: str


class RowRefusedError(LoadError):
    """failFast: the table refused a row; nothing of the load was kept."""

    def __init__(self, refusal: Refusal) -> None:
        super().__init__(refusal.reason)
        self.refusal = refusal


@dataclass(frozen=True, slots=True)
class LoadTarget:
    """Where and how the rows go.

    Attributes:
        layout: an aggregation's result table, or None when records are loaded
            as they are (then the table's own columns decide, see
            `rows.passthrough_columns`).
        fields: records loaded as they are: every field name that occurs in them.
    """

    table: str
    mode: WriteMode
    upsert_keys: tuple[str, ...] = ()
    layout: ResultTableLayout | None = None
    fields: frozenset[str] = frozenset()
    #: The batch job (pipelineId) the table is registered to (`postgres_owners`).
    owner: str = ""


@dataclass(frozen=True, slots=True)
class LoadResult:
    """Rows written (inserted or updated), rows refused, and rows deleted by overwrite."""

    written: int
    refused: tuple[Refusal, ...]
    deleted: int = 0


@raises_port_errors
async def load(
    dsn: str,
    target: LoadTarget,
    docs: Sequence[Doc],
    *,
    batchsize: int,
    fail_fast: bool,
    before_commit: Callable[[Any, LoadResult], Awaitable[None]],
) -> LoadResult:
    """Load every document in one transaction; see the module docstring.

    Raises:
        LoadError: the table does not fit, or (failFast) a row was refused.
        asyncpg and OS errors: PostgreSQL failed or cannot be reached (rolled back);
            asyncpg's client-side errors as port-level errors (streamproc/port_errors.py).
    """
    conn = await asyncpg.connect(dsn, timeout=30)
    try:
        async with conn.transaction():
            # The table is this job's, or the load stops before it writes anything.
            await register_batch_job(conn, target.owner, target.table)
            columns, conflict, record_column = await _prepare(conn, target)
            await conn.execute(create_stage_sql())
            deleted = 0
            if target.mode == "overwrite":
                status = await _write(conn, f"DELETE FROM {quote_ident(target.table)}", target)
                deleted = int(status.split()[-1])
            statement = insert_sql(target.table, columns, target.mode, conflict, record_column)
            refused: list[Refusal] = []
            written = 0
            for start in range(0, len(docs), batchsize):
                chunk = docs[start : start + batchsize]
                written += await _insert(conn, statement, list(chunk), refused, fail_fast)
            result = LoadResult(written, tuple(refused), deleted)
            await before_commit(conn, result)
        return result
    finally:
        await conn.close(timeout=10)


async def _write(conn: Any, statement: str, target: LoadTarget) -> str:
    try:
        status: str = await conn.execute(statement)
    except asyncpg.InsufficientPrivilegeError as exc:
        raise privilege_error(exc, f"writing table {target.table}") from None
    return status


async def _insert(
    conn: Any, statement: str, chunk: list[Doc], refused: list[Refusal], fail_fast: bool
) -> int:
    """Rows written from a chunk; refused rows are isolated by halving the chunk."""
    try:
        async with conn.transaction():  # a savepoint: a refusal undoes this chunk only
            await conn.copy_records_to_table(STAGE, records=chunk, columns=["seq", "doc"])
            status: str = await conn.execute(statement)
            await conn.execute(f"TRUNCATE {STAGE}")
    except Exception as exc:
        if classify_failure(port_error(exc)) is not FailureKind.REJECTED:
            raise
        if len(chunk) == 1:
            refusal = Refusal(chunk[0][0], first_line(exc))
            if fail_fast:
                raise RowRefusedError(refusal) from None
            refused.append(refusal)
            return 0
        half = len(chunk) // 2
        first = await _insert(conn, statement, chunk[:half], refused, fail_fast)
        return first + await _insert(conn, statement, chunk[half:], refused, fail_fast)
    return int(status.split()[-1])


async def _prepare(conn: Any, target: LoadTarget) -> tuple[list[str], list[str], str | None]:
    """Create or check the table: (columns written, conflict columns, whole-record column)."""
    layout = target.layout
    if layout is not None:
        # The streaming sink's own check: created when missing, else it must fit.
        await PostgresTableSink(layout).prepare(conn)
        conflict = list(layout.key_columns) if target.mode == "upsert" else []
        return [c.name for c in layout.columns], conflict, None
    keys = target.upsert_keys if target.mode == "upsert" else ()
    await create_if_missing(conn, target.table, passthrough_table_sql(target.table, keys))
    have = await writable_columns(conn, target.table)
    missing = [k for k in keys if k not in dict(have)]
    if missing:
        raise LoadError(
            f"table {target.table} has no column {', '.join(missing)} named by load.upsertKeys"
        )
    if keys and not await has_unique_index(conn, target.table, keys):
        raise LoadError(
            f"table {target.table} has no unique index on ({', '.join(keys)}): an upsert "
            "matches rows on one; create it, or use writeMode append or overwrite"
        )
    columns, record_column = passthrough_columns(have, set(target.fields), keys)
    if not columns:
        raise LoadError(
            f"table {target.table} has no column named after a field of the records and no "
            "jsonb column 'record' for the whole record; nothing could be loaded"
        )
    return columns, list(keys), record_column

"""Who owns a table: a streaming query (`streamproc_queries`) or a batch job.

A result table belongs to one writer. A streaming query registers its table
with its definition (`postgres_registry.register_query`); a batch job registers
its table under its `pipelineId` in `streamproc_batch_jobs`, in the
transaction of its load. Either refuses a table the other kind (or another of
its kind) owns, with one line naming the owner: a batch job overwriting a
streaming query's table would delete rows the query's checkpoint says it wrote.

Table names are compared as PostgreSQL resolves them: `x` and `public.x` are
one table.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from streamproc.sinks.base import CheckpointConflictError
from streamproc.sinks.layout import BATCH_JOBS_TABLE, QUERIES_TABLE, quote_ident

#: The schema an unqualified table name means (the default search_path's first).
DEFAULT_SCHEMA = "public"


def canonical_table(name: str) -> str:
    """A table name as one spelling: `public.x` is `x`; other schemas stay qualified."""
    schema, _, table = name.rpartition(".")
    return table if schema in ("", DEFAULT_SCHEMA) else name


def table_spellings(name: str) -> list[str]:
    """Every spelling a registry may hold for a table (`x` and `public.x`)."""
    short = canonical_table(name)
    return [short] if "." in short else [short, f"{DEFAULT_SCHEMA}.{short}"]


@dataclass(frozen=True, slots=True)
class TableOwner:
    """A table's writer: a streaming query or a batch job, and since when."""

    kind: Literal["query", "batch job"]
    name: str
    since: datetime

    def describe(self) -> str:
        """'query Q (registered 2026-...)' or 'batch job P (registered ...)'."""
        return f"{self.kind} {self.name} (registered {self.since:%Y-%m-%d %H:%M:%S %Z})"


def create_batch_jobs_table_sql() -> str:
    """DDL of the batch jobs' table registry: a table belongs to one pipelineId."""
    return f"""
CREATE TABLE IF NOT EXISTS {quote_ident(BATCH_JOBS_TABLE)} (
  pipeline_id text PRIMARY KEY,
  result_table text NOT NULL UNIQUE,
  registered_at timestamp with time zone NOT NULL DEFAULT now(),
  loaded_at timestamp with time zone
)"""


async def _exists(conn: Any, table: str) -> bool:
    return bool(await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", quote_ident(table)))


async def table_owner(
    conn: Any, table: str, *, but_query: str | None = None, but_job: str | None = None
) -> TableOwner | None:
    """The query or batch job that owns a table, leaving out the asker itself."""
    names = table_spellings(table)
    if await _exists(conn, QUERIES_TABLE):
        row = await conn.fetchrow(
            f"SELECT query, created_at FROM {quote_ident(QUERIES_TABLE)} "
            "WHERE result_table = ANY($1::text[]) AND query IS DISTINCT FROM $2",
            names,
            but_query,
        )
        if row is not None:
            return TableOwner("query", row["query"], row["created_at"])
    if await _exists(conn, BATCH_JOBS_TABLE):
        row = await conn.fetchrow(
            f"SELECT pipeline_id, registered_at FROM {quote_ident(BATCH_JOBS_TABLE)} "
            "WHERE result_table = ANY($1::text[]) AND pipeline_id IS DISTINCT FROM $2",
            names,
            but_job,
        )
        if row is not None:
            return TableOwner("batch job", row["pipeline_id"], row["registered_at"])
    return None


async def register_batch_job(conn: Any, pipeline_id: str, table: str) -> None:
    """In the load's transaction: the job's table is its own from now on.

    Raises:
        CheckpointConflictError: a streaming query or another batch job owns it.
    """
    # Serialise with streaming registrations and other jobs (the registry's DDL lock).
    await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", "streamproc:ddl")
    if not await _exists(conn, BATCH_JOBS_TABLE):
        await conn.execute(create_batch_jobs_table_sql())
    owner = await table_owner(conn, table, but_job=pipeline_id)
    if owner is not None:
        how = (
            "stop the query and reset it with --drop-results first"
            if owner.kind == "query"
            else f"reset batch job {owner.name} first"
        )
        raise CheckpointConflictError(
            f"batch job {pipeline_id}: table {table} belongs to {owner.describe()}; loading "
            f"into it would change rows its owner wrote; give load.table another name, or "
            f"{how}; nothing was loaded"
        )
    await conn.execute(
        f"""INSERT INTO {quote_ident(BATCH_JOBS_TABLE)} (pipeline_id, result_table, loaded_at)
            VALUES ($1, $2, now())
            ON CONFLICT (pipeline_id) DO UPDATE
              SET result_table = EXCLUDED.result_table, loaded_at = now()""",
        pipeline_id,
        canonical_table(table),
    )


async def release_batch_job(conn: Any, pipeline_id: str) -> str | None:
    """Forget a batch job's table (its `reset`); the table it owned, if any."""
    if not await _exists(conn, BATCH_JOBS_TABLE):
        return None
    table: str | None = await conn.fetchval(
        f"DELETE FROM {quote_ident(BATCH_JOBS_TABLE)} WHERE pipeline_id = $1 "
        "RETURNING result_table",
        pipeline_id,
    )
    return table


def refuse_owned(query: str, table: str, owner: TableOwner) -> CheckpointConflictError:
    """The line a streaming query stops with when another writer owns its table."""
    how = (
        f"run `streamproc reset` on query {owner.name}"
        if owner.kind == "query"
        else f"reset batch job {owner.name} (`streamproc reset` on its config)"
    )
    return CheckpointConflictError(
        f"query {query}: table {table} belongs to {owner.describe()}; two writers of one "
        f"table would overwrite or drop each other's rows; give load.table another name, "
        f"or {how}"
    )

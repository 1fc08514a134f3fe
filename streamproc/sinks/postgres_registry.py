"""The checkpoint's tables in PostgreSQL: created when missing, and who owns what.

`ensure_tables` creates only the tables that do not exist yet, so a user who
may read and write existing tables but not CREATE in the schema can run, and
one who lacks a privilege gets one line naming the table and the privilege.

`register_query` stores a query's definition with its checkpoint and refuses
a run whose definition changed (or whose result table another query owns,
or whose checkpoint was written by an older layout), see `definition.py`.
`reset_query` drops a query's checkpoint (`streamproc reset`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from streamproc.sinks.base import (
    RESET_HINT,
    CheckpointConflictError,
    CheckpointError,
    QueryIdentity,
)
from streamproc.sinks.definition import LAYOUT_VERSION, definition_changes
from streamproc.sinks.layout import (
    FILES_TABLE,
    LEDGER_TABLE,
    LEGACY_PARTIALS_TABLE,
    POSITIONS_TABLE,
    PROGRESS_TABLE,
    QUERIES_TABLE,
    RUNS_TABLE,
    STATE_TABLE,
    create_ledger_table_sql,
    create_positions_table_sql,
    create_progress_table_sql,
    create_queries_table_sql,
    create_runs_table_sql,
    create_state_table_sql,
    quote_ident,
)

#: The checkpoint's own tables, in creation order.
CHECKPOINT_TABLES: tuple[tuple[str, Callable[[], str]], ...] = (
    (QUERIES_TABLE, create_queries_table_sql),
    (POSITIONS_TABLE, create_positions_table_sql),
    (LEDGER_TABLE, create_ledger_table_sql),
    (STATE_TABLE, create_state_table_sql),
    (RUNS_TABLE, create_runs_table_sql),
    (PROGRESS_TABLE, create_progress_table_sql),
)


class PrivilegeError(CheckpointError):
    """The database user lacks a privilege the run needs (the message names it)."""


async def table_exists(conn: Any, table: str) -> bool:
    """True when the (possibly schema-qualified) table exists."""
    return bool(await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", quote_ident(table)))


async def writable_columns(conn: Any, table: str) -> list[tuple[str, str]]:
    """(name, SQL type) of the columns an INSERT may write, in table order.

    Generated columns and identity columns GENERATED ALWAYS are left out.
    """
    rows = await conn.fetch(
        """SELECT a.attname AS name, format_type(a.atttypid, a.atttypmod) AS type
           FROM pg_attribute a
           WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped
             AND a.attgenerated = '' AND a.attidentity <> 'a'
           ORDER BY a.attnum""",
        quote_ident(table),
    )
    return [(r["name"], r["type"]) for r in rows]


async def has_unique_index(conn: Any, table: str, keys: Sequence[str]) -> bool:
    """True when the table has a unique index (without a predicate) on exactly these columns."""
    rows = await conn.fetch(
        """SELECT array_agg(a.attname::text) AS cols
           FROM pg_index i JOIN pg_attribute a
             ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
           WHERE i.indrelid = to_regclass($1) AND i.indisunique AND i.indpred IS NULL
           GROUP BY i.indexrelid""",
        quote_ident(table),
    )
    return any(sorted(r["cols"]) == sorted(keys) for r in rows)


async def create_if_missing(conn: Any, table: str, ddl: str) -> bool:
    """Create a table that does not exist yet; returns True when it was created.

    Raises:
        PrivilegeError: the user may not create it (one line: table and privilege).
    """
    if await table_exists(conn, table):
        return False
    try:
        await conn.execute(ddl)
    except asyncpg.InsufficientPrivilegeError as exc:
        schema = table.split(".")[0] if "." in table else "the current schema (public)"
        raise PrivilegeError(
            f"table {table} does not exist and cannot be created: {exc} (grant CREATE on "
            f"{schema} to this user, or create the table beforehand)"
        ) from None
    return True


async def ensure_tables(conn: Any, side_tables: Sequence[tuple[str, str]] = ()) -> None:
    """Create the checkpoint's tables (and side tables: (name, DDL)) where they do not exist."""
    tables = list(CHECKPOINT_TABLES)
    for table, ddl in tables:
        await create_if_missing(conn, table, ddl())
    for side in side_tables:
        await create_if_missing(conn, *side)


def privilege_error(exc: asyncpg.InsufficientPrivilegeError, doing: str) -> PrivilegeError:
    """One line for a privilege missing while doing something (e.g. writing a table)."""
    return PrivilegeError(f"{doing}: {exc} (grant the privilege to this database user)")


@dataclass(frozen=True, slots=True)
class Registration:
    """What the registry says about a query when it opens."""

    global_watermark_ms: int | None


async def register_query(conn: Any, identity: QueryIdentity) -> Registration:
    """Register a query, or check that the registered one is this definition.

    Call inside a transaction holding the DDL lock. A registered query that
    has committed nothing yet takes the new definition without a word.

    Raises:
        CheckpointConflictError: the definition changed since the query's
            state was made, its result table belongs to another query, or its
            checkpoint was written by an older layout.
    """
    query = identity.query
    row = await conn.fetchrow(
        f"SELECT layout, definition::text AS definition, result_table, global_watermark_ms "
        f"FROM {quote_ident(QUERIES_TABLE)} WHERE query = $1",
        query,
    )
    if row is None:
        await _refuse_legacy(conn, query)
        await _refuse_taken_table(conn, identity)
        await conn.execute(
            f"""INSERT INTO {quote_ident(QUERIES_TABLE)} (query, layout, definition, result_table)
                VALUES ($1, $2, $3::jsonb, $4)""",
            query,
            LAYOUT_VERSION,
            json.dumps(identity.definition),
            identity.result_table,
        )
        return Registration(None)
    stored = json.loads(row["definition"])
    changes = definition_changes(stored, identity.definition)
    if row["layout"] != LAYOUT_VERSION:
        changes.insert(0, f"layout changed from {row['layout']} to {LAYOUT_VERSION}")
    if not changes:
        return Registration(row["global_watermark_ms"])
    if await _has_state(conn, query):
        raise CheckpointConflictError(
            f"query {query}: its checkpoint was made by another definition ("
            + "; ".join(changes)
            + f"), and running on it would give wrong results; {RESET_HINT}"
        )
    await _refuse_taken_table(conn, identity)
    await conn.execute(
        f"""UPDATE {quote_ident(QUERIES_TABLE)}
            SET layout = $2, definition = $3::jsonb, result_table = $4, updated_at = now()
            WHERE query = $1""",
        query,
        LAYOUT_VERSION,
        json.dumps(identity.definition),
        identity.result_table,
    )
    return Registration(None)


async def _has_state(conn: Any, query: str) -> bool:
    for table in (POSITIONS_TABLE, STATE_TABLE, LEDGER_TABLE):
        if await conn.fetchval(
            f"SELECT EXISTS (SELECT 1 FROM {quote_ident(table)} WHERE query = $1)", query
        ):
            return True
    return False


async def _refuse_legacy(conn: Any, query: str) -> None:
    """A query with ledger rows but no registration: layout 1 wrote them (or a hand did)."""
    if await conn.fetchval(
        f"SELECT EXISTS (SELECT 1 FROM {quote_ident(LEDGER_TABLE)} WHERE query = $1)", query
    ):
        raise CheckpointConflictError(
            f"query {query}: its ledger has rows but no definition in {QUERIES_TABLE}: the "
            f"checkpoint was written by an older streamproc (layout 1), or its registration "
            f"was deleted; {RESET_HINT}"
        )


async def _refuse_taken_table(conn: Any, identity: QueryIdentity) -> None:
    if identity.result_table is None:
        return
    owner = await conn.fetchrow(
        f"SELECT query, created_at FROM {quote_ident(QUERIES_TABLE)} "
        "WHERE result_table = $1 AND query <> $2",
        identity.result_table,
        identity.query,
    )
    if owner is not None:
        raise CheckpointConflictError(
            f"query {identity.query}: table {identity.result_table} belongs to query "
            f"{owner['query']} (registered {owner['created_at']:%Y-%m-%d %H:%M:%S %Z}); two "
            "queries writing one table would overwrite or drop each other's rows; give "
            f"load.table another name, or run `streamproc reset` on query {owner['query']}"
        )


@dataclass(frozen=True, slots=True)
class ResetReport:
    """What `reset_query` removed."""

    ledger_rows: int
    state_rows: int
    positions: int
    late_rows: int
    dropped_table: str | None
    dead_letters: int = 0


async def reset_query(
    conn: Any,
    query: str,
    *,
    result_table: str | None = None,
    late_table: str | None = None,
    dlq_table: str | None = None,
) -> ResetReport:
    """Drop a query's checkpoint (registration, positions, ledger, states, runs, progress, files).

    Args:
        conn: A connection (a transaction is opened here).
        query: The query name.
        result_table: Drop this table too (the query's result table); refused
            when another query owns it.
        late_table: Delete the query's rows from this separatestream table
            (queries may share one, so it is not dropped).
        dlq_table: Delete the query's rows from this dead-letter table (likewise).

    Raises:
        CheckpointConflictError: result_table belongs to another query.
    """
    counts: dict[str, int] = {}
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"streamproc:{query}")
        if result_table is not None and await table_exists(conn, QUERIES_TABLE):
            owner = await conn.fetchval(
                f"SELECT query FROM {quote_ident(QUERIES_TABLE)} WHERE result_table = $1",
                result_table,
            )
            if owner is not None and owner != query:
                raise CheckpointConflictError(
                    f"table {result_table} belongs to query {owner}, not {query}: not dropped"
                )
        tables = [QUERIES_TABLE, POSITIONS_TABLE, LEDGER_TABLE, STATE_TABLE, RUNS_TABLE]
        tables.append(PROGRESS_TABLE)
        tables += [LEGACY_PARTIALS_TABLE, FILES_TABLE]
        tables += [t for t in (late_table, dlq_table) if t is not None]
        for table in tables:
            counts[table] = 0
            if await table_exists(conn, table):
                status: str = await conn.execute(
                    f"DELETE FROM {quote_ident(table)} WHERE query = $1", query
                )
                counts[table] = int(status.split()[-1])
        dropped = None
        if result_table is not None and await table_exists(conn, result_table):
            await conn.execute(f"DROP TABLE {quote_ident(result_table)}")
            dropped = result_table
    return ResetReport(
        counts[LEDGER_TABLE],
        counts[STATE_TABLE],
        counts[POSITIONS_TABLE],
        counts.get(late_table or "", 0),
        dropped,
        counts.get(dlq_table or "", 0),
    )

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
from collections.abc import Callable, Mapping, Sequence
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
    LEDGER_TABLE,
    POSITIONS_TABLE,
    PROGRESS_TABLE,
    QUERIES_EXTRA,
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
from streamproc.sinks.postgres_claims import live_workers
from streamproc.sinks.postgres_owners import refuse_owned, table_owner

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
    """What the registry says about a query when it opens.

    Attributes:
        global_watermark_ms: The last committed W (None for a new query).
        incarnation: Changes whenever the query is (re-)registered: a commit that
            finds another one was made on a checkpoint reset under its worker.
    """

    global_watermark_ms: int | None
    incarnation: str
    #: Settings that changed since the query last ran, one phrase each (only for a
    #: query that has committed: a new one has nothing they could apply after).
    changed_settings: tuple[str, ...] = ()


async def ensure_registry_columns(conn: Any) -> None:
    """Add the registry's later columns to a table made before they existed (once)."""
    present = {
        r["attname"]
        for r in await conn.fetch(
            "SELECT attname FROM pg_attribute WHERE attrelid = to_regclass($1) "
            "AND attnum > 0 AND NOT attisdropped",
            QUERIES_TABLE,
        )
    }
    missing = [(name, kind) for name, kind in QUERIES_EXTRA if name not in present]
    if missing:
        adds = ", ".join(f"ADD COLUMN IF NOT EXISTS {name} {kind}" for name, kind in missing)
        await conn.execute(f"ALTER TABLE {quote_ident(QUERIES_TABLE)} {adds}")


async def register_query(
    conn: Any, identity: QueryIdentity, *, claim_pid: int | None = None
) -> Registration:
    """Register a query, or check that the registered one is this definition.

    Call inside a transaction holding the DDL lock, with this worker's claim held
    (`postgres_claims.WorkerClaim`; `claim_pid` is its connection's server pid). A
    registered query that has committed nothing yet takes the new definition, unless
    another worker holds a claim on it: that worker runs the registered definition.

    Raises:
        CheckpointConflictError: the definition changed since the query's state was
            made or while another worker runs it, its result table belongs to another
            query or to a batch job, or its checkpoint was written by an older layout.
    """
    query = identity.query
    row = await conn.fetchrow(
        f"SELECT layout, definition::text AS definition, result_table, global_watermark_ms, "
        f"incarnation::text AS incarnation, settings::text AS settings "
        f"FROM {quote_ident(QUERIES_TABLE)} WHERE query = $1",
        query,
    )
    settings = json.dumps(dict(identity.settings))
    if row is None:
        await _refuse_legacy(conn, query)
        await _refuse_taken_table(conn, identity)
        incarnation = await conn.fetchval(
            f"""INSERT INTO {quote_ident(QUERIES_TABLE)}
                  (query, layout, definition, result_table, incarnation, late_table, dlq_table,
                   settings)
                VALUES ($1, $2, $3::jsonb, $4, gen_random_uuid(), $5, $6, $7::jsonb)
                RETURNING incarnation::text""",
            query,
            LAYOUT_VERSION,
            json.dumps(identity.definition),
            identity.result_table,
            identity.late_table,
            identity.dlq_table,
            settings,
        )
        return Registration(None, incarnation)
    stored = json.loads(row["definition"])
    changes = definition_changes(stored, identity.definition)
    if row["layout"] != LAYOUT_VERSION:
        changes.insert(0, f"layout changed from {row['layout']} to {LAYOUT_VERSION}")
    if not changes:
        stored_settings = json.loads(row["settings"]) if row["settings"] else None
        changed: tuple[str, ...] = ()
        if stored_settings is not None and await _has_state(conn, query):
            changed = tuple(settings_changes(stored_settings, identity.settings))
        incarnation = await conn.fetchval(
            f"""UPDATE {quote_ident(QUERIES_TABLE)}
                SET incarnation = coalesce(incarnation, gen_random_uuid()),
                    late_table = $2, dlq_table = $3, settings = $4::jsonb
                WHERE query = $1 RETURNING incarnation::text""",
            query,
            identity.late_table,
            identity.dlq_table,
            settings,
        )
        return Registration(row["global_watermark_ms"], incarnation, changed)
    if await _has_state(conn, query):
        raise CheckpointConflictError(
            f"query {query}: its checkpoint was made by another definition ("
            + "; ".join(changes)
            + f"), and running on it would give wrong results; {RESET_HINT}"
        )
    others = await live_workers(conn, query, except_pid=claim_pid)
    if others:
        raise CheckpointConflictError(
            f"query {query}: worker {', '.join(others)} runs it with another definition ("
            + "; ".join(changes)
            + "); two configs of one queryName would write each other's checkpoint; nothing "
            "was written; give this config another queryName, or stop the other worker"
        )
    await _refuse_taken_table(conn, identity)
    incarnation = await conn.fetchval(
        f"""UPDATE {quote_ident(QUERIES_TABLE)}
            SET layout = $2, definition = $3::jsonb, result_table = $4, updated_at = now(),
                incarnation = gen_random_uuid(), late_table = $5, dlq_table = $6,
                settings = $7::jsonb
            WHERE query = $1 RETURNING incarnation::text""",
        query,
        LAYOUT_VERSION,
        json.dumps(identity.definition),
        identity.result_table,
        identity.late_table,
        identity.dlq_table,
        settings,
    )
    return Registration(None, incarnation)


def settings_changes(stored: Mapping[str, Any], current: Mapping[str, str]) -> list[str]:
    """Each setting that differs from the stored one: 'NAME from OLD to NEW'."""
    return [
        f"{name} from {stored.get(name, 'none')} to {value}"
        for name, value in current.items()
        if stored.get(name, value) != value
    ]


async def committed_offsets(conn: Any, query: str) -> dict[int, int]:
    """The next offset of each partition with a position."""
    rows = await conn.fetch(
        f"SELECT partition, next_offset FROM {quote_ident(POSITIONS_TABLE)} WHERE query = $1",
        query,
    )
    return {r["partition"]: r["next_offset"] for r in rows}


async def refuse_vanished_table(conn: Any, identity: QueryIdentity) -> None:
    """Refuse to re-create a result table that vanished while the checkpoint holds its rows.

    Creating it empty would lose the rows of every committed window without a word
    (the ledger says they were written): the query stops at start instead.
    """
    table = identity.result_table
    if table is None or await table_exists(conn, table):
        return
    batches = await conn.fetchval(
        f"SELECT count(*) FROM {quote_ident(LEDGER_TABLE)} WHERE query = $1", identity.query
    )
    if batches:
        raise CheckpointConflictError(
            f"query {identity.query}: its result table {table} does not exist, but its "
            f"checkpoint holds {batches} committed batch(es) whose rows were written there "
            "(was it dropped by hand?); re-creating it empty would lose them; restore the "
            f"table, or start over with `streamproc reset CONFIG --drop-results`"
        )


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
    owner = await table_owner(conn, identity.result_table, but_query=identity.query)
    if owner is not None:
        raise refuse_owned(identity.query, identity.result_table, owner)

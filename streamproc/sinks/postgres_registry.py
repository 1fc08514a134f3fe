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
from streamproc.sinks.postgres_claims import live_workers, lock_out_workers

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
        f"incarnation::text AS incarnation FROM {quote_ident(QUERIES_TABLE)} WHERE query = $1",
        query,
    )
    if row is None:
        await _refuse_legacy(conn, query)
        await _refuse_taken_table(conn, identity)
        incarnation = await conn.fetchval(
            f"""INSERT INTO {quote_ident(QUERIES_TABLE)}
                  (query, layout, definition, result_table, incarnation, late_table, dlq_table)
                VALUES ($1, $2, $3::jsonb, $4, gen_random_uuid(), $5, $6)
                RETURNING incarnation::text""",
            query,
            LAYOUT_VERSION,
            json.dumps(identity.definition),
            identity.result_table,
            identity.late_table,
            identity.dlq_table,
        )
        return Registration(None, incarnation)
    stored = json.loads(row["definition"])
    changes = definition_changes(stored, identity.definition)
    if row["layout"] != LAYOUT_VERSION:
        changes.insert(0, f"layout changed from {row['layout']} to {LAYOUT_VERSION}")
    if not changes:
        incarnation = row["incarnation"]
        incarnation = await conn.fetchval(
            f"""UPDATE {quote_ident(QUERIES_TABLE)}
                SET incarnation = coalesce(incarnation, gen_random_uuid()),
                    late_table = $2, dlq_table = $3
                WHERE query = $1 RETURNING incarnation::text""",
            query,
            identity.late_table,
            identity.dlq_table,
        )
        return Registration(row["global_watermark_ms"], incarnation)
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
                incarnation = gen_random_uuid(), late_table = $5, dlq_table = $6
            WHERE query = $1 RETURNING incarnation::text""",
        query,
        LAYOUT_VERSION,
        json.dumps(identity.definition),
        identity.result_table,
        identity.late_table,
        identity.dlq_table,
    )
    return Registration(None, incarnation)


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
    dropped_tables: tuple[str, ...] = ()
    dead_letters: int = 0


class NoCheckpointError(CheckpointError):
    """`reset` of a query that has no checkpoint in this database (nothing was changed)."""


@dataclass(frozen=True, slots=True)
class ResetTables:
    """The tables a `reset` was told about (by its config), beside the registered ones.

    Attributes:
        result_table: The config's result table: with --drop-results dropped only when it
            is the one registered to the query, else the reset is refused.
        late_table: The config's separatestream table (the query's rows are deleted).
        dlq_table: The config's dead-letter table (likewise).
    """

    result_table: str | None = None
    late_table: str | None = None
    dlq_table: str | None = None


#: The tables that hold a query's checkpoint, keyed by `query` (deleted by a reset).
_CHECKPOINT_ROWS = (
    QUERIES_TABLE,
    POSITIONS_TABLE,
    LEDGER_TABLE,
    STATE_TABLE,
    RUNS_TABLE,
    PROGRESS_TABLE,
    LEGACY_PARTIALS_TABLE,
    FILES_TABLE,
)


async def reset_query(
    conn: Any,
    query: str,
    *,
    drop_results: bool = False,
    named: ResetTables = ResetTables(),
    wait: bool = False,
) -> ResetReport:
    """Drop a query's checkpoint (registration, positions, ledger, states, runs, progress, files).

    Refused while a worker of the query runs (its claim, `postgres_claims`), unless
    `wait`: then it waits for the workers to stop, and workers starting meanwhile wait
    for the reset.

    Args:
        conn: A connection (a transaction is opened here).
        query: The query name.
        drop_results: Also drop the result table registered to the query, and delete
            the query's rows of its late-data and dead-letter tables (queries may share
            those, so they are not dropped).
        named: Tables a config names for the query.
        wait: Wait for live workers to stop.

    Raises:
        QueryRunningError: a worker of the query runs (and not `wait`).
        NoCheckpointError: the database holds no checkpoint of the query.
        CheckpointConflictError: --drop-results and the config's result table is not the
            one registered to the query: nothing was changed.
    """
    counts: dict[str, int] = {}
    async with conn.transaction():
        await lock_out_workers(conn, query, wait=wait, doing="reset")
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"streamproc:{query}")
        registered = None
        if await table_exists(conn, QUERIES_TABLE):
            await ensure_registry_columns(conn)
            registered = await conn.fetchrow(
                f"SELECT result_table, late_table, dlq_table FROM {quote_ident(QUERIES_TABLE)} "
                "WHERE query = $1",
                query,
            )
        owned = registered["result_table"] if registered is not None else None
        drop: list[str] = []
        if drop_results:
            drop = await _tables_to_drop(conn, query, owned, named.result_table)
        side = {named.late_table, named.dlq_table}
        if registered is not None:
            side |= {registered["late_table"], registered["dlq_table"]}
        side_tables = sorted(t for t in side if t) if drop_results else []
        for table in (*_CHECKPOINT_ROWS, *side_tables):
            counts[table] = 0
            if await table_exists(conn, table):
                status: str = await conn.execute(
                    f"DELETE FROM {quote_ident(table)} WHERE query = $1", query
                )
                counts[table] = int(status.split()[-1])
        if not any(counts[t] for t in _CHECKPOINT_ROWS) and not drop:
            raise NoCheckpointError(
                f"query {query!r} has no checkpoint in this database (no registration, "
                "position, ledger or state rows): nothing was changed; check the query name "
                "(queryName) and the database"
            )
        for table in drop:
            await conn.execute(f"DROP TABLE {quote_ident(table)}")
    late = registered["late_table"] if registered is not None else named.late_table
    dlq = registered["dlq_table"] if registered is not None else named.dlq_table
    return ResetReport(
        counts[LEDGER_TABLE],
        counts[STATE_TABLE],
        counts[POSITIONS_TABLE],
        counts.get(late or named.late_table or "", 0),
        tuple(drop),
        counts.get(dlq or named.dlq_table or "", 0),
    )


async def _tables_to_drop(conn: Any, query: str, owned: str | None, named: str | None) -> list[str]:
    """The result table a --drop-results drops: the one registered to the query, if it exists.

    Raises:
        CheckpointConflictError: the config names another table (the query does not own
            it: a hand-made table, another query's, or one never registered).
    """
    if named is not None and named != owned:
        owner = (
            await conn.fetchval(
                f"SELECT query FROM {quote_ident(QUERIES_TABLE)} WHERE result_table = $1", named
            )
            if await table_exists(conn, QUERIES_TABLE)
            else None
        )
        whose = f"it belongs to query {owner}" if owner else "no query owns it"
        mine = f"query {query} owns table {owned}" if owned else f"query {query} owns no table"
        raise CheckpointConflictError(
            f"table {named} (load.table) is not query {query}'s: {whose}, and {mine}; "
            "--drop-results drops only a table registered to the query: nothing was changed "
            "(drop the table by hand if it is yours, or reset without --drop-results)"
        )
    if owned is not None and await table_exists(conn, owned):
        return [owned]
    return []

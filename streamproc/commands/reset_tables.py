"""`streamproc reset` in PostgreSQL: drop a query's checkpoint, or a batch job's claim.

A query's reset is refused while a worker of it runs (`sinks/postgres_claims.py`),
drops only the result table registered to the query (`--drop-results`), and is
an error when the database holds no checkpoint of the query. A batch job's reset
forgets the table it owns (and drops it with `--drop-results`).

It empties the checkpoint's tables (`sinks/`) and the file source's registry
(`sources/file_registry.py`) together, so it lives with the command, above both.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from streamproc.sinks.base import CheckpointConflictError, CheckpointError
from streamproc.sinks.layout import (
    LEDGER_TABLE,
    LEGACY_PARTIALS_TABLE,
    POSITIONS_TABLE,
    PROGRESS_TABLE,
    QUERIES_TABLE,
    RUNS_TABLE,
    STATE_TABLE,
    quote_ident,
)
from streamproc.sinks.postgres_claims import lock_out_workers
from streamproc.sinks.postgres_owners import release_batch_job
from streamproc.sinks.postgres_registry import ensure_registry_columns, table_exists
from streamproc.sinks.postgres_sessions import drop_session_index
from streamproc.sources.file_registry import FILES_TABLE, keep_files_for_rerun


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
    """Drop a query's checkpoint (registration, positions, ledger, states, runs, progress).

    A file source's files are kept with its results (their ordinals are part
    of the kept rows' keys), and dropped with them.

    Refused while a worker of the query runs (its claim, `postgres_claims`), unless
    `wait`: then it waits for the workers to stop, and workers starting meanwhile wait
    for the reset.

    Args:
        conn: A connection (a transaction is opened here).
        query: The query name.
        drop_results: Also drop the result table registered to the query, delete
            the query's rows of its late-data and dead-letter tables (queries may share
            those, so they are not dropped) and its registered files.
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
            if table == FILES_TABLE and not drop_results:
                # The kept rows' keys carry the files' ordinals: the files stay with them
                # (and, kept, they are no checkpoint to reset).
                await keep_files_for_rerun(conn, query)
                continue
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
        # A session query's own index of the state table: empty now, and every write
        # of any query's state rows would still check its predicate. A rerun makes it
        # again.
        await drop_session_index(conn, query)
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


async def reset_batch_job(
    conn: Any, pipeline_id: str, *, drop_results: bool, dlq_table: str | None = None
) -> ResetReport:
    """Forget which table a batch job owns (with `drop_results`, drop it and its dead letters).

    Raises:
        NoCheckpointError: the job owns no table in this database.
    """
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", "streamproc:ddl")
        table = await release_batch_job(conn, pipeline_id)
        if table is None:
            raise NoCheckpointError(
                f"batch job {pipeline_id!r} owns no table in this database: nothing was "
                "changed; check pipelineId and the database"
            )
        letters = 0
        if drop_results and dlq_table is not None and await table_exists(conn, dlq_table):
            status: str = await conn.execute(
                f"DELETE FROM {quote_ident(dlq_table)} WHERE query = $1", pipeline_id
            )
            letters = int(status.split()[-1])
        dropped: tuple[str, ...] = ()
        if drop_results and await table_exists(conn, table):
            await conn.execute(f"DROP TABLE {quote_ident(table)}")
            dropped = (table,)
    return ResetReport(0, 0, 0, 0, dropped, letters)

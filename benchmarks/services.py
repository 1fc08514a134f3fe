"""The broker and the database of a benchmark run, and the checks made against them.

`services()` yields (bootstrap, dsn): STREAMPROC_KAFKA_BOOTSTRAP and
STREAMPROC_PG_DSN when set, else the embedded stack of `streamproc.local`,
started here and stopped (by PID, as recorded in its stack.json) on the way out;
then the postmaster's PID is known too, for the scale-out part's PostgreSQL CPU
accounting (benchmarks/pgcpu.py), which an external database cannot have.
`ledger_count` is the correctness check made after every streamproc run: the
PostgreSQL ledger must count every produced record exactly once.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg


@dataclass(frozen=True)
class Services:
    bootstrap: str
    dsn: str
    embedded: bool  # started by the harness (else from the environment)
    # The embedded PostgreSQL's postmaster; None for a database from STREAMPROC_PG_DSN
    # (it may run on another machine: its processes are not ours to read).
    postgres_pid: int | None = None


@contextlib.contextmanager
def services() -> Iterator[Services]:
    """The broker and PostgreSQL to use, started (and stopped) if not given."""
    bootstrap = os.environ.get("STREAMPROC_KAFKA_BOOTSTRAP")
    dsn = os.environ.get("STREAMPROC_PG_DSN")
    if bootstrap and dsn:
        yield Services(bootstrap, dsn, embedded=False)
        return
    from streamproc.local import start_stack, stop_stack

    run_dir = Path(tempfile.mkdtemp(prefix="bench-stack-"))
    info = start_stack(
        run_dir, broker=not bootstrap, postgres=not dsn, die_with_parent=True, timeout=60
    )
    try:
        yield Services(
            bootstrap or info.bootstrap,
            dsn or info.dsn,
            embedded=True,
            postgres_pid=None if dsn else info.postgres_pid or None,
        )
    finally:
        stop_stack(run_dir)
        shutil.rmtree(run_dir, ignore_errors=True)


async def fetchval(dsn: str, sql: str, *args: Any) -> Any:
    """One value of one query, on a fresh connection."""
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetchval(sql, *args)
    finally:
        await conn.close()


async def ledger_count(dsn: str, query: str) -> int:
    """Records the ledger counts for a query (0 if it has no ledger yet)."""
    if not await fetchval(dsn, "SELECT to_regclass('streamproc_ledger') IS NOT NULL"):
        return 0
    n = await fetchval(
        dsn, "SELECT coalesce(sum(records), 0) FROM streamproc_ledger WHERE query = $1", query
    )
    return int(n)


async def ledger_late(dsn: str, query: str) -> int:
    """Late records the ledger counts for a query."""
    n = await fetchval(
        dsn, "SELECT coalesce(sum(late), 0) FROM streamproc_ledger WHERE query = $1", query
    )
    return int(n)


async def table_rows(dsn: str, table: str) -> int | None:
    """Rows of a table; None when it does not exist."""
    if not await fetchval(dsn, "SELECT to_regclass($1) IS NOT NULL", f'"{table}"'):
        return None
    return int(await fetchval(dsn, f'SELECT count(*) FROM "{table}"'))


async def bytes_per_row(dsn: str, table: str, query: str) -> dict[str, float | None]:
    """What a query's rows cost PostgreSQL: result table bytes (heap, indexes, TOAST) per row,
    and the average size of the query's state rows (tuples only: that table is shared)."""
    out: dict[str, float | None] = {"result_bytes_per_row": None, "state_bytes_per_row": None}
    rows = await table_rows(dsn, table)
    if rows:
        size = await fetchval(dsn, "SELECT pg_total_relation_size($1)", f'"{table}"')
        out["result_bytes_per_row"] = int(size) / rows
    if await fetchval(dsn, "SELECT to_regclass('streamproc_state') IS NOT NULL"):
        avg = await fetchval(
            dsn, "SELECT avg(pg_column_size(s.*)) FROM streamproc_state s WHERE query = $1", query
        )
        out["state_bytes_per_row"] = float(avg) if avg is not None else None
    return out

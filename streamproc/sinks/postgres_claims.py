"""Who runs a query right now: each worker's claim, seen by `reset` and by other workers.

Every worker of a query holds, on a connection of its own, a shared session
advisory lock on the query's claim key for as long as it runs, and names
itself in that connection's `application_name` (`streamproc worker
HOST:PID`). PostgreSQL releases the lock the moment the connection closes,
a worker killed with -9 included, so a claim is never left behind.

- `streamproc reset` takes the key exclusively inside its transaction: it
  gets it only when no worker holds a claim (or, with --wait, once they are
  gone), and workers starting meanwhile wait for the reset to finish.
- A worker registering a query whose stored definition differs from its own
  is refused while another worker holds a claim: of workers that start a new
  query together with different configs, exactly one registers it.
"""

from __future__ import annotations

import os
import socket
from typing import Any

import asyncpg

from streamproc.sinks.base import QueryRunningError

_CLAIM_CLASS = "streamproc:worker"
#: How a worker names itself on its claim connection (PostgreSQL keeps 63 bytes).
APPLICATION_PREFIX = "streamproc worker "


def worker_name() -> str:
    """This process as a worker: HOST:PID."""
    return f"{socket.gethostname()}:{os.getpid()}"


async def _keys(conn: Any, query: str) -> tuple[int, int]:
    row = await conn.fetchrow("SELECT hashtext($1) AS k1, hashtext($2) AS k2", _CLAIM_CLASS, query)
    return int(row["k1"]), int(row["k2"])


class WorkerClaim:
    """This worker's claim on its query: a shared advisory lock on a connection of its own."""

    def __init__(self, dsn: str, query: str, worker: str | None = None) -> None:
        self._dsn = dsn
        self._query = query
        self._worker = worker or worker_name()
        self._conn: Any = None
        self._lock_keys = (0, 0)
        #: The server process of the claim's connection (to tell this claim from others).
        self.backend_pid: int | None = None

    async def take(self) -> None:
        """Connect and hold the claim (waits while a `reset` of the query runs)."""
        if self._conn is not None and not self._conn.is_closed():
            return
        name = (APPLICATION_PREFIX + self._worker)[:63]
        conn = await asyncpg.connect(
            self._dsn, timeout=10, server_settings={"application_name": name}
        )
        try:
            k1, k2 = self._lock_keys = await _keys(conn, self._query)
            await conn.execute("SELECT pg_advisory_lock_shared($1, $2)", k1, k2)
        except BaseException:
            conn.terminate()
            raise
        self._conn = conn
        self.backend_pid = conn.get_server_pid()

    async def others(self) -> int:
        """How many other connections hold a claim on the query (0 without a claim)."""
        if self._conn is None or self._conn.is_closed():
            return 0
        k1, k2 = self._lock_keys
        count: int = await self._conn.fetchval(
            """SELECT count(*) FROM pg_locks
               WHERE locktype = 'advisory' AND classid::bigint = $1 AND objid::bigint = $2
                 AND objsubid = 2 AND granted AND mode = 'ShareLock' AND pid <> $3""",
            k1 & 0xFFFFFFFF,
            k2 & 0xFFFFFFFF,
            self.backend_pid,
        )
        return count

    async def release(self) -> None:
        """Let go (closing the connection releases the lock)."""
        conn, self._conn = self._conn, None
        self.backend_pid = None
        if conn is None:
            return
        try:
            await conn.close(timeout=5)
        except Exception:  # the server went away: the lock went with it
            conn.terminate()


async def live_workers(conn: Any, query: str, *, except_pid: int | None = None) -> list[str]:
    """The workers holding a claim on the query, as 'HOST:PID' (or the connection's address)."""
    k1, k2 = await _keys(conn, query)
    rows = await conn.fetch(
        """SELECT a.application_name, a.client_addr::text AS addr, l.pid
           FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid
           WHERE l.locktype = 'advisory' AND l.classid::bigint = $1 AND l.objid::bigint = $2
             AND l.objsubid = 2 AND l.granted AND l.mode = 'ShareLock'
           ORDER BY l.pid""",
        k1 & 0xFFFFFFFF,
        k2 & 0xFFFFFFFF,
    )
    names = []
    for r in rows:
        if r["pid"] == except_pid:
            continue
        app = r["application_name"] or ""
        if app.startswith(APPLICATION_PREFIX):
            names.append(app[len(APPLICATION_PREFIX) :])
        else:
            names.append(f"a connection from {r['addr'] or 'a local socket'}")
    return names


async def lock_out_workers(conn: Any, query: str, *, wait: bool, doing: str) -> None:
    """Inside a transaction: make sure no worker of the query runs until it ends.

    Args:
        wait: Wait for live workers to stop (else refuse at once).
        doing: What is refused, for the message ("reset", ...).

    Raises:
        QueryRunningError: a worker holds a claim (and wait is False).
    """
    k1, k2 = await _keys(conn, query)
    if wait:
        await conn.execute("SELECT pg_advisory_xact_lock($1, $2)", k1, k2)
        return
    if await conn.fetchval("SELECT pg_try_advisory_xact_lock($1, $2)", k1, k2):
        return
    workers = await live_workers(conn, query)
    raise QueryRunningError(
        f"query {query} is running (worker{'s' if len(workers) > 1 else ''} "
        f"{', '.join(workers) or 'unknown'}): {doing} would pull its checkpoint from under "
        f"it; stop the worker{'s' if len(workers) > 1 else ''} first, or add --wait to "
        f"{doing} once they stop"
    )

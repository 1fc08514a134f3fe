"""Bounded runs (once, availablenow) shared by every worker of a query, in PostgreSQL.

A bounded run ends when every partition of the topic reached the end offsets
taken when the run began, whoever processed them. The ends are taken once
per run and kept in `streamproc_runs`, so every worker of the run agrees.

Who is in a run: each member holds a shared advisory lock on the query's run
key, on a connection of its own, for as long as it runs; PostgreSQL releases
it the moment the member's connection closes, killed workers included. A
worker starting a bounded run joins the run in progress when another member
still holds the lock; otherwise the previous run is over (finished, or
abandoned by workers that died), and it begins a new one with new ends.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import asyncpg

from streamproc.sinks.base import BoundedRun
from streamproc.sinks.layout import RUNS_TABLE, quote_ident

log = logging.getLogger("streamproc.runs")

_RUN_LOCK_CLASS = "streamproc:run"


class RunMembership:
    """This worker's membership of its query's bounded run."""

    def __init__(self, dsn: str, query: str) -> None:
        self._dsn = dsn
        self._query = query
        self._conn: Any = None

    async def begin(
        self,
        pool: Any,
        trigger: str,
        take_ends: Callable[[], Awaitable[Mapping[int, int]]],
    ) -> BoundedRun:
        """Join the run in progress, or begin one with the ends take_ends gives."""
        await self.leave()
        self._conn = await asyncpg.connect(self._dsn, timeout=10)
        keys = await self._conn.fetchrow(
            "SELECT hashtext($1) AS k1, hashtext($2) AS k2", _RUN_LOCK_CLASS, self._query
        )
        await self._conn.execute("SELECT pg_advisory_lock_shared($1, $2)", keys["k1"], keys["k2"])
        me = self._conn.get_server_pid()
        runs = quote_ident(RUNS_TABLE)
        async with pool.acquire() as conn, conn.transaction():
            # The same lock as the commits: a run begins between two commits.
            await conn.execute(
                "SELECT pg_advisory_xact_lock(hashtext($1))", f"streamproc:{self._query}"
            )
            last = await conn.fetchrow(
                f"SELECT run_id, end_offsets, status FROM {runs} WHERE query = $1 "
                "ORDER BY run_id DESC LIMIT 1",
                self._query,
            )
            others = await conn.fetchval(
                """SELECT count(*) FROM pg_locks
                   WHERE locktype = 'advisory' AND classid::bigint = $1 AND objid::bigint = $2
                     AND objsubid = 2 AND granted AND pid <> $3""",
                keys["k1"] & 0xFFFFFFFF,
                keys["k2"] & 0xFFFFFFFF,
                me,
            )
            if last is not None and last["status"] == "running":
                if others:
                    ends = dict(enumerate(last["end_offsets"]))
                    return BoundedRun(last["run_id"], ends, joined=True)
                # Its members are gone (they finished or died): it is over.
                await conn.execute(
                    f"UPDATE {runs} SET status = 'abandoned', finished_at = now() "
                    "WHERE query = $1 AND run_id = $2",
                    self._query,
                    last["run_id"],
                )
            ends = dict(await take_ends())
            run_id = 1 if last is None else last["run_id"] + 1
            await conn.execute(
                f"INSERT INTO {runs} (query, run_id, trigger, end_offsets) VALUES ($1, $2, $3, $4)",
                self._query,
                run_id,
                trigger,
                [ends.get(p, 0) for p in range(max(ends, default=-1) + 1)],
            )
            return BoundedRun(run_id, ends)

    async def finish(self, pool: Any, run: BoundedRun) -> None:
        """Mark the run done, then leave it."""
        async with pool.acquire() as conn:
            await conn.execute(
                f"UPDATE {quote_ident(RUNS_TABLE)} SET status = 'done', finished_at = now() "
                "WHERE query = $1 AND run_id = $2 AND status = 'running'",
                self._query,
                run.run_id,
            )
        await self.leave()

    async def leave(self) -> None:
        """Stop being a member (closing the connection releases the lock)."""
        if self._conn is not None:
            conn, self._conn = self._conn, None
            try:
                await conn.close(timeout=5)
            except Exception as exc:  # the server went away: the lock went with it
                log.debug("closing the run membership connection: %s", exc)
                conn.terminate()

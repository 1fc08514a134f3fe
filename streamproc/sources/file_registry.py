"""Where the file source keeps which file has which ordinal, and its one-worker lock.

A file gets its ordinal when it is first listed, and the registration is
written before any of its lines is read (a write-ahead log, as Spark's file
source keeps one): a crash between the two leaves a file known and unread,
which is what a restart would find anyway. Ordinals never change, so the
offsets in the ledger and positions (which carry the ordinal) always name the
same file.

`PostgresFileRegistry` keeps the files in `streamproc_files` next to the
checkpoint and holds a session advisory lock per query while the source is
open: a second worker of the same query stops with one line (a file source
has no group protocol to share files). `MemoryFileRegistry` is the in-memory
one for component tests.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Protocol

from streamproc.sinks.layout import FILES_TABLE
from streamproc.sources.base import SourceConflictError


@dataclass(frozen=True, slots=True)
class FileEntry:
    """A file the source knows: its ordinal, path, and what it looked like when found.

    Attributes:
        ordinal: its place in discovery order (from 0), the high bits of its offsets.
        path: as listed (the directory, file or glob of extract.path, joined).
        size: its size in bytes when found.
        head: its first bytes when found (up to HEAD_BYTES): a file replaced under
            the same name differs there.
        finished_size: its size when the source moved on to a newer file (None
            before): growth past it is lines that will never be read, and is said.
    """

    ordinal: int
    path: str
    size: int
    head: bytes
    finished_size: int | None = None


class FileRegistry(Protocol):
    """The ordinals of a query's files, and the lock that keeps it to one worker."""

    async def open(self) -> list[FileEntry]:
        """Take the query's file-source lock and load its files, in ordinal order.

        Raises:
            SourceConflictError: another worker holds the lock.
        """
        ...

    async def register(self, entries: list[FileEntry]) -> None:
        """Record new files (durably, before any of their lines is read)."""
        ...

    async def finished(self, ordinal: int, size: int) -> None:
        """The source moved on from this file when it was `size` bytes."""
        ...

    async def close(self) -> None:
        """Release the lock."""
        ...


def busy_message(query: str) -> str:
    """The line a second worker of a file-source query stops with."""
    return (
        f"query {query}: another worker is reading its file source; a file source is read "
        "by one worker at a time (stop the other worker, or give this one another queryName)"
    )


class MemoryFileRegistry:
    """Registrations in memory; `locked` plays another worker holding the lock."""

    def __init__(self, query: str) -> None:
        self.query = query
        self.entries: list[FileEntry] = []
        self.locked = False

    async def open(self) -> list[FileEntry]:
        """Take the lock and return the files registered so far."""
        if self.locked:
            raise SourceConflictError(busy_message(self.query))
        self.locked = True
        return list(self.entries)

    async def register(self, entries: list[FileEntry]) -> None:
        """Append the new files."""
        self.entries.extend(entries)

    async def finished(self, ordinal: int, size: int) -> None:
        """Keep the size the source moved on at."""
        self.entries = [
            replace(e, finished_size=size) if e.ordinal == ordinal else e for e in self.entries
        ]

    async def close(self) -> None:
        """Release the lock."""
        self.locked = False


_CREATE = f"""
CREATE TABLE IF NOT EXISTS {FILES_TABLE} (
    query text NOT NULL,
    ordinal integer NOT NULL,
    path text NOT NULL,
    size bigint NOT NULL,
    head bytea NOT NULL,
    finished_size bigint,
    registered_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (query, ordinal),
    UNIQUE (query, path)
)"""


class PostgresFileRegistry:
    """Registrations in `streamproc_files`; the lock is a session advisory lock."""

    def __init__(self, dsn: str, query: str) -> None:
        self._dsn = dsn
        self._query = query
        self._conn: Any = None

    async def open(self) -> list[FileEntry]:
        """Connect, take the lock, create the table when missing, load the files."""
        import asyncpg  # the port is importable without the driver (unit tests)

        conn = await asyncpg.connect(self._dsn)
        try:
            got = await conn.fetchval(
                "SELECT pg_try_advisory_lock(hashtext($1))", f"streamproc-files:{self._query}"
            )
            if not got:
                raise SourceConflictError(busy_message(self._query))
            # Two first starts may race to create the table; the lock above does not cover it.
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock(hashtext('streamproc-files'))")
                await conn.execute(_CREATE)
            rows = await conn.fetch(
                f"SELECT ordinal, path, size, head, finished_size FROM {FILES_TABLE} "
                "WHERE query = $1 ORDER BY ordinal",
                self._query,
            )
        except BaseException:
            await conn.close()
            raise
        self._conn = conn
        return [
            FileEntry(r["ordinal"], r["path"], r["size"], bytes(r["head"]), r["finished_size"])
            for r in rows
        ]

    async def register(self, entries: list[FileEntry]) -> None:
        """Insert the new files in one transaction."""
        if not entries:
            return
        async with self._conn.transaction():
            await self._conn.executemany(
                f"INSERT INTO {FILES_TABLE} (query, ordinal, path, size, head) "
                "VALUES ($1, $2, $3, $4, $5)",
                [(self._query, e.ordinal, e.path, e.size, e.head) for e in entries],
            )

    async def finished(self, ordinal: int, size: int) -> None:
        """Record the size the source moved on at."""
        await self._conn.execute(
            f"UPDATE {FILES_TABLE} SET finished_size = $3 WHERE query = $1 AND ordinal = $2",
            self._query,
            ordinal,
            size,
        )

    async def close(self) -> None:
        """Close the connection (the session lock goes with it)."""
        if self._conn is not None:
            conn, self._conn = self._conn, None
            await conn.close()

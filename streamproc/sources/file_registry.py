"""Where the file source keeps which file has which ordinal, and its one-worker lock.

A file gets its ordinal when it is first listed with a complete line, and the
registration is written before any of its lines is read (a write-ahead log,
as Spark's file source keeps one): a crash between the two leaves a file
known and unread, which is what a restart would find anyway. Ordinals never
change, so the offsets in the ledger and positions (which carry the ordinal)
always name the same file. A row keeps what the file is (device and inode,
and its first content bytes) and where it was last seen; `streamproc reset`
keeps the rows when it keeps the results (`keep_files_for_rerun`).

`PostgresFileRegistry` keeps the files in `streamproc_files` next to the
checkpoint and holds a session advisory lock per query while the source is
open: a second worker of the same query stops with one line (a file source
has no group protocol to share files). `MemoryFileRegistry` is the in-memory
one for component tests.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Protocol

from streamproc.sources.base import SourceConflictError
from streamproc.sources.file_identity import FileId

#: The file source's files and their ordinals, beside the checkpoint's tables (a
#: reset keeps or drops its rows with them; `status` reads it to name a file).
FILES_TABLE = "streamproc_files"


@dataclass(frozen=True, slots=True)
class FileEntry:
    """A file the source knows: its ordinal, where it was last seen, and what it is.

    Attributes:
        ordinal: its place in discovery order (from 0), the high bits of its offsets.
        path: where it was last seen (as listed); a rename updates it.
        size: the largest size in bytes it was seen at (plain files; a `.gz`'s
            compressed size when found).
        head: its first content bytes (up to HEAD_BYTES; decompressed for a `.gz`),
            at least its first line: what it is, wherever it is (`file_identity`).
        finished_size: its size when the source moved on to a newer file (None
            before): growth past it is lines that will never be read, and is said.
        file_id: its device and inode (None for a file registered before they were kept).
        lost_bytes: set once the file was found gone (deleted, or truncated under
            onFileTruncated continue) with that many bytes not read, and said so;
            it is not read any more.
        before_reset: registered before `streamproc reset` kept the query's
            results: its ordinal still names it, and its absence is not news.
        target: where its path pointed when last seen, when that path is a symbolic
            link: swapped to another target, the link no longer names this file,
            but the file may still be there to be read to its end.
    """

    ordinal: int
    path: str
    size: int
    head: bytes
    finished_size: int | None = None
    file_id: FileId | None = None
    lost_bytes: int | None = None
    before_reset: bool = False
    target: str | None = None


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

    async def update(self, entries: list[FileEntry]) -> None:
        """Record what changed of known files (path, identity, head, finished or lost)."""
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

    async def update(self, entries: list[FileEntry]) -> None:
        """Replace the files of these ordinals."""
        changed = {e.ordinal: e for e in entries}
        self.entries = [changed.get(e.ordinal, e) for e in self.entries]

    def reset(self) -> None:
        """What `streamproc reset` without --drop-results does: the files stay, before_reset."""
        self.entries = [replace(e, before_reset=True) for e in self.entries]

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
    dev bigint,
    ino bigint,
    lost_bytes bigint,
    before_reset boolean NOT NULL DEFAULT false,
    target text,
    PRIMARY KEY (query, ordinal)
)"""

#: A table made before files were known by identity: the columns it lacks, and
#: paths are no longer unique (a new file may have the name of a rotated one).
_MIGRATE = (
    f"ALTER TABLE {FILES_TABLE} ADD COLUMN IF NOT EXISTS dev bigint",
    f"ALTER TABLE {FILES_TABLE} ADD COLUMN IF NOT EXISTS ino bigint",
    f"ALTER TABLE {FILES_TABLE} ADD COLUMN IF NOT EXISTS lost_bytes bigint",
    f"ALTER TABLE {FILES_TABLE} ADD COLUMN IF NOT EXISTS before_reset boolean NOT NULL "
    "DEFAULT false",
    f"ALTER TABLE {FILES_TABLE} ADD COLUMN IF NOT EXISTS target text",
    f"ALTER TABLE {FILES_TABLE} DROP CONSTRAINT IF EXISTS {FILES_TABLE}_query_path_key",
)
_COLUMNS = "ordinal, path, size, head, finished_size, dev, ino, lost_bytes, before_reset, target"


async def ensure_files_table(conn: Any) -> None:
    """Create `streamproc_files`, or add what an older one lacks (once; no lock otherwise).

    Call inside a transaction.
    """
    await conn.execute("SELECT pg_advisory_xact_lock(hashtext('streamproc-files'))")
    await conn.execute(_CREATE)
    present = await conn.fetchval(
        """SELECT EXISTS (SELECT 1 FROM pg_attribute
                          WHERE attrelid = to_regclass($1) AND attname = 'target'
                            AND NOT attisdropped)""",
        FILES_TABLE,
    )
    if not present:
        for statement in _MIGRATE:
            await conn.execute(statement)


async def keep_files_for_rerun(conn: Any, query: str) -> int:
    """`streamproc reset` that keeps the results keeps the query's files too; how many.

    The kept rows' keys carry the files' ordinals (source_offset = ordinal << 40
    | byte): the rerun finds each file present by what it is and reads it under
    the same ordinal, so that it adds nothing. A file registered before the
    reset and gone since is no news (`FileEntry.before_reset`). Call inside a
    transaction; nothing is done when there is no files table.
    """
    exists = await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", FILES_TABLE)
    if not exists:
        return 0
    await ensure_files_table(conn)
    status: str = await conn.execute(
        f"UPDATE {FILES_TABLE} SET before_reset = true WHERE query = $1", query
    )
    return int(status.split()[-1])


def _signed(value: int) -> int:
    """An inode number (unsigned 64 bits) as a bigint."""
    return value - (1 << 64) if value >= 1 << 63 else value


def _unsigned(value: int) -> int:
    return value + (1 << 64) if value < 0 else value


class PostgresFileRegistry:
    """Registrations in `streamproc_files`; the lock is a session advisory lock."""

    def __init__(self, dsn: str, query: str) -> None:
        self._dsn = dsn
        self._query = query
        self._conn: Any = None

    async def open(self) -> list[FileEntry]:
        """Connect, take the lock, create (or migrate) the table, load the files."""
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
                await ensure_files_table(conn)
            rows = await conn.fetch(
                f"SELECT {_COLUMNS} FROM {FILES_TABLE} WHERE query = $1 ORDER BY ordinal",
                self._query,
            )
        except BaseException:
            await conn.close()
            raise
        self._conn = conn
        return [
            FileEntry(
                r["ordinal"],
                r["path"],
                r["size"],
                bytes(r["head"]),
                r["finished_size"],
                None if r["ino"] is None else FileId(_unsigned(r["dev"]), _unsigned(r["ino"])),
                r["lost_bytes"],
                r["before_reset"],
                r["target"],
            )
            for r in rows
        ]

    async def register(self, entries: list[FileEntry]) -> None:
        """Insert the new files in one transaction."""
        if not entries:
            return
        async with self._conn.transaction():
            await self._conn.executemany(
                f"INSERT INTO {FILES_TABLE} (query, {_COLUMNS}) "
                "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
                [(self._query, *_values(e)) for e in entries],
            )

    async def update(self, entries: list[FileEntry]) -> None:
        """Rewrite these files' rows in one transaction."""
        if not entries:
            return
        async with self._conn.transaction():
            await self._conn.executemany(
                f"UPDATE {FILES_TABLE} SET path = $3, size = $4, head = $5, finished_size = $6, "
                "dev = $7, ino = $8, lost_bytes = $9, before_reset = $10, target = $11 "
                "WHERE query = $1 AND ordinal = $2",
                [(self._query, *_values(e)) for e in entries],
            )

    async def close(self) -> None:
        """Close the connection (the session lock goes with it)."""
        if self._conn is not None:
            conn, self._conn = self._conn, None
            await conn.close()


def _values(e: FileEntry) -> tuple[Any, ...]:
    dev = None if e.file_id is None else _signed(e.file_id.dev)
    ino = None if e.file_id is None else _signed(e.file_id.ino)
    return (
        e.ordinal,
        e.path,
        e.size,
        e.head,
        e.finished_size,
        dev,
        ino,
        e.lost_bytes,
        e.before_reset,
        e.target,
    )

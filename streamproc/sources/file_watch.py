"""The file source's view of its files: registered, listed, reconciled, and what changed.

`FileWatch` keeps the query's registered files (`file_registry`), lists
extract.path and reconciles each listing with them (`file_identity`): it
registers new files, follows renamed, copied and compressed ones, and acts
on files truncated or rewritten in place (onFileTruncated) and on files gone
with bytes unread (onFileDeleted). Which bytes were read is the reader's
(`files.FileSource`) position: files before it were read to their end, the
one it is in up to its byte, those after it not at all. Until the position
is known (at start-up, before the checkpoint is read) a listing only finds
and registers files.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING

from streamproc.sources.base import SourceConflictError
from streamproc.sources.file_access import GZIP_ERRORS, OpenFile, is_gzip, observe
from streamproc.sources.file_identity import (
    HEAD_BYTES,
    FileId,
    Known,
    Reconciled,
    Seen,
    heads_match,
    reconcile,
)
from streamproc.sources.file_lines import MAX_FILE_BYTES
from streamproc.sources.file_listing import FileSourceError, list_files
from streamproc.sources.file_registry import FileEntry, FileRegistry

if TYPE_CHECKING:
    from streamproc.sources.files import FileSourceConfig

log = logging.getLogger("streamproc.source")

# A directory listing is cheap but not free: at most this often while idle (wall time).
_LIST_EVERY_S = 0.5
_GZIP_MAGIC = b"\x1f\x8b"


class FileWatch:
    """The registered files of one query and where each of them is now."""

    def __init__(
        self,
        config: FileSourceConfig,
        registry: FileRegistry,
        reader_at: Callable[[], tuple[int, int] | None],
        held: Callable[[int], bool],
        on_unread: Callable[[str, int], None] | None,
    ) -> None:
        """Watch config.path.

        Args:
            config: the source's config.
            registry: where the files are registered.
            reader_at: the reader's position (ordinal, byte), None before it is known.
            held: whether the reader holds a file open (it reads a deleted one to its end).
            on_unread: told (kind, bytes) of each file found gone or truncated unread.
        """
        self._config = config
        self._registry = registry
        self._reader_at = reader_at
        self._held = held
        self._on_unread = on_unread
        self.entries: list[FileEntry] = []
        #: The checkpoint's position while it is being restored (before the reader has one).
        self.restoring: tuple[int, int] | None = None
        #: Where each file was found at the last listing.
        self._where: dict[int, Seen] = {}
        #: Size of each plain file behind the current one when last looked at: a file
        #: that grows after the source moved on has lines that will never be read.
        self._behind_sizes: dict[int, int] = {}
        self._listed_at = float("-inf")
        self.unread_files = 0
        self.unread_bytes = 0

    # ------------------------------------------------------------- the registry
    async def open_registry(self) -> None:
        """Load the registered files and list the path once (registering what is new)."""
        self.entries = await self._registry.open()
        self._behind_sizes = {
            e.ordinal: e.finished_size for e in self.entries if e.finished_size is not None
        }
        await self._upgrade_gzip_heads()
        await self.discover(force=True)

    async def _upgrade_gzip_heads(self) -> None:
        """A `.gz` registered before heads were content has its compressed head: decompress it."""
        upgraded = []
        for e in self.entries:
            if e.file_id is not None or not is_gzip(e.path) or not e.head.startswith(_GZIP_MAGIC):
                continue
            try:
                with open(e.path, "rb") as f:
                    raw = f.read(len(e.head))
            except OSError:
                continue
            seen = observe(e.path, head=True) if raw == e.head else None
            if seen is not None and seen.head is not None:
                upgraded.append(replace(e, head=seen.head))
        await self._update(upgraded)

    async def _update(self, changed: list[FileEntry]) -> None:
        if changed:
            await self._registry.update(changed)
            for e in changed:
                self.entries[e.ordinal] = e

    async def finished(self, ordinal: int, size: int) -> None:
        """The reader moved on from this file when it was `size` bytes."""
        entry = self.entries[ordinal]
        if is_gzip(entry.path):
            return
        self._behind_sizes[ordinal] = size
        await self._update([replace(entry, finished_size=size)])

    # ------------------------------------------------------------- listing
    def located(self, ordinal: int) -> bool:
        """True when the last listing found this file."""
        return ordinal in self._where

    def _position(self) -> tuple[int, int] | None:
        return self._reader_at() or self.restoring

    async def discover(self, *, force: bool) -> bool:
        """List the path and reconcile it with the registered files; True when any was new."""
        now = time.monotonic()
        if not force and now - self._listed_at < _LIST_EVERY_S:
            return False
        self._listed_at = now
        try:
            paths = list_files(self._config.path, allow_empty=True, patterns=self._config.patterns)
        except FileSourceError as exc:
            raise SourceConflictError(f"query {self._config.query}: {exc}") from None
        pos = self._position()
        behind = self._read_through(pos)
        seen = [s for s in (self._observe(path, behind) for path in paths) if s is not None]
        known = [
            Known(e.ordinal, e.path, e.file_id, e.head, self._read_of(e, pos)) for e in self.entries
        ]
        result = reconcile(known, seen)
        new = await self._apply(result, pos)
        self.check_files_behind()
        return new

    def _read_through(self, pos: tuple[int, int] | None) -> dict[str, FileId]:
        """path -> inode of the files read to their end (each the only file of its path)."""
        if pos is None:
            return {}
        paths: dict[str, int] = {}
        for e in self.entries:
            paths[e.path] = paths.get(e.path, 0) + 1
        return {
            e.path: e.file_id
            for e in self.entries[: pos[0]]
            if e.file_id is not None and e.lost_bytes is None and paths[e.path] == 1
        }

    @staticmethod
    def _observe(path: str, read_through: dict[str, FileId]) -> Seen | None:
        """What path holds; its head is not read for a file read to its end and still there."""
        try:
            if path in read_through:
                seen = observe(path, head=False)
                if seen is None or seen.file_id == read_through[path]:
                    return seen
            return observe(path, head=True)
        except OSError as exc:
            raise SourceConflictError(f"file {path} cannot be read: {exc}") from None

    def _read_of(self, entry: FileEntry, pos: tuple[int, int] | None) -> int:
        """Content bytes of a file read: shorter than that, a file is not that file any more."""
        if pos is None or entry.lost_bytes is not None or entry.ordinal > pos[0]:
            return 0
        if entry.ordinal < pos[0]:
            return entry.finished_size or 0
        return pos[1]

    async def _apply(self, result: Reconciled, pos: tuple[int, int] | None) -> bool:
        updates: list[FileEntry] = []
        for ordinal, seen in result.found.items():
            entry = self.entries[ordinal]
            self._where[ordinal] = seen
            file_id = entry.file_id or seen.file_id
            # The largest size seen is kept: a file gone later is said with what it held.
            size = entry.size if seen.gz else max(entry.size, seen.size)
            moved = replace(
                entry,
                path=seen.path,
                file_id=file_id,
                head=_head(entry, seen),
                size=size,
                target=seen.target if seen.target is not None else entry.target,
            )
            if moved != entry:
                updates.append(moved)
            if seen.path != entry.path and entry.lost_bytes is None:
                log.info(
                    "file %s is %s now (renamed, copied or compressed): it is read on from "
                    "where the query was in it, not again",
                    entry.path,
                    seen.path,
                )
        await self._update(updates)
        for ordinal, seen in result.changed.items():
            self._where.pop(ordinal, None)
            entry = self.entries[ordinal]
            if pos is None or entry.lost_bytes is not None:
                continue
            if ordinal < pos[0]:
                # Read to its end before: what its name holds now is a new file.
                await self._update([replace(entry, lost_bytes=0)])
            else:
                await self.truncated(ordinal, seen)
        for ordinal in result.missing:
            self._where.pop(ordinal, None)
            if pos is None:
                continue
            entry = self.entries[ordinal]
            behind = self._still_behind_link(entry, pos)
            if behind is not None:
                self._where[ordinal] = behind  # to be read to its end where it is
                if behind.size > entry.size:
                    await self._update([replace(entry, size=behind.size)])
            else:
                await self._check_gone(entry, pos)
        return await self._register(result.new)

    async def _register(self, found: list[Seen]) -> bool:
        new: list[FileEntry] = []
        for seen in found:
            assert seen.head is not None
            if not seen.gz and seen.size >= MAX_FILE_BYTES:
                raise SourceConflictError(
                    f"file {seen.path} is {seen.size} bytes; files up to 1 TiB are read"
                )
            ordinal = len(self.entries) + len(new)
            new.append(
                FileEntry(
                    ordinal,
                    seen.path,
                    seen.size,
                    seen.head,
                    file_id=seen.file_id,
                    target=seen.target,
                )
            )
            self._where[ordinal] = seen
        if not new:
            return False
        await self._registry.register(new)
        self.entries += new
        log.info("new files: %s", ", ".join(e.path for e in new))
        return True

    def _still_behind_link(self, entry: FileEntry, pos: tuple[int, int]) -> Seen | None:
        """A file not read to its end whose symlink now points elsewhere, where it still is.

        As a descriptor held on it would (`tail -F`), the file is read to its
        end there, even though no listed name names it any more.
        """
        if entry.target is None or entry.lost_bytes is not None or entry.ordinal < pos[0]:
            return None
        try:
            seen = observe(entry.target, head=True)
        except OSError:
            return None
        if seen is None or seen.head is None or not heads_match(entry.head, seen.head):
            return None
        return seen if entry.file_id in (None, seen.file_id) else None

    # ------------------------------------------------------------- losses
    async def truncated(self, ordinal: int, seen: Seen | None) -> None:
        """A file not read to its end was truncated or rewritten in place (or lost under a rename).

        Raises:
            SourceConflictError: onFileTruncated is stop.
        """
        entry = self.entries[ordinal]
        if entry.lost_bytes is not None:
            return
        pos = self._position()
        read = pos[1] if pos is not None and pos[0] == ordinal else 0
        now = "" if seen is None or seen.gz else f"; it is {seen.size} bytes now"
        if self._config.on_file_truncated == "stop":
            raise SourceConflictError(
                f"file {entry.path} was truncated or rewritten in place after this query read "
                f"{read} bytes of it{now}; the query stops rather than misread it: rotate "
                "files by renaming them (not copytruncate), or set "
                "streamingConfigJson.onFileTruncated to continue to read what it holds now as "
                "a new file, or start the query over with `streamproc reset CONFIG`"
            )
        seen_size = 0 if is_gzip(entry.path) else entry.size  # the largest size seen
        missed = max(0, seen_size - read)
        log.warning(
            "file %s was truncated or rewritten in place after this query read %d of the %d "
            "bytes it had seen; its new content is read as a new file; %d bytes it had seen, "
            "and any written after it last looked, were not read (onFileTruncated: continue)",
            entry.path,
            read,
            max(seen_size, read),
            missed,
        )
        self._count("truncated", missed)
        await self._update([replace(entry, lost_bytes=missed)])

    async def _check_gone(self, entry: FileEntry, pos: tuple[int, int]) -> None:
        """Say a file gone under every name with bytes unread (or stop, onFileDeleted stop).

        A file held open is read to its end through its descriptor; one read to
        its end, or registered before a reset that kept the results, is no news.
        """
        if entry.lost_bytes is not None or entry.before_reset or self._held(entry.ordinal):
            return
        if entry.ordinal < pos[0]:
            return
        read = pos[1] if entry.ordinal == pos[0] else 0
        known = entry.size  # the largest size seen (a .gz: its compressed size)
        unread = known - read
        if unread <= 0:
            return
        what = (
            f"file {entry.path} is gone (deleted, or moved out of extract.path) with {unread} "
            f"bytes not read (this query read {read} of the {known} bytes it last saw, and "
            "none written after)"
        )
        if self._config.on_file_deleted == "stop":
            raise SourceConflictError(
                f"query {self._config.query}: {what}; put it back, or set "
                "streamingConfigJson.onFileDeleted to warn to go on without those lines"
            )
        log.warning("%s: those lines are lost to this query (onFileDeleted: warn)", what)
        self._count("deleted", unread)
        await self._update([replace(entry, lost_bytes=unread)])

    def _count(self, kind: str, unread: int) -> None:
        self.unread_files += 1
        self.unread_bytes += unread
        if self._on_unread is not None:
            self._on_unread(kind, unread)

    # ------------------------------------------------------------- opening
    async def open(self, ordinal: int) -> OpenFile | None:
        """Open the file of this ordinal where it is now; None when it is gone or not read."""
        for _ in range(3):
            entry = self.entries[ordinal]
            if entry.lost_bytes is not None:
                return None
            seen = self._where.get(ordinal)
            if seen is None:
                await self.discover(force=True)
                seen = self._where.get(ordinal)
                if seen is None:
                    return None  # gone (said by the listing when bytes were unread)
            copy = entry.file_id is not None and seen.file_id != entry.file_id
            try:
                f = OpenFile(seen.path, entry.head, copy=copy)
            except FileNotFoundError:
                self._where.pop(ordinal, None)
                continue
            except OSError as exc:
                raise SourceConflictError(f"file {seen.path} cannot be read: {exc}") from None
            if f.file_id == seen.file_id:
                return f
            f.close()  # replaced between the listing and now: look again
            self._where.pop(ordinal, None)
        return None

    def last_end(self, entry: FileEntry) -> int | None:
        """Where the last complete line of a file ends, read where it is now (not held open)."""
        seen = self._where.get(entry.ordinal)
        if seen is None or entry.lost_bytes is not None:
            return None
        copy = entry.file_id is not None and seen.file_id != entry.file_id
        try:
            f = OpenFile(seen.path, entry.head, copy=copy)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise SourceConflictError(f"file {seen.path} cannot be read: {exc}") from None
        try:
            return f.last_end()
        except GZIP_ERRORS:
            return None
        finally:
            f.close()

    # ------------------------------------------------------------- growth behind
    def check_files_behind(self) -> None:
        """Warn when a file the source has moved on from grows: its new lines are not read.

        Offsets run through the files in order, so a file behind the current one
        cannot be read again; its growth is said, with the bytes, each time it is
        seen. The size it is measured from is the one the source moved on at
        (kept in the registry, so growth while no worker ran is said at the next
        start).
        """
        pos = self._reader_at()
        if pos is None:
            return
        for entry in self.entries[: pos[0]]:
            seen = self._where.get(entry.ordinal)
            if seen is None or seen.gz or entry.lost_bytes is not None:
                continue
            ordinal = entry.ordinal
            last = self._behind_sizes.setdefault(ordinal, seen.size)
            if seen.size > last:
                self._behind_sizes[ordinal] = seen.size
                log.warning(
                    "file %s grew by %d bytes after the source moved on to a newer file; "
                    "those lines are not read (files are read in order, and only the newest "
                    "one is followed while it grows): append to the newest file only, or "
                    "write to a new file",
                    seen.path,
                    seen.size - last,
                )


def _head(entry: FileEntry, seen: Seen) -> bytes:
    """The head to keep: the file's own, longer now that it grew (it tells files apart better)."""
    grown = (
        seen.head is not None
        and seen.file_id == (entry.file_id or seen.file_id)
        and len(entry.head) < len(seen.head) <= HEAD_BYTES
        and heads_match(entry.head, seen.head)
    )
    return seen.head if grown and seen.head is not None else entry.head

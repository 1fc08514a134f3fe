"""The streaming file source: JSON-lines files in a directory (or a file, or a glob), followed.

One partition, 0, whose offsets run through the files in discovery order
(`file_lines`): files get ordinals as they appear (modification time, then
name), are read one after another, each up to its last complete line, and the
newest one is followed while it grows. When a newer file exists and the
current one has no complete line left, the source moves on (log rotation);
`maxFilesPerTrigger` bounds how many files one micro-batch starts on. The
ordinals are registered (`file_registry`) before a file is read, and the
checkpoint's position of partition 0 says which file and which byte a restart
resumes at. A name ending in `.gz` is read whole once it is a complete gzip
file. STREAMING.md, "The file source", has the choices and their reasons.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from typing_extensions import override

from streamproc.batch.files import FileSourceError, list_files, read_bytes
from streamproc.sources.base import (
    PartitionInfo,
    PartitionListener,
    RawRecord,
    SourceConflictError,
)
from streamproc.sources.file_lines import (
    HEAD_BYTES,
    MAX_FILE_BYTES,
    LineChunk,
    complete_lines,
    decode_offset,
    discovery_order,
    encode_offset,
    last_record_end,
    line_ending_at,
    partial_tail,
)
from streamproc.sources.file_registry import FileEntry, FileRegistry

log = logging.getLogger("streamproc.source")

# Bytes read from a plain file per step: bounds one fetch's memory, not the batch.
_CHUNK = 4 * 1_048_576
# A directory listing is cheap but not free: at most this often while idle (wall time).
_LIST_EVERY_S = 0.5
_WHAT_TO_DO = (
    "write new data to a new file instead, or start the query over with `streamproc reset CONFIG`"
)


@dataclass(frozen=True, slots=True)
class FileSourceConfig:
    """What the file source reads and how.

    Attributes:
        query: the query name (for messages).
        path: extract.path: a directory, a file or a glob.
        starting_offsets: earliest reads the files present at the first start;
            latest starts with the files that appear after it.
        max_files_per_trigger: at most this many files started per micro-batch.
    """

    query: str
    path: str
    starting_offsets: Literal["earliest", "latest"] = "earliest"
    max_files_per_trigger: int | None = None


class FileSource:
    """The `Source` port over a directory of JSON-lines files (one worker; partition 0)."""

    def __init__(self, config: FileSourceConfig, registry: FileRegistry) -> None:
        self._config = config
        self._registry = registry
        self._entries: list[FileEntry] | None = None
        #: Files present at the first start (what startingOffsets latest skips).
        self._at_open = 0
        self._owned = False
        self._paused = False
        self._pos: tuple[int, int] | None = None
        self._started: set[int] = set()
        self._listed_at = float("-inf")
        self._gzip: tuple[int, bytes] | None = None
        self._warned: set[int] = set()
        #: Size of each plain file behind the current one when last looked at: a file
        #: that grows after the source moved on has lines that will never be read.
        self._behind_sizes: dict[int, int] = {}

    # ------------------------------------------------------------- Source
    @property
    def topic(self) -> str:
        """extract.path: what the checkpoint, ledger and dead letters name as the source."""
        return self._config.path

    async def start(self, listener: PartitionListener, *, early: bool = False) -> None:
        """Take the query's file-source lock and own partition 0 (there is no group)."""
        await self._open()
        self._owned = True
        await listener.on_assigned({0})

    async def stop(self) -> None:
        """Release the lock."""
        self._owned = False
        await self._registry.close()

    def assignment(self) -> set[int]:
        """{0} once started."""
        return {0} if self._owned else set()

    async def partition_count(self) -> int:
        """Always 1: the files are one sequence (see the module docstring)."""
        return 1

    def seek(self, partition: int, offset: int) -> None:
        """Continue at the byte and file the offset names."""
        self._pos = decode_offset(offset)
        # A restart: say now what grew behind the position while no worker ran.
        self._check_files_behind()

    async def seek_to_start(self, partition: int) -> None:
        """earliest: the first file; latest: the first file found after the first start."""
        await self._open()
        first = 0 if self._config.starting_offsets == "earliest" else self._at_open
        self._pos = (first, 0)

    async def position(self, partition: int) -> int:
        """The offset of the next line to read."""
        return encode_offset(*(self._pos or (0, 0)))

    async def describe(self, offsets: Mapping[int, int | None]) -> dict[int, PartitionInfo]:
        """The end after the last complete line, and the line committed last (checked).

        Raises:
            SourceConflictError: the file being read shrank below what was read,
                or was replaced (its first bytes differ from when it was found).
        """
        entries = await self._open()
        await self._discover(force=True)
        out: dict[int, PartitionInfo] = {}
        for partition, offset in offsets.items():
            end = self._end_offset(entries)
            record = None
            if offset is not None:
                record = self._committed_line(entries, offset)
                # A deleted file cannot prove anything: the end must not refuse it.
                end = max(end, offset + 1)
            out[partition] = PartitionInfo(0, end, record)
        return out

    def seen_ends(self) -> dict[int, int]:
        """None known: byte offsets across files make no record count (lag shows '-')."""
        return {}

    def pause(self, partitions: set[int]) -> None:
        """Stop reading (a bounded run reached its end)."""
        if 0 in partitions:
            self._paused = True

    def resume(self, partitions: set[int]) -> None:
        """Read again (sought back below a bounded run's end)."""
        if 0 in partitions:
            self._paused = False

    def trigger_started(self) -> None:
        """A micro-batch begins: maxFilesPerTrigger counts from zero again."""
        self._started.clear()

    async def fetch(self, max_records: int, timeout_ms: int) -> list[RawRecord]:
        """Up to max_records complete lines, moving on to newer files as the current one ends."""
        out: list[RawRecord] = []
        if self._owned and not self._paused and self._pos is not None:
            await self._open()
            out = await self._read(max_records)
        if not out and timeout_ms > 0:
            await asyncio.sleep(timeout_ms / 1000)
        return out

    async def commit(self, offsets: Mapping[int, int]) -> None:
        """Nothing to do: the checkpoint's positions are the only record of progress."""

    # ------------------------------------------------------------- reading
    async def _read(self, max_records: int) -> list[RawRecord]:
        assert self._entries is not None and self._pos is not None
        entries = self._entries
        limit = self._config.max_files_per_trigger
        out: list[RawRecord] = []
        listed = False
        while len(out) < max_records:
            ordinal, byte = self._pos
            if ordinal >= len(entries):
                if listed or not await self._discover(force=False):
                    break
                listed = True
                continue
            if byte == 0 and ordinal not in self._started:
                if limit is not None and len(self._started) >= limit:
                    break  # this micro-batch started its share of files
                self._started.add(ordinal)
            chunk, tail = self._read_file(entries[ordinal], byte, max_records - len(out))
            out += chunk.records
            self._pos = (ordinal, chunk.end)
            if chunk.more:
                continue
            # The file has no complete line left: move on if a newer file exists.
            if ordinal + 1 >= len(entries):
                if listed or not await self._discover(force=not out):
                    break
                listed = True
                if ordinal + 1 >= len(entries):
                    break
            if tail and ordinal not in self._warned:
                self._warned.add(ordinal)
                log.warning(
                    "file %s: its last line (%d bytes) has no newline and a newer file "
                    "follows; that line is not read (a line is read once its newline is "
                    "written, and the source has moved on)",
                    entries[ordinal].path,
                    tail,
                )
            if not entries[ordinal].path.endswith(".gz"):
                self._behind_sizes[ordinal] = chunk.end + tail
                await self._registry.finished(ordinal, chunk.end + tail)
            self._pos = (ordinal + 1, 0)
        return out

    def _read_file(self, entry: FileEntry, byte: int, want: int) -> tuple[LineChunk, int]:
        """The complete lines from byte on, and the length of an incomplete last line."""
        if entry.path.endswith(".gz"):
            data = self._gzip_data(entry)
            if data is None:
                return LineChunk([], byte, False), 0
            rest = data[byte:]
            return complete_lines(rest, byte, entry.ordinal, want), partial_tail(rest)
        try:
            f = open(entry.path, "rb")  # noqa: SIM115 (closed below, read in steps)
        except FileNotFoundError:
            return LineChunk([], byte, False), 0  # deleted after it was read: nothing left
        except OSError as exc:
            raise SourceConflictError(f"file {entry.path} cannot be read: {exc}") from None
        with f:
            size = os.fstat(f.fileno()).st_size
            if size < byte:
                raise SourceConflictError(
                    f"file {entry.path} is {size} bytes, shorter than the {byte} bytes this "
                    f"query read from it: it was truncated or replaced; {_WHAT_TO_DO}"
                )
            f.seek(byte)
            data = f.read(_CHUNK)
            # A line longer than a chunk: read on until its newline (or the end).
            while len(data) >= _CHUNK and b"\n" not in data:
                more = f.read(_CHUNK)
                if not more:
                    break
                data += more
        chunk = complete_lines(data, byte, entry.ordinal, want)
        if not chunk.more and len(data) >= _CHUNK:
            chunk = LineChunk(chunk.records, chunk.end, chunk.end > byte)
        return chunk, partial_tail(data)

    def _gzip_data(self, entry: FileEntry) -> bytes | None:
        """A .gz file's content; None while it is not a complete gzip file and is the newest."""
        if self._gzip is not None and self._gzip[0] == entry.ordinal:
            return self._gzip[1]
        try:
            data = read_bytes(entry.path)
        except FileNotFoundError:
            return None
        except (OSError, EOFError, zlib.error) as exc:
            assert self._entries is not None
            if entry.ordinal + 1 >= len(self._entries):
                return None  # maybe still being written: wait for it
            raise SourceConflictError(
                f"file {entry.path} is not a complete gzip file ({exc}) and newer files "
                "follow it; a .gz file is read whole and must appear complete (write it "
                "under a hidden name, '.' or '_' first, then rename it); move it away and "
                "restart"
            ) from None
        self._gzip = (entry.ordinal, data)
        return data

    # ------------------------------------------------------------- files
    async def _open(self) -> list[FileEntry]:
        if self._entries is None:
            self._entries = await self._registry.open()
            self._behind_sizes = {
                e.ordinal: e.finished_size for e in self._entries if e.finished_size is not None
            }
            await self._discover(force=True)
            self._at_open = len(self._entries)
        return self._entries

    async def _discover(self, *, force: bool) -> bool:
        """List the path and register new files; True when there were any."""
        assert self._entries is not None
        now = time.monotonic()
        if not force and now - self._listed_at < _LIST_EVERY_S:
            return False
        self._listed_at = now
        try:
            paths = list_files(self._config.path, allow_empty=True)
        except FileSourceError as exc:
            raise SourceConflictError(f"query {self._config.query}: {exc}") from None
        found = []
        sizes: dict[str, int] = {}
        for path in paths:
            try:
                stat = os.stat(path)
            except FileNotFoundError:
                continue  # gone between the listing and now
            found.append((path, stat.st_mtime_ns))
            sizes[path] = stat.st_size
        self._check_files_behind(sizes)
        known = [e.path for e in self._entries]
        new: list[FileEntry] = []
        for path in discovery_order(found, known):
            entry = self._found(len(self._entries) + len(new), path)
            if entry is not None:
                new.append(entry)
        if not new:
            return False
        await self._registry.register(new)
        self._entries += new
        log.info("new files: %s", ", ".join(e.path for e in new))
        return True

    def _check_files_behind(self, sizes: Mapping[str, int] | None = None) -> None:
        """Warn when a file the source has moved on from grows: its new lines are not read.

        Offsets run through the files in order, so a file behind the current one
        cannot be read again; its growth is said, with the bytes, each time it is
        seen (`sizes`: the listing's; without it, each file behind is looked at).
        The size it is measured from is the one the source moved on at (kept
        in the registry, so growth while no worker ran is said at the next start).
        """
        if self._entries is None or self._pos is None:
            return
        for entry in self._entries[: self._pos[0]]:
            path = entry.path
            if path.endswith(".gz"):
                continue
            if sizes is not None:
                if path not in sizes:
                    continue
                size = sizes[path]
            else:
                try:
                    size = os.stat(path).st_size
                except FileNotFoundError:
                    continue
            ordinal = entry.ordinal
            seen = self._behind_sizes.setdefault(ordinal, size)
            if size > seen:
                self._behind_sizes[ordinal] = size
                log.warning(
                    "file %s grew by %d bytes after the source moved on to a newer file; "
                    "those lines are not read (files are read in order, and only the newest "
                    "one is followed while it grows): append to the newest file only, or "
                    "write to a new file",
                    path,
                    size - seen,
                )

    def _found(self, ordinal: int, path: str) -> FileEntry | None:
        try:
            with open(path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                head = f.read(HEAD_BYTES)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise SourceConflictError(f"file {path} cannot be read: {exc}") from None
        if size >= MAX_FILE_BYTES:
            raise SourceConflictError(f"file {path} is {size} bytes; files up to 1 TiB are read")
        return FileEntry(ordinal, path, size, head)

    def _end_offset(self, entries: list[FileEntry]) -> int:
        """The offset after the last complete non-blank line of the newest file that has one."""
        for entry in reversed(entries):
            end = self._last_end(entry)
            if end is not None:
                return encode_offset(entry.ordinal, end)
        return 0

    def _last_end(self, entry: FileEntry) -> int | None:
        if entry.path.endswith(".gz"):
            try:
                return last_record_end(read_bytes(entry.path))
            except (OSError, EOFError, zlib.error):
                return None  # not complete (yet): nothing of it is counted
        try:
            with open(entry.path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                window = 65_536
                while True:
                    start = max(0, size - window)
                    f.seek(start)
                    data = f.read(size - start)
                    # From the middle of a file, skip the line begun before `start`.
                    cut = 0 if start == 0 else data.find(b"\n") + 1
                    found = last_record_end(data[cut:]) if start == 0 or cut else None
                    if found is not None:
                        return start + cut + found
                    if start == 0:
                        return None
                    window *= 4
        except FileNotFoundError:
            return None

    def _committed_line(self, entries: list[FileEntry], offset: int) -> RawRecord | None:
        """The line at a committed offset, after checking its file is still the one read."""
        ordinal, newline = decode_offset(offset)
        if ordinal >= len(entries):
            raise SourceConflictError(
                f"query {self._config.query}: the checkpoint reads file #{ordinal}, which "
                f"streamproc_files does not list (it was edited); {_WHAT_TO_DO}"
            )
        entry = entries[ordinal]
        try:
            size, head, line = _committed_view(entry, newline)
        except FileNotFoundError:
            return None  # deleted after it was read: nothing to compare
        except (OSError, EOFError, zlib.error) as exc:
            raise SourceConflictError(f"file {entry.path} cannot be read: {exc}") from None
        if size <= newline:
            raise SourceConflictError(
                f"file {entry.path} is {size} bytes, shorter than the {newline + 1} bytes "
                f"this query read from it: it was truncated or replaced; {_WHAT_TO_DO}"
            )
        if head != entry.head:
            raise SourceConflictError(
                f"file {entry.path} was replaced: its first bytes are not those this query "
                f"read; {_WHAT_TO_DO}"
            )
        return None if line is None else RawRecord(0, offset, None, line, 0)

    @override
    def __repr__(self) -> str:
        return f"FileSource({self._config.path!r})"


def _committed_view(entry: FileEntry, newline: int) -> tuple[int, bytes, bytes | None]:
    """(size, first bytes as long as the registered head, the line ending at `newline`).

    A plain file is read only where the check looks: its head, and back from
    `newline` to the line's start.
    """
    if entry.path.endswith(".gz"):
        data = read_bytes(entry.path)
        return len(data), data[: len(entry.head)], line_ending_at(data, newline)
    with open(entry.path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        head = f.read(len(entry.head))
        if size <= newline:
            return size, head, None
        window = 65_536
        while True:
            start = max(0, newline + 1 - window)
            f.seek(start)
            data = f.read(newline + 1 - start)
            if start == 0 or b"\n" in data[:-1]:
                return size, head, line_ending_at(data, newline - start)
            window *= 4

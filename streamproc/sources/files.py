"""The streaming file source: JSON-lines files in a directory (or a file, or a glob), followed.

One partition, 0, whose offsets run through the files in discovery order
(`file_lines`): files get ordinals as they appear with a complete line
(modification time, then name), are read one after another, each up to its
last complete line, and the newest one is followed while it grows. When a
newer file exists and the current one has no complete line left, the source
moves on (log rotation); `maxFilesPerTrigger` bounds how many files one
micro-batch starts on. The ordinals are registered (`file_registry`) before
a file is read, and the checkpoint's position of partition 0 says which file
and which byte a restart resumes at.

Files are known by what they are, not where they are (`file_identity`): each
listing is reconciled with the registered files, so a file renamed,
compressed or copied (copytruncate) is read on where it was, never again,
and a new file at an old name is a new file. The files being read are held
open (`file_access`): one renamed or deleted meanwhile is read to its end.
A file truncated or rewritten in place stops the query (or, with
onFileTruncated continue, its new content is a new file); a file gone with
bytes unread is said (or, with onFileDeleted stop, stops the query).
STREAMING.md, "The file source", has the choices and their reasons.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

from typing_extensions import override

from streamproc.sources.base import (
    PartitionInfo,
    PartitionListener,
    RawRecord,
    SourceConflictError,
)
from streamproc.sources.file_access import (
    FileChangedError,
    GzipIncompleteError,
    OpenFile,
)
from streamproc.sources.file_lines import LineChunk, decode_offset, encode_offset
from streamproc.sources.file_registry import FileRegistry
from streamproc.sources.file_watch import FileWatch
from streamproc.sources.position import FilePositions

log = logging.getLogger("streamproc.source")

#: Files held open at most (those read since the last commit; the oldest go first).
_MAX_OPEN = 64


@dataclass(frozen=True, slots=True)
class FileSourceConfig:
    """What the file source reads and how.

    Attributes:
        query: the query name (for messages).
        path: extract.path: a directory, a file or a glob.
        starting_offsets: earliest reads the files present at the first start;
            latest starts with the files that appear after it.
        max_files_per_trigger: at most this many files started per micro-batch.
        on_file_truncated: 'stop' (the query stops with one line) or 'continue'
            (what the file holds now is read as a new file, with a warning).
        on_file_deleted: 'warn' (a file gone with bytes unread is said and
            counted) or 'stop' (the query stops with one line).
        patterns: the file-name globs a directory's files must match
            (extract.pathGlobFilter); None: every file.
    """

    query: str
    path: str
    starting_offsets: Literal["earliest", "latest"] = "earliest"
    max_files_per_trigger: int | None = None
    on_file_truncated: Literal["stop", "continue"] = "stop"
    on_file_deleted: Literal["warn", "stop"] = "warn"
    patterns: tuple[str, ...] | None = None


class FileSource:
    """The `Source` port over a directory of JSON-lines files (one worker; partition 0)."""

    def __init__(
        self,
        config: FileSourceConfig,
        registry: FileRegistry,
        *,
        on_unread: Callable[[str, int], None] | None = None,
    ) -> None:
        """A source over config.path.

        Args:
            config: what to read and how.
            registry: where the files' ordinals are kept.
            on_unread: told (kind 'deleted' or 'truncated', bytes) of each file
                found gone or truncated with bytes not read (for metrics).
        """
        self._config = config
        self._registry = registry
        self._watch = FileWatch(config, registry, self._reader_at, self._held, on_unread)
        #: Files present at the first start (what startingOffsets latest skips).
        self._at_open = 0
        self._opened = False
        self._owned = False
        self._paused = False
        self._pos: tuple[int, int] | None = None
        self._started: set[int] = set()
        self._warned: set[int] = set()
        #: The files being read, and those read since the last commit (a replay reads them).
        self._open_files: dict[int, OpenFile] = {}

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

    async def join_group(self) -> None:
        """Nothing: a file source has no group."""

    async def stop(self) -> None:
        """Release the lock and the files held open."""
        self._owned = False
        for f in self._open_files.values():
            f.close()
        self._open_files.clear()
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
        where = self.positions().position(partition, offset)
        log.info("query %s reads on at %s", self._config.query, where)
        # A restart: say now what grew behind the position while no worker ran.
        self._watch.check_files_behind()

    async def seek_to_start(self, partition: int) -> None:
        """earliest: the first file; latest: the first file found after the first start."""
        await self._open()
        first = 0 if self._config.starting_offsets == "earliest" else self._at_open
        self._pos = (first, 0)

    async def position(self, partition: int) -> int:
        """The offset of the next line to read."""
        return encode_offset(*(self._pos or (0, 0)))

    def positions(self) -> FilePositions:
        """Offsets as files (by their registered paths) and bytes."""
        return FilePositions({e.ordinal: e.path for e in self._watch.entries})

    async def describe(self, offsets: Mapping[int, int | None]) -> dict[int, PartitionInfo]:
        """The end after the last complete line, and the line committed last (checked).

        Raises:
            SourceConflictError: the file being read was truncated or rewritten in
                place (onFileTruncated stop), or is gone with bytes unread
                (onFileDeleted stop).
        """
        await self._open()
        out: dict[int, PartitionInfo] = {}
        for partition, offset in offsets.items():
            record = None
            if offset is not None:
                if self._pos is None:
                    # A restore: the files before the committed one were read.
                    self._watch.restoring = decode_offset(offset + 1)
                await self._watch.discover(force=True)
                record = await self._committed_line(offset)
            else:
                await self._watch.discover(force=True)
            end = self._end_offset()
            if offset is not None:
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

    def unread_counts(self) -> tuple[int, int]:
        """Files, and their bytes, found gone or truncated with bytes unread since the start."""
        return self._watch.unread_files, self._watch.unread_bytes

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
        """Close the files before the committed one: a replay never goes back to them."""
        if 0 in offsets:
            committed = decode_offset(offsets[0])[0]
            for ordinal in [o for o in self._open_files if o < committed]:
                self._open_files.pop(ordinal).close()

    # ------------------------------------------------------------- reading
    def _reader_at(self) -> tuple[int, int] | None:
        return self._pos

    def _held(self, ordinal: int) -> bool:
        return ordinal in self._open_files

    async def _read(self, max_records: int) -> list[RawRecord]:
        assert self._pos is not None
        entries = self._watch.entries
        limit = self._config.max_files_per_trigger
        out: list[RawRecord] = []
        listed = False
        while len(out) < max_records:
            ordinal, byte = self._pos
            if ordinal >= len(entries):
                if listed or not await self._watch.discover(force=False):
                    break
                listed = True
                continue
            if byte == 0 and ordinal not in self._started:
                if limit is not None and len(self._started) >= limit:
                    break  # this micro-batch started its share of files
                self._started.add(ordinal)
            chunk, tail, ended = await self._read_file(ordinal, byte, max_records - len(out))
            out += chunk.records
            self._pos = (ordinal, chunk.end)
            if chunk.more:
                continue
            # The file has no complete line left: move on if a newer file exists.
            if ordinal + 1 >= len(entries):
                if listed or not await self._watch.discover(force=not out):
                    break
                listed = True
                if ordinal + 1 >= len(entries):
                    break
            entry = entries[ordinal]
            if tail and not ended and ordinal not in self._warned:
                self._warned.add(ordinal)
                log.warning(
                    "file %s: its last line (%d bytes) has no newline and a newer file "
                    "follows; that line is not read (a line is read once its newline is "
                    "written, and the source has moved on)",
                    entry.path,
                    tail,
                )
            if not ended:
                await self._watch.finished(ordinal, chunk.end + tail)
            self._pos = (ordinal + 1, 0)
        return out

    async def _read_file(self, ordinal: int, byte: int, want: int) -> tuple[LineChunk, int, bool]:
        """Complete lines from `byte` on, the incomplete last line's length, and whether the
        file has ended (gone, truncated, or a copy read to its end: nothing more will come)."""
        nothing = LineChunk([], byte, False)
        for attempt in range(2):
            if self._watch.entries[ordinal].lost_bytes is not None:
                return nothing, 0, True  # gone or truncated, and said: nothing more of it
            f = await self._file(ordinal)
            if f is None:
                return nothing, 0, True
            try:
                chunk, tail = f.lines(byte, want, ordinal)
            except FileChangedError:
                # Truncated or rewritten under the descriptor: look for a copy of it,
                # else it is a truncation (which stops the query, or ends the file).
                self._open_files.pop(ordinal).close()
                await self._watch.discover(force=True)
                if attempt == 1 or not self._watch.located(ordinal):
                    await self._watch.truncated(ordinal, None)
                continue
            except GzipIncompleteError as exc:
                if ordinal + 1 < len(self._watch.entries):
                    raise SourceConflictError(
                        f"file {f.path} is not a complete gzip file ({exc}) and newer files "
                        "follow it; a .gz file is read whole and must appear complete (write "
                        "it under a hidden name, '.' or '_' first, then rename it); move it "
                        "away and restart"
                    ) from None
                return nothing, 0, False  # maybe still being written: wait for it
            return chunk, tail, f.copy and not chunk.records and chunk.end >= f.size()
        return nothing, 0, True

    async def _file(self, ordinal: int) -> OpenFile | None:
        """The file of this ordinal, held open; None when it is gone or no longer read."""
        f = self._open_files.get(ordinal)
        if f is not None:
            return f
        f = await self._watch.open(ordinal)
        if f is None:
            return None
        self._open_files[ordinal] = f
        while len(self._open_files) > _MAX_OPEN:
            oldest = min(o for o in self._open_files if o != ordinal)
            self._open_files.pop(oldest).close()
        return f

    # ------------------------------------------------------------- files
    async def _open(self) -> None:
        if not self._opened:
            self._opened = True
            await self._watch.open_registry()
            self._at_open = len(self._watch.entries)

    def _end_offset(self) -> int:
        """The offset after the last complete non-blank line of the newest file that has one."""
        for entry in reversed(self._watch.entries):
            if entry.lost_bytes is not None:
                continue
            f = self._open_files.get(entry.ordinal)
            end = f.last_end() if f is not None else self._watch.last_end(entry)
            if end is not None:
                return encode_offset(entry.ordinal, end)
        return 0

    async def _committed_line(self, offset: int) -> RawRecord | None:
        """The line at a committed offset, once its file was found where it is now."""
        ordinal, newline = decode_offset(offset)
        entries = self._watch.entries
        if ordinal >= len(entries):
            raise SourceConflictError(
                f"query {self._config.query}: the checkpoint reads file #{ordinal}, which "
                "streamproc_files does not list (it was edited); start the query over with "
                "`streamproc reset CONFIG`"
            )
        f = await self._file(ordinal)
        if f is None:
            return None  # gone (said, if bytes were unread): nothing to compare
        try:
            line = f.line_ending_at(newline)
        except GzipIncompleteError as exc:
            raise SourceConflictError(f"file {f.path} cannot be read: {exc}") from None
        if line is None and not f.copy:
            await self._watch.truncated(ordinal, None)
            return None
        return None if line is None else RawRecord(0, offset, None, line, 0)

    @override
    def __repr__(self) -> str:
        return f"FileSource({self._config.path!r})"

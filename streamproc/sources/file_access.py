"""The file source's I/O: what a listed path is now, and open files read by content offset.

`observe` says what a path names (device and inode, size, and when asked its
content head); `OpenFile` holds one file open while the source reads it, as
`tail -F` does: a file renamed or deleted while open is read to its end
through the descriptor. A `.gz` is decompressed whole once it is complete;
its offsets are offsets in its content, as a plain file's are, so a file and
its compressed form are read at the same offsets.
"""

from __future__ import annotations

import gzip
import os
import zlib
from typing import BinaryIO

from streamproc.sources.file_identity import HEAD_BYTES, FileId, Seen, heads_match
from streamproc.sources.file_lines import (
    LineChunk,
    complete_lines,
    last_record_end,
    line_ending_at,
    partial_tail,
)

# Bytes read from a plain file per step: bounds one fetch's memory, not the batch.
CHUNK = 4 * 1_048_576
#: What reading a gzip file whose end is not there yet (or a corrupt one) raises.
GZIP_ERRORS = (OSError, EOFError, zlib.error)


def is_gzip(path: str) -> bool:
    """A name ending in `.gz` is a gzip file."""
    return path.endswith(".gz")


def observe(path: str, *, head: bool) -> Seen | None:
    """What `path` names now (None when it is gone); its content head when `head`.

    The head is None when it cannot be read yet (a `.gz` whose first block is
    not written).
    """
    try:
        if not head:
            st = os.stat(path)
            content: bytes | None = None
        else:
            with open(path, "rb") as f:
                st = os.fstat(f.fileno())
                content = _read_head(f, is_gzip(path))
        target = os.path.realpath(path) if os.path.islink(path) else None
    except FileNotFoundError:
        return None
    return Seen(
        path,
        FileId(st.st_dev, st.st_ino),
        st.st_size,
        st.st_mtime_ns,
        content,
        target,
        is_gzip(path),
    )


def _read_head(f: BinaryIO, gz: bool) -> bytes | None:
    if not gz:
        return f.read(HEAD_BYTES)
    try:
        with gzip.GzipFile(fileobj=f) as z:
            return z.read(HEAD_BYTES)
    except GZIP_ERRORS:
        return None


class FileChangedError(Exception):
    """The open file no longer holds what was read from it (shorter, or its head differs)."""


class GzipIncompleteError(Exception):
    """A `.gz` file is not a complete gzip file (yet): the reason."""


class OpenFile:
    """One file held open for reading, by content offset."""

    def __init__(self, path: str, head: bytes, *, copy: bool = False) -> None:
        """Open `path`, whose registered head is `head`.

        Args:
            path: where the file is now.
            head: its registered head.
            copy: `path` holds a copy of the file read so far (copytruncate's):
                when it ends before the byte reached, the rest was read from
                the original, and there is nothing more to read.

        Raises:
            FileNotFoundError: it is gone.
            OSError: it cannot be read.
        """
        self.path = path
        self._head = head
        self.copy = copy
        self._f: BinaryIO = open(path, "rb")  # noqa: SIM115 (closed by close())
        st = os.fstat(self._f.fileno())
        self.file_id = FileId(st.st_dev, st.st_ino)
        self.gz = is_gzip(path)
        self._data: bytes | None = None

    def close(self) -> None:
        """Release the descriptor."""
        self._f.close()
        self._data = None

    def content(self) -> bytes:
        """A `.gz` file's whole content (decompressed once, when it is complete).

        Raises:
            GzipIncompleteError: not a complete gzip file (yet).
        """
        if self._data is None:
            self._f.seek(0)
            try:
                with gzip.GzipFile(fileobj=self._f) as z:
                    self._data = z.read()
            except GZIP_ERRORS as exc:
                raise GzipIncompleteError(str(exc)) from None
        return self._data

    def size(self) -> int:
        """Content bytes now (a `.gz` file's once it is complete)."""
        if self.gz:
            return len(self.content())
        return os.fstat(self._f.fileno()).st_size

    def holds(self, read: int) -> bool:
        """True while the file still begins with its registered head and has `read` bytes.

        A copy need not have them (see `__init__`).
        """
        if self.gz:
            return True  # decompressed once: it does not change
        if not heads_match(self._head, os.pread(self._f.fileno(), len(self._head), 0)):
            return False
        return self.copy or self.size() >= read

    def lines(self, byte: int, want: int, ordinal: int) -> tuple[LineChunk, int]:
        """Up to `want` complete lines from content byte `byte`, and the incomplete tail's length.

        Raises:
            FileChangedError: the file is shorter than `byte` or begins otherwise now.
            GzipIncompleteError: a `.gz` file is not complete yet.
        """
        if self.gz:
            rest = self.content()[byte:]
            return complete_lines(rest, byte, ordinal, want), partial_tail(rest)
        if not self.holds(byte):
            raise FileChangedError(self.path)
        if self.copy and self.size() <= byte:
            return LineChunk([], byte, False), 0
        fd = self._f.fileno()
        data = os.pread(fd, CHUNK, byte)
        # A line longer than a chunk: read on until its newline (or the end).
        while len(data) >= CHUNK and b"\n" not in data:
            more = os.pread(fd, CHUNK, byte + len(data))
            if not more:
                break
            data += more
        chunk = complete_lines(data, byte, ordinal, want)
        if not chunk.more and len(data) >= CHUNK:
            chunk = LineChunk(chunk.records, chunk.end, chunk.end > byte)
        return chunk, partial_tail(data)

    def line_ending_at(self, newline: int) -> bytes | None:
        """The line whose newline is at content byte `newline`; None when there is none.

        Raises:
            GzipIncompleteError: a `.gz` file is not complete.
        """
        if self.gz:
            return line_ending_at(self.content(), newline)
        fd = self._f.fileno()
        window = 65_536
        while True:
            start = max(0, newline + 1 - window)
            data = os.pread(fd, newline + 1 - start, start)
            if len(data) < newline + 1 - start:
                return None  # shorter than that
            if start == 0 or b"\n" in data[:-1]:
                return line_ending_at(data, newline - start)
            window *= 4

    def last_end(self) -> int | None:
        """The content byte after the last complete non-blank line; None when there is none."""
        if self.gz:
            try:
                return last_record_end(self.content())
            except GzipIncompleteError:
                return None  # not complete (yet): nothing of it is counted
        fd = self._f.fileno()
        size = os.fstat(fd).st_size
        window = 65_536
        while True:
            start = max(0, size - window)
            data = os.pread(fd, size - start, start)
            # From the middle of a file, skip the line begun before `start`.
            cut = 0 if start == 0 else data.find(b"\n") + 1
            found = last_record_end(data[cut:]) if start == 0 or cut else None
            if found is not None:
                return start + cut + found
            if start == 0:
                return None
            window *= 4

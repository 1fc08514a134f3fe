"""JSON-lines files named by a directory, a file or a glob: listed, and read whole.

A batch job reads its file input with it; the streaming file source
(`file_watch`) lists its directory with the same `list_files`, so both modes
name the same files for one `extract.path`. It lives with the sources, so
that the streaming source need not reach up into `batch/` for it.

A batch job reads files in path order, then line order; (file index, line index) plays the
part of (partition, offset), so `first`/`last` ties and reports work as for Kafka.
Dead letters name a file by its path and a digest of its first bytes (`identity`),
not by its index, which changes when the directory's files do.
A name ending in `.gz` is gzip. A last line without its newline is being written
(or was cut): it is ignored and reported, never half-read. Blank lines are skipped
(they still count as lines, so positions stay the file's own line numbers).
"""

from __future__ import annotations

import fnmatch
import glob
import gzip
import hashlib
import os
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from streamproc.sources.base import RawRecord

_GLOB_CHARS = frozenset("*?[")


class FileSourceError(RuntimeError):
    """The path names no readable file (one line, for the job's failure message)."""


def list_files(
    path: str, *, allow_empty: bool = False, patterns: Sequence[str] | None = None
) -> list[str]:
    """The files a path names, in path order.

    A directory names its regular files (not those of subdirectories, and not
    hidden ones: names starting with '.' or '_', as Spark skips them), those whose
    name matches one of `patterns` if given; a glob (recursive with '**') names the
    regular files it matches; else the file itself.

    Args:
        path: a directory, a file or a glob.
        allow_empty: a glob that matches nothing names no file (a streaming
            source waits for files to appear) rather than an error.
        patterns: file-name globs a directory's files must match (a batch job's
            `extract.pathGlobFilter`); None: every file.

    Raises:
        FileSourceError: the path does not exist, or the glob matches no file.
    """
    if any(c in _GLOB_CHARS for c in path):
        found = sorted(p for p in glob.glob(path, recursive=True) if os.path.isfile(p))
        if not found and not allow_empty:
            raise FileSourceError(f"extract.path: '{path}' matches no file")
        return found
    if os.path.isdir(path):
        return sorted(
            os.path.join(path, name)
            for name in os.listdir(path)
            if not name.startswith((".", "_"))
            and (patterns is None or any(fnmatch.fnmatchcase(name, p) for p in patterns))
            and os.path.isfile(os.path.join(path, name))
        )
    if os.path.isfile(path):
        return [path]
    raise FileSourceError(
        f"extract.path: '{path}' does not exist; create it, or correct extract.path (a "
        "directory, a file or a glob of JSON-lines files)"
    )


@dataclass(frozen=True, slots=True)
class FileLines:
    """The complete lines of one file.

    Attributes:
        records: one per non-blank line: partition = the file's index, offset = the
            line's index (0-based), value = the line's bytes.
        partial_tail: bytes after the last newline (an incomplete line, ignored); 0
            when the file ends with a newline.
    """

    records: list[RawRecord]
    partial_tail: int
    #: What the file is, whatever its name: a digest of its first bytes of content
    #: (decompressed for gzip), so that dead letters of a file stay its own when the
    #: directory's other files change (`identity`).
    head_digest: str = ""


def read_bytes(path: str) -> bytes:
    """A file's whole content, decompressed when its name ends in `.gz`.

    Raises:
        OSError: it cannot be read (gzip.BadGzipFile is one).
        EOFError: a gzip file ends before its end (still being written, or cut).
        zlib.error: a gzip file is corrupt.
    """
    if path.endswith(".gz"):
        with gzip.open(path, "rb") as f:
            return f.read()
    with open(path, "rb") as f:
        return f.read()


def read_file(index: int, path: str) -> FileLines:
    """Read one JSON-lines file (gzip when its name ends in `.gz`).

    Raises:
        FileSourceError: the file cannot be read or decompressed.
    """
    try:
        data = read_bytes(path)
    except (OSError, EOFError, zlib.error) as exc:
        raise FileSourceError(f"cannot read {path}: {exc}") from None
    lines = data.split(b"\n")
    tail = lines.pop()  # after the last newline: empty unless the line is incomplete
    records = [
        RawRecord(index, number, None, line, 0) for number, line in enumerate(lines) if line.strip()
    ]
    return FileLines(records, len(tail) if tail.strip() else 0, head_digest(data))


#: At most this many first bytes of a file's content identify it.
HEAD_DIGEST_BYTES = 4096


def head_digest(content: bytes) -> str:
    """16 hex digits of a digest of a file's first line (at most HEAD_DIGEST_BYTES).

    The first line, as Vector's checksum fingerprint takes it: it does not change as
    the file grows, and a file replaced by other content gets another.
    """
    end = content.find(b"\n", 0, HEAD_DIGEST_BYTES)
    head = content[: end if end >= 0 else HEAD_DIGEST_BYTES]
    return hashlib.blake2b(head, digest_size=8).hexdigest()


def identity(path: str, lines: FileLines) -> str:
    """How dead letters name a file: its path and the digest of its head."""
    return f"{path}#{lines.head_digest}"


def iter_files(files: list[str]) -> Iterator[tuple[str, FileLines]]:
    """Each file's lines in path order, one file in memory at a time."""
    for index, path in enumerate(files):
        yield path, read_file(index, path)

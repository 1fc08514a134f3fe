"""Which file is which: the file source's identities, matched against a listing (pure).

A file is known by what it is, not by where it is, as log shippers know it
(Vector by a checksum of its first bytes, Filebeat and Fluent Bit by device
and inode): each registered file keeps its device and inode and its content
head, the first bytes of its content (decompressed for a `.gz`, so that a
plain file and its compressed form compare like with like). Each listing of
`extract.path` is reconciled with the registered files by `reconcile`:

1. a path holding the inode it was registered with, and still its content
   (the head agrees, and it is no shorter than what was read), is that file;
2. else a listed path holding its inode and head is that file renamed;
3. else a listed path holding its head is that file copied or compressed
   (logrotate's copytruncate copy, a rotated file gzipped): the same content
   at the same offsets, read on where the query was, never again from 0;
4. else, when its path still holds its inode with other content, it was
   truncated or rewritten in place; otherwise it is missing (deleted, or
   moved out of extract.path).

A listed file none of this claims is new when it can be identified (its
head holds a complete line) and is not a copy of a file still present
(the same head). Two names of one inode (a symlink and its target, both
listed) are one file. STREAMING.md, "The file source", gives the choices.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

#: How many of a file's first content bytes identify it.
HEAD_BYTES = 4096


@dataclass(frozen=True, slots=True, order=True)
class FileId:
    """A file's device and inode: what stays when it is renamed."""

    dev: int
    ino: int


def identity_length(head: bytes) -> int | None:
    """How many bytes of a head identify its file; None when it cannot be identified yet.

    Through the newline of its first non-blank line; a full head (HEAD_BYTES)
    without one (a first line that long) identifies by all of it.
    """
    pos = 0
    while (newline := head.find(b"\n", pos)) >= 0:
        if head[pos:newline].strip():
            return newline + 1
        pos = newline + 1
    return len(head) if len(head) >= HEAD_BYTES else None


def heads_match(stored: bytes, seen: bytes) -> bool:
    """True when `seen` is the head of the file whose registered head is `stored`.

    They agree on their common prefix, and that prefix covers at least the
    stored head's first line (a file is registered once it has one; its head
    may be shorter or longer than the one seen, as the file grows or as a
    copy of it is being written).
    """
    need = identity_length(stored)
    common = min(len(stored), len(seen))
    return need is not None and common >= need and stored[:common] == seen[:common]


@dataclass(frozen=True, slots=True)
class Seen:
    """A listed path as it is now.

    Attributes:
        path: as listed.
        file_id: the device and inode it names (a symlink's target's).
        size: its size in bytes (compressed, for a `.gz`).
        mtime_ns: its modification time (orders new files found together).
        head: its first content bytes (up to HEAD_BYTES; decompressed for a
            `.gz`), or None when they were not read (not needed, or unreadable).
        target: where the path, a symbolic link, points (its real path); None for a
            path that is no link.
        gz: the path names a gzip file (its size says nothing of its content's).
    """

    path: str
    file_id: FileId
    size: int
    mtime_ns: int = 0
    head: bytes | None = None
    target: str | None = None
    gz: bool = False


@dataclass(frozen=True, slots=True)
class Known:
    """A registered file, as `reconcile` needs it.

    Attributes:
        ordinal: its ordinal.
        path: the path it was last seen at.
        file_id: its device and inode (None for a file registered before they were kept).
        head: its registered head.
        read: content bytes of it read so far (a file shorter than that is not it).
    """

    ordinal: int
    path: str
    file_id: FileId | None
    head: bytes
    read: int = 0


@dataclass(frozen=True, slots=True)
class Reconciled:
    """What a listing says about the registered files, and which files are new.

    Attributes:
        found: ordinal -> where the file is now (its path may have changed).
        changed: ordinal -> its path, which holds its inode with other content
            (truncated or rewritten in place; no copy of it was found).
        missing: ordinals of files under no listed name.
        new: files not registered yet, in the order they get ordinals
            (modification time, then path).
        copies: listed files that are copies of registered ones still present
            (the same head): not read.
    """

    found: dict[int, Seen] = field(default_factory=dict)
    changed: dict[int, Seen] = field(default_factory=dict)
    missing: list[int] = field(default_factory=list)
    new: list[Seen] = field(default_factory=list)
    copies: list[Seen] = field(default_factory=list)


def reconcile(known: Sequence[Known], seen: Sequence[Seen]) -> Reconciled:
    """Match a listing with the registered files (the module docstring has the rules).

    Linear in the files known and listed: listed files are looked up by inode
    and by first line, never compared pairwise.
    """
    registered = {k.path for k in known}
    # One entry per inode: a registered name first, then a real one (not a link).
    by_id: dict[FileId, Seen] = {}
    for s in sorted(seen, key=lambda s: (s.path not in registered, s.target is not None, s.path)):
        by_id.setdefault(s.file_id, s)
    at_path = {s.path: s for s in by_id.values()}
    free = dict(at_path)
    by_line: dict[bytes, list[Seen]] = {}
    for s in by_id.values():
        line = _first_line(s.head)
        if line is not None:
            by_line.setdefault(line, []).append(s)
    out = Reconciled()

    def claim(k: Known, s: Seen) -> None:
        out.found[k.ordinal] = s
        del free[s.path]

    pending: list[Known] = []
    for k in known:
        here = free.get(k.path)
        if here is not None and _same_file(k, here):
            claim(k, here)
        else:
            pending.append(k)
    # Renamed: its inode, with its head, under another name.
    left: list[Known] = []
    for k in pending:
        renamed = by_id.get(k.file_id) if k.file_id is not None else None
        if renamed is not None and renamed.path in free and _renamed(k, renamed):
            claim(k, renamed)
        else:
            left.append(k)
    # Copied or compressed: its head under another inode (its own path first).
    for k in left:
        own = free.get(k.path)
        candidates = [own] if own is not None and own.file_id != k.file_id else []
        line = _first_line(k.head)
        if line is not None:
            candidates += [s for s in by_line.get(line, []) if s.path != k.path]
        copy = next((s for s in candidates if s.path in free and _holds_head(k, s)), None)
        if copy is not None:
            claim(k, copy)
            continue
        own = at_path.get(k.path)
        if own is not None and own.file_id == k.file_id:
            out.changed[k.ordinal] = own
        else:
            out.missing.append(k.ordinal)
    # What no registered file claims is new, unless it is a copy of one still present.
    present: dict[bytes, list[bytes]] = {}
    for k in known:
        line = _first_line(k.head)
        if k.ordinal in out.found and line is not None:
            present.setdefault(line, []).append(k.head)
    for s in sorted(free.values(), key=lambda s: (s.mtime_ns, s.path)):
        line = _first_line(s.head)
        if s.head is None or line is None:
            continue  # no complete line yet: registered once it has one
        if any(heads_match(head, s.head) for head in present.get(line, [])):
            out.copies.append(s)
            continue
        out.new.append(s)
        present.setdefault(line, []).append(s.head)
    return out


def _first_line(head: bytes | None) -> bytes | None:
    """The bytes that identify a head (two heads that match have the same), or None."""
    if head is None:
        return None
    length = identity_length(head)
    return None if length is None else head[:length]


def _holds_head(k: Known, s: Seen) -> bool:
    return s.head is not None and heads_match(k.head, s.head)


def _same_file(k: Known, s: Seen) -> bool:
    """The path still holds the file: its inode (or, for a file without one, its head)."""
    if k.file_id is None:
        return s.head is not None and heads_match(k.head, s.head)
    if s.file_id != k.file_id:
        return False
    if not s.gz and s.size < k.read:
        return False  # shorter than what was read: truncated
    return s.head is None or heads_match(k.head, s.head)


def _renamed(k: Known, s: Seen) -> bool:
    return (
        k.file_id is not None
        and s.file_id == k.file_id
        and s.head is not None
        and heads_match(k.head, s.head)
        and (s.gz or s.size >= k.read)
    )

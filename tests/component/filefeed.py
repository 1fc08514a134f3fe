"""Writing JSON-lines files for file-source tests, and the model's view of what they hold.

`FileFeed` writes lines into a directory the way a producer would (new files,
appends, a line written in two steps) and does to them what operators do
(rename, gzip a rotated file, truncate and rewrite in place, swap a symlink,
publish with `mv`), keeping, independently of the source, every complete line
in the order the file source must read them: files in the order they were
created (a file keeps its place when renamed or compressed; new content
written over an old file is a new file), lines in file order. `stream()`
gives them as the reference model's partition 0, each at (ordinal << 40 |
its newline's byte in the file's content).
"""

from __future__ import annotations

import gzip
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class _File:
    path: Path
    ordinal: int
    #: Content bytes modelled so far (the byte after the last complete line).
    size: int = 0


class FileFeed:
    """Files under one directory, created in order, with the model's record list."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self._files: list[_File] = []
        #: Which model file each path holds now.
        self._at: dict[Path, _File] = {}
        self.records: list[tuple[int, Any]] = []
        self._mtime_ns = 1_700_000_000 * 10**9

    def new_file(
        self, name: str, records: list[Any], *, gz: bool = False, directory: Path | None = None
    ) -> Path:
        """A new file holding these records (a str is written as a raw, bad line)."""
        path = (directory or self.directory) / name
        assert path not in self._at
        if gz:
            data = b"".join(_line(r) + b"\n" for r in records)
            path.write_bytes(gzip.compress(data))
            self._model(self._register(path), data, 0)
        else:
            path.write_bytes(b"")
            self._register(path)
            self.append(path, records)
        self.touch(path)
        return path

    def touch(self, path: Path) -> None:
        """Give the file the next modification time (creation order is discovery order)."""
        self._mtime_ns += 10**9
        os.utime(path, ns=(self._mtime_ns, self._mtime_ns))

    def staged(self, name: str, records: list[Any]) -> Path:
        """Write a file under a hidden name ('.' first), to be published with `publish`."""
        path = self.directory / f".{name}"
        path.write_bytes(b"".join(_line(r) + b"\n" for r in records))
        self.touch(path)
        return path

    def publish(self, staged: Path) -> Path:
        """`mv .name name`: the file appears whole, keeping its (older) modification time."""
        path = staged.with_name(staged.name[1:])
        data = staged.read_bytes()
        staged.rename(path)
        self._model(self._register(path), data, 0)
        return path

    def append(self, path: Path, records: list[Any], *, partial: bytes = b"") -> None:
        """Append complete lines, then `partial` (the start of a line with no newline yet)."""
        data = b"".join(_line(r) + b"\n" for r in records) + partial
        file = self._at[path]
        with path.open("ab") as f:
            f.write(data)
        self._model(file, path.read_bytes(), file.size)

    def finish_line(self, path: Path, rest: bytes, records: list[Any]) -> None:
        """Complete a partial line with `rest` (its newline included), then append records."""
        self.append(path, [], partial=rest)
        self.append(path, records)

    def write_unread(self, path: Path, data: bytes) -> None:
        """Append bytes the source must not read (the model does not expect them)."""
        with path.open("ab") as f:
            f.write(data)

    def rename(self, path: Path, new_path: Path) -> None:
        """`mv path new_path`: the same file under another name (rotation by rename)."""
        file = self._at.pop(path)
        path.rename(new_path)
        file.path = new_path
        self._at[new_path] = file

    def gzip(self, path: Path) -> Path:
        """`gzip path`: path.gz holds the same content, and path is removed."""
        file = self._at.pop(path)
        new_path = path.with_name(path.name + ".gz")
        new_path.write_bytes(gzip.compress(path.read_bytes()))
        path.unlink()
        file.path = new_path
        self._at[new_path] = file
        return new_path

    def rewrite(self, path: Path, records: list[Any]) -> None:
        """Truncate the file in place (same inode) and write new lines: a new file to the model."""
        with path.open("r+b") as f:
            f.truncate(0)
            f.write(b"".join(_line(r) + b"\n" for r in records))
        self._at.pop(path)
        self._model(self._register(path), path.read_bytes(), 0)

    def copytruncate(self, path: Path, copy: Path, records: list[Any]) -> None:
        """logrotate's copytruncate: copy the file to `copy`, then `rewrite` it with records.

        The copy is the file read so far under another name (its content is
        the same); what is written after the truncation is a new file.
        """
        data = path.read_bytes()
        copy.write_bytes(data)
        file = self._at.pop(path)
        file.path = copy
        self._at[copy] = file
        with path.open("r+b") as f:
            f.truncate(0)
            f.write(b"".join(_line(r) + b"\n" for r in records))
        self._model(self._register(path), path.read_bytes(), 0)

    def forget(self, path: Path) -> None:
        """The path no longer holds a file of the model (deleted, or moved out of the feed)."""
        self._at.pop(path)

    def _register(self, path: Path) -> _File:
        file = _File(path, len(self._files))
        self._files.append(file)
        self._at[path] = file
        return file

    def _model(self, file: _File, data: bytes, start: int) -> None:
        pos = start
        while (newline := data.find(b"\n", pos)) >= 0:
            line = data[pos:newline]
            if line.strip():
                self.records.append((file.ordinal << 40 | newline, _parsed(line)))
            pos = newline + 1
        file.size = pos

    def stream(self) -> dict[int, list[tuple[int, Any]]]:
        """The reference model's input: partition 0, in reading order."""
        return {0: sorted(self.records, key=lambda item: item[0])}


def _line(record: Any) -> bytes:
    return record.encode() if isinstance(record, str) else json.dumps(record).encode()


def _parsed(line: bytes) -> Any:
    try:
        return json.loads(line)
    except ValueError:
        return line.decode(errors="replace")  # not an object: the model calls it bad

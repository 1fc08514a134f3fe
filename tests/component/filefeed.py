"""Writing JSON-lines files for file-source tests, and the model's view of what they hold.

`FileFeed` writes lines into a directory the way a producer would (new files,
appends, a line written in two steps) and keeps, independently of the source,
every complete line in the order the file source must read them: files in the
order they were created, lines in file order. `stream()` gives them as the
reference model's partition 0, each at (ordinal << 40 | its newline's byte).
"""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path
from typing import Any


class FileFeed:
    """Files under one directory, created in order, with the model's record list."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self._files: list[Path] = []
        self._sizes: dict[Path, int] = {}
        self.records: list[tuple[int, Any]] = []
        self._mtime_ns = 1_700_000_000 * 10**9

    def new_file(self, name: str, records: list[Any], *, gz: bool = False) -> Path:
        """A new file holding these records (a str is written as a raw, bad line)."""
        path = self.directory / name
        assert path not in self._files
        self._files.append(path)
        self._sizes[path] = 0
        if gz:
            data = b"".join(_line(r) + b"\n" for r in records)
            path.write_bytes(gzip.compress(data))
            self._model(path, data, 0)
        else:
            path.write_bytes(b"")
            self.append(path, records)
        # Creation order is discovery order: modification times say so explicitly.
        self._mtime_ns += 10**9
        os.utime(path, ns=(self._mtime_ns, self._mtime_ns))
        return path

    def append(self, path: Path, records: list[Any], *, partial: bytes = b"") -> None:
        """Append complete lines, then `partial` (the start of a line with no newline yet)."""
        data = b"".join(_line(r) + b"\n" for r in records) + partial
        start = self._sizes[path]
        with path.open("ab") as f:
            f.write(data)
        self._model(path, path.read_bytes(), start)

    def finish_line(self, path: Path, rest: bytes, records: list[Any]) -> None:
        """Complete a partial line with `rest` (its newline included), then append records."""
        self.append(path, [], partial=rest)
        self.append(path, records)

    def _model(self, path: Path, data: bytes, start: int) -> None:
        ordinal = self._files.index(path)
        pos = start
        while (newline := data.find(b"\n", pos)) >= 0:
            line = data[pos:newline]
            if line.strip():
                self.records.append((ordinal << 40 | newline, _parsed(line)))
            pos = newline + 1
        self._sizes[path] = pos

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

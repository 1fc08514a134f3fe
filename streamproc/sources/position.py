"""Positions in a source's own terms: what a partition's offset means to a reader.

The runtime and the checkpoint keep one integer offset per partition (the
`Source` port's currency, stored as is). What that integer means is the
source's business: a Kafka offset is itself, while the file source packs a
file's ordinal and a byte into it (``ordinal << 40 | byte``, `file_lines`),
which means nothing to a reader (``1099511628326``). A source's
`PositionFormat` turns an offset back into a position a reader can use:
``partition 3 offset 17``, ``file data/b.jsonl byte 550``. `streamproc status`
and the file source's log lines show positions through it; the stored
offsets do not change.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal, Protocol

from typing_extensions import override

from streamproc.sources.file_lines import decode_offset


class SourcePosition(Protocol):
    """A partition's position as its source names it; `str()` is how a log line says it."""

    @property
    def partition(self) -> int:
        """The partition (the file source has one: 0)."""
        ...


@dataclass(frozen=True, slots=True)
class OffsetPosition:
    """A position that is its offset: a Kafka partition's (and the in-memory test source's).

    Attributes:
        partition: The partition.
        offset: The offset (of the next record to read, or of a record).
    """

    partition: int
    offset: int

    @override
    def __str__(self) -> str:
        return f"partition {self.partition} offset {self.offset}"


@dataclass(frozen=True, slots=True)
class FilePosition:
    """A file source's position: a file (by its ordinal in discovery order) and a byte in it.

    Attributes:
        ordinal: The file's number, in the order the source found the files
            (its row in `streamproc_files`).
        path: The file's path as registered; None when the source (or
            `streamproc_files`) has no such file, for instance when it was
            edited by hand.
        byte: The byte in that file's content: for a checkpoint's next offset,
            the byte after the last complete line committed; for a record, its
            line's newline.
        partition: Always 0 (the files are one sequence).
    """

    ordinal: int
    path: str | None
    byte: int
    partition: int = 0

    @property
    def file(self) -> str:
        """The file's path, or ``#ordinal (not listed)`` when the registry has no path for it."""
        return self.path if self.path is not None else f"#{self.ordinal} (not listed)"

    @override
    def __str__(self) -> str:
        return f"file {self.file} byte {self.byte}"


class PositionFormat(Protocol):
    """How a source's offsets read: each offset as a position in the source's own terms."""

    @property
    def kind(self) -> Literal["offset", "file"]:
        """What a position is: a Kafka-style offset, or a file and a byte."""
        ...

    def position(self, partition: int, offset: int) -> SourcePosition:
        """The position an offset of a partition names."""
        ...


class OffsetPositions:
    """Offsets that are positions already (Kafka, the in-memory test source)."""

    @property
    def kind(self) -> Literal["offset"]:
        """Positions are offsets."""
        return "offset"

    def position(self, partition: int, offset: int) -> OffsetPosition:
        """The offset itself."""
        return OffsetPosition(partition, offset)


#: The format of every source whose offsets are its positions.
OFFSET_POSITIONS = OffsetPositions()

#: How a log line names a partition's offset: ``partition 3 offset 17``, ``file a.jsonl byte 9``.
Where = Callable[[int, int], str]


def offset_where(partition: int, offset: int) -> str:
    """A Kafka-style position: the partition and the offset."""
    return str(OffsetPosition(partition, offset))


def where_of(positions: Callable[[], PositionFormat]) -> Where:
    """How a source's log lines name a position, asked of the source at each line (a
    file source's paths change as files are found)."""
    return lambda partition, offset: str(positions().position(partition, offset))


class FilePositions:
    """The file source's offsets as files and bytes, with the files' paths by ordinal."""

    def __init__(self, paths: Mapping[int, str]) -> None:
        """A format naming files by these paths.

        Args:
            paths: The registered files' paths by ordinal (`streamproc_files`,
                or the running source's registry); an ordinal missing from it
                shows as ``#ordinal (not listed)``.
        """
        self._paths = paths

    @property
    def kind(self) -> Literal["file"]:
        """Positions are files and bytes."""
        return "file"

    def position(self, partition: int, offset: int) -> FilePosition:
        """The file and byte the offset packs (``ordinal << 40 | byte``)."""
        ordinal, byte = decode_offset(offset)
        return FilePosition(ordinal, self._paths.get(ordinal), byte, partition)

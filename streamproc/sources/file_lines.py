"""Pure parts of the streaming file source: offsets and complete lines.

The file source is one partition (partition 0) whose offsets run through the
files in discovery order: a record's offset is ``ordinal << 40 | byte``, where
ordinal is the file's place in discovery order and byte is the position of
the line's terminating newline. The offset after a record (what the
checkpoint stores as the partition's next offset) is therefore the byte just
after the last complete line read, in that file: a restart seeks there, so no
line is read twice and none is skipped. STREAMING.md ("The file source")
explains why one partition and not one per file.
"""

from __future__ import annotations

from dataclasses import dataclass

from streamproc.sources.base import RawRecord

#: Bits of an offset that hold the byte position in the file (files up to 1 TiB).
BYTE_BITS = 40
MAX_FILE_BYTES = 1 << BYTE_BITS
_BYTE_MASK = MAX_FILE_BYTES - 1


def encode_offset(ordinal: int, byte: int) -> int:
    """The source offset of a byte position in the file of this ordinal."""
    return (ordinal << BYTE_BITS) | byte


def decode_offset(offset: int) -> tuple[int, int]:
    """(ordinal, byte) of a source offset."""
    return offset >> BYTE_BITS, offset & _BYTE_MASK


@dataclass(frozen=True, slots=True)
class LineChunk:
    """The complete lines found in a chunk of a file.

    Attributes:
        records: one per non-blank complete line; offset = its newline's position.
        end: the byte after the last line taken (where the next read starts).
        more: True when complete lines were left over because of the record limit.
    """

    records: list[RawRecord]
    end: int
    more: bool


def complete_lines(data: bytes, start: int, ordinal: int, limit: int) -> LineChunk:
    """The complete lines of `data` (read from byte `start` of a file), up to `limit` records.

    A trailing line without its newline is being written: it is not taken,
    and `end` stays before it so that it is read whole once its newline is there.
    Blank lines are skipped but consumed.
    """
    records: list[RawRecord] = []
    pos = 0
    base = ordinal << BYTE_BITS
    while True:
        newline = data.find(b"\n", pos)
        if newline < 0:
            return LineChunk(records, start + pos, False)
        line = data[pos:newline]
        if line and not line.isspace():  # (blank lines are consumed, not records)
            if len(records) >= limit:  # at the limit: stop before the next record
                return LineChunk(records, start + pos, True)
            records.append(RawRecord(0, base | (start + newline), None, line, 0))
        pos = newline + 1


def partial_tail(data: bytes) -> int:
    """How many bytes follow the last newline and are not blank (an incomplete line)."""
    tail = data[data.rfind(b"\n") + 1 :]
    return len(tail) if tail.strip() else 0


def last_record_end(data: bytes) -> int | None:
    """The byte after the newline of the last non-blank complete line in `data` (a file's head).

    None when `data` holds no such line.
    """
    end = data.rfind(b"\n")
    while end >= 0:
        begin = data.rfind(b"\n", 0, end) + 1
        if data[begin:end].strip():
            return end + 1
        end = begin - 1
    return None


def line_ending_at(data: bytes, newline: int) -> bytes | None:
    """The line whose terminating newline is at `newline` in `data`, or None if there is none."""
    if newline >= len(data) or data[newline : newline + 1] != b"\n":
        return None
    return data[data.rfind(b"\n", 0, newline) + 1 : newline]

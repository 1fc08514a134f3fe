"""Positions in a source's own terms: a Kafka offset is itself, a file source's is file and byte."""

from __future__ import annotations

import pytest

from streamproc.sources.file_lines import encode_offset
from streamproc.sources.position import (
    OFFSET_POSITIONS,
    FilePosition,
    FilePositions,
    OffsetPosition,
)


def test_a_kafka_offset_is_its_own_position() -> None:
    position = OFFSET_POSITIONS.position(3, 17)
    assert position == OffsetPosition(3, 17)
    assert str(position) == "partition 3 offset 17"
    assert OFFSET_POSITIONS.kind == "offset"


@pytest.mark.parametrize(
    ("ordinal", "byte", "said"),
    [
        (0, 0, "file data/a.jsonl byte 0"),
        (1, 550, "file data/b.jsonl byte 550"),  # stored as 1099511628326
        (1, (1 << 40) - 1, f"file data/b.jsonl byte {(1 << 40) - 1}"),
        (7, 12, "file #7 (not listed) byte 12"),  # no path registered for it
    ],
)
def test_a_file_source_offset_reads_as_file_and_byte(ordinal: int, byte: int, said: str) -> None:
    positions = FilePositions({0: "data/a.jsonl", 1: "data/b.jsonl"})
    position = positions.position(0, encode_offset(ordinal, byte))
    assert (position.ordinal, position.byte, position.partition) == (ordinal, byte, 0)
    assert str(position) == said
    assert positions.kind == "file"


def test_the_offset_status_used_to_print_raw_reads_as_the_second_file() -> None:
    position = FilePositions({1: "in/b.jsonl"}).position(0, 1099511628326)
    assert position == FilePosition(1, "in/b.jsonl", 550)
    assert position.file == "in/b.jsonl"

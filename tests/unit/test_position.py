"""Positions in a source's own terms: a Kafka offset is itself, a file source's is file and byte."""

from __future__ import annotations

import logging

import pytest

from streamproc.engine import LateRecord
from streamproc.runtime.routers import LogBad, LogLate
from streamproc.sources.base import RawRecord
from streamproc.sources.file_lines import encode_offset
from streamproc.sources.position import (
    OFFSET_POSITIONS,
    FilePosition,
    FilePositions,
    OffsetPosition,
    where_of,
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


def test_log_lines_of_late_and_bad_records_name_a_file_and_a_byte(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The routers' lines say where a record is in the source's terms (issue 20): a
    # file source's packed offset as file and byte, a Kafka one as partition and offset.
    files = where_of(lambda: FilePositions({1: "in/b.jsonl"}))
    late = LogLate(files)
    bad = LogBad(files)
    offset = encode_offset(1, 550)
    with caplog.at_level(logging.WARNING):
        late.committed([LateRecord(0, offset, 1_000, 5_000, "window closed", {})])
        bad.committed([(RawRecord(0, offset, None, b"{", 0), "not JSON")])
        LogBad().committed([(RawRecord(3, 17, None, b"{", 0), "not JSON")])
    assert [r.getMessage() for r in caplog.records] == [
        "late record dropped: file in/b.jsonl byte 550 event time 1000 watermark 5000 "
        "(window closed)",
        "bad record: file in/b.jsonl byte 550: not JSON",
        "bad record: partition 3 offset 17: not JSON",
    ]

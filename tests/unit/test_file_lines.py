"""The pure parts of the streaming file source: offsets and complete lines."""

from __future__ import annotations

import pytest

from streamproc.sources.file_lines import (
    complete_lines,
    decode_offset,
    encode_offset,
    last_record_end,
    line_ending_at,
    partial_tail,
)


@pytest.mark.parametrize(("ordinal", "byte"), [(0, 0), (0, 17), (3, 0), (5, (1 << 40) - 1)])
def test_offsets_round_trip_and_order_files_before_bytes(ordinal: int, byte: int) -> None:
    offset = encode_offset(ordinal, byte)
    assert decode_offset(offset) == (ordinal, byte)
    assert encode_offset(ordinal + 1, 0) > offset


def test_lines_end_at_the_last_newline_and_carry_their_newlines_offset() -> None:
    #        0123456 7890123 45678
    data = b'{"a":1}\n{"a":2}\n{"a":'
    chunk = complete_lines(data, 100, 2, limit=10)
    assert [r.value for r in chunk.records] == [b'{"a":1}', b'{"a":2}']
    assert [decode_offset(r.offset) for r in chunk.records] == [(2, 107), (2, 115)]
    # The next read starts at the incomplete line, which waits for its newline.
    assert (chunk.end, chunk.more) == (116, False)
    assert partial_tail(data) == 5
    assert all(r.partition == 0 and r.key is None and r.timestamp == 0 for r in chunk.records)


def test_blank_lines_are_consumed_but_make_no_record() -> None:
    chunk = complete_lines(b"\n  \nx\n\n", 0, 0, limit=10)
    assert [(r.value, r.offset) for r in chunk.records] == [(b"x", 5)]
    assert chunk.end == 7 and partial_tail(b"\n  \nx\n\n") == 0


def test_the_record_limit_stops_before_the_next_record_only() -> None:
    data = b"a\nb\n\nc\n"
    first = complete_lines(data, 0, 0, limit=2)
    assert [r.value for r in first.records] == [b"a", b"b"]
    # The blank line after b is consumed; the read resumes at c's first byte.
    assert (first.end, first.more) == (5, True)
    rest = complete_lines(data[first.end :], first.end, 0, limit=2)
    assert [r.value for r in rest.records] == [b"c"] and rest.end == len(data)


def test_a_chunk_without_a_newline_takes_nothing() -> None:
    chunk = complete_lines(b'{"half": ', 40, 1, limit=5)
    assert chunk.records == [] and chunk.end == 40 and not chunk.more


@pytest.mark.parametrize(
    ("data", "end"),
    [
        (b"", None),
        (b"partial", None),
        (b"a\n", 2),
        (b"a\nb\n\n  \n", 4),  # trailing blank lines are not a record's end
        (b"a\nb\npartial", 4),
        (b"\n\n", None),
    ],
)
def test_the_end_is_after_the_last_non_blank_complete_line(data: bytes, end: int | None) -> None:
    assert last_record_end(data) == end


def test_the_line_ending_at_a_newline() -> None:
    data = b"ab\ncd\n"
    assert line_ending_at(data, 2) == b"ab"
    assert line_ending_at(data, 5) == b"cd"
    assert line_ending_at(data, 1) is None  # not a newline: the file changed
    assert line_ending_at(data, 9) is None

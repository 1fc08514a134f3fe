"""Decoding raw record values: every kind of undecodable input gets a one-line reason."""

from __future__ import annotations

import json

import pytest

from streamproc.runtime.decode import decode_records
from streamproc.sources.base import RawRecord


def raw(value: bytes | None, offset: int = 0) -> RawRecord:
    return RawRecord(partition=0, offset=offset, key=None, value=value, timestamp_ms=0)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"\xff\xfe{}", "value: not UTF-8 (invalid start byte at byte 0)"),
        (b'{"a": "\xc3"}', "value: not UTF-8 (invalid continuation byte at byte 7)"),
        (
            b"{not json",
            "value: not JSON (Expecting property name enclosed in double quotes: "
            "line 1 column 2 (char 1))",
        ),
        (b"", "value: not JSON (Expecting value: line 1 column 1 (char 0))"),
        (b"[1, 2]", "value: a JSON array, not an object"),
        (b"42", "value: a JSON number, not an object"),
        (b"null", "value: a JSON null, not an object"),
        (b'"text"', "value: a JSON string, not an object"),
        (b"true", "value: a JSON boolean, not an object"),
        (None, "value: null (a tombstone), not a JSON object"),
        (b"[" * 100_000 + b"]" * 100_000, "value: JSON nested too deeply"),
    ],
)
def test_undecodable_values_have_a_reason(value: bytes | None, reason: str) -> None:
    good, bad = decode_records([raw(value)])
    assert good == []
    assert [b.reason for b in bad] == [reason]
    assert "\n" not in bad[0].reason


def test_objects_decode_in_order_with_their_positions() -> None:
    records = [raw(json.dumps({"i": i}).encode(), offset=i) for i in range(3)]
    records.insert(1, raw(b"oops", offset=9))
    good, bad = decode_records(records)
    assert good == [(0, 0, {"i": 0}), (0, 1, {"i": 1}), (0, 2, {"i": 2})]
    assert [b.raw.offset for b in bad] == [9]

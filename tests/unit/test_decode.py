"""Decoding raw record values: every kind of undecodable input gets a one-line reason."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamproc.runtime.decode import decode_records
from streamproc.sources.base import RawRecord


def raw(value: bytes | None, offset: int = 0) -> RawRecord:
    return RawRecord(partition=0, offset=offset, key=None, value=value, timestamp=0)


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


def _decoded(value: bytes) -> object:
    good, bad = decode_records([RawRecord(0, 0, None, value, 0)])
    return good[0][2] if good else bad[0].reason


@pytest.mark.parametrize(
    "value",
    [
        b'{"n": 123456789012345678901234567890}',  # beyond 64 bits: exact, not a float
        b'{"n": -9223372036854775809, "m": [18446744073709551616]}',
        b'{"x": {"y": [1, {"z": 99999999999999999999}]}}',
        b'{"v": NaN, "w": Infinity, "u": -Infinity}',  # read, refused later where needed
        b'{"s": "\\ud800"}',  # a lone surrogate in an escape is kept
        b'{"a": 1, "a": 2}',  # the last duplicate wins
        b'{"f": 1e400}',  # overflows to infinity, as the standard library reads it
        b'{"f": 1.0, "g": 1e19, "h": 0.1}',
    ],
)
def test_fast_decoding_means_exactly_what_the_standard_library_reads(value: bytes) -> None:
    want = json.loads(value.decode())
    got = _decoded(value)
    assert repr(got) == repr(want)


def test_refused_values_keep_their_reasons() -> None:
    assert _decoded(b"\xff\xfe{}") == "value: not UTF-8 (invalid start byte at byte 0)"
    assert str(_decoded(b"[" * 5000 + b"]" * 5000)).startswith("value: JSON nested too deeply")
    assert str(_decoded(b'{"a": ')).startswith("value: not JSON (")


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
        max_leaves=12,
    )
)
def test_any_json_object_decodes_as_the_standard_library_does(inner: object) -> None:
    value = json.dumps({"k": inner}).encode()
    assert repr(_decoded(value)) == repr(json.loads(value.decode()))

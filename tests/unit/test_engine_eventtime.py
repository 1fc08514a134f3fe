"""Event-time parsing: every format, the edges of the valid range, and the errors."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamproc.engine import (
    MAX_EVENT_TS_MS,
    MIN_EVENT_TS_MS,
    EventTimeError,
    format_event_time,
    parse_event_time,
)

T = 1_714_566_896_789  # 2024-05-01T12:34:56.789Z


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2024-05-01T12:34:56.789Z", T),
        ("2024-05-01T12:34:56.789+00:00", T),
        ("2024-05-01T14:34:56.789+02:00", T),
        ("2024-05-01T12:34:56.789", T),  # naive means UTC
        ("2024-05-01 12:34:56.789", T),
        ("2024-05-01T12:34:56.789999Z", T),  # sub-ms fractions floor
        ("2024-05-01T12:34:56.789999999Z", T),
        ("2024-05-01", T - 45_296_789),
        ("1970-01-01T00:00:00Z", 0),
        ("1969-12-31T23:59:59.999Z", -1),
        ("1969-12-31T23:59:59.9995Z", -1),
        ("0001-01-01T00:00:00Z", MIN_EVENT_TS_MS),
        ("9999-12-31T23:59:59.999Z", MAX_EVENT_TS_MS),
        (T, T),
        (-1000, -1000),
        ("2026", 1_767_225_600_000),  # a year alone, as Spark reads it
        ("2026-03", 1_772_323_200_000),  # a year and a month
        ("20260315", 1_773_532_800_000),  # the ISO basic date
        (1.5, 1),  # a float of epoch ms floors
        (-1.5, -2),
    ],
)
def test_auto_reads_iso_8601_and_epoch_millis(value: Any, expected: int) -> None:
    assert parse_event_time(value, "auto") == expected


@pytest.mark.parametrize(
    ("value", "fmt", "expected"),
    [
        (1_714_566_896, "epoch_seconds", 1_714_566_896_000),
        (1_714_566_896.789, "epoch_seconds", T),  # exact: not 788.99999
        (1.001, "epoch_seconds", 1001),
        ("1714566896.789", "epoch_seconds", T),
        (-0.0005, "epoch_seconds", -1),
        (T, "epoch_millis", T),
        ("1714566896789", "epoch_millis", T),
        ("2024-05-01T12:34:56.789Z", "iso8601", T),
        ("20240501T123456.789Z", "iso8601", T),  # ISO basic format
    ],
)
def test_explicit_formats(value: Any, fmt: Any, expected: int) -> None:
    assert parse_event_time(value, fmt) == expected


@pytest.mark.parametrize(
    ("value", "fmt", "message"),
    [
        (None, "auto", "missing"),
        ("garbage", "auto", "'garbage' is not an ISO-8601 time or epoch milliseconds"),
        ("", "auto", "'' is not an ISO-8601 time or epoch milliseconds"),
        (True, "auto", "True is not an ISO-8601 time or epoch milliseconds"),
        ([1], "auto", "[1] is not an ISO-8601 time or epoch milliseconds"),
        (float("nan"), "auto", "nan is not an ISO-8601 time or epoch milliseconds"),
        (float("inf"), "epoch_seconds", "inf is not epoch seconds"),
        (T, "iso8601", f"{T} is not an ISO-8601 time"),
        ("2024-05-01T25:00:00Z", "iso8601", "is not an ISO-8601 time"),
        ("12abc", "epoch_millis", "'12abc' is not epoch milliseconds"),
        (False, "epoch_seconds", "False is not epoch seconds"),
        (MAX_EVENT_TS_MS + 1, "auto", "is outside years 1..9999"),
        (MIN_EVENT_TS_MS - 1, "epoch_millis", "is outside years 1..9999"),
        (10**15, "epoch_seconds", "is outside years 1..9999"),
        ("9" * 5000, "auto", "is not an ISO-8601 time (auto: epoch milliseconds must be a"),
        (str(T), "auto", f"'{T}' is not an ISO-8601 time (auto: epoch milliseconds must be a"),
        ("-1000", "auto", "'-1000' is not an ISO-8601 time (auto: epoch milliseconds must be"),
        ("2026-13", "auto", "'2026-13' is not an ISO-8601 time or epoch milliseconds"),
        ("0001-01-01T00:00:00+01:00", "auto", "is outside years 1..9999"),
    ],
)
def test_unreadable_times_raise_a_one_line_reason(value: Any, fmt: Any, message: str) -> None:
    with pytest.raises(EventTimeError) as info:
        parse_event_time(value, fmt)
    assert message in str(info.value)
    assert "\n" not in str(info.value)
    assert len(str(info.value)) < 120


@given(
    st.datetimes(
        min_value=datetime(1, 1, 2),
        max_value=datetime(9999, 12, 30),
        timezones=st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=30))]),
    )
)
def test_iso_strings_match_datetime_arithmetic(moment: datetime) -> None:
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    expected = (moment - epoch) // timedelta(milliseconds=1)
    assert parse_event_time(moment.isoformat(), "auto") == expected
    assert parse_event_time(moment.isoformat(), "iso8601") == expected


@given(st.integers(MIN_EVENT_TS_MS, MAX_EVENT_TS_MS))
def test_format_event_time_round_trips(ms: int) -> None:
    assert parse_event_time(format_event_time(ms), "iso8601") == ms

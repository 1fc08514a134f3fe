"""Data-quality rules on records and result rows (pure)."""

from __future__ import annotations

import re
from typing import Any

import pytest

from streamproc.engine import ResultRow
from streamproc.runtime.quality import (
    QualityAbortError,
    QualityGate,
    QualityPlan,
    QualityRule,
    Quarantined,
    check,
    json_keys,
    per_partition,
    row_view,
)

NOT_NULL = QualityRule("Keys", "not_null", ("user_id", "event_time"))
RANGE = QualityRule("Amounts", "range", ("amount",), min=0, max=100)
UNIQUE = QualityRule("Ids", "unique", ("id",), severity="warning")


def test_not_null_range_and_unique_name_the_rule_column_and_value() -> None:
    items = [
        {"id": 1, "user_id": "a", "event_time": 1, "amount": 5},
        {"id": 2, "user_id": None, "event_time": 1, "amount": 5},
        {"id": 3, "user_id": "c", "amount": -1},
        {"id": 1, "user_id": "d", "event_time": 1, "amount": "x"},
        {"id": 5, "user_id": "e", "event_time": 1, "amount": 101.5},
        {"id": 6, "user_id": "f", "event_time": 1},
    ]
    got = [(v.index, v.reason, v.blocking) for v in check(items, [NOT_NULL, RANGE, UNIQUE])]
    assert got == [
        (1, "rule Keys (not_null): user_id is null", True),
        (2, "rule Keys (not_null): event_time is null", True),
        (2, "rule Amounts (range): amount = -1 is below 0", True),
        (3, "rule Amounts (range): amount = 'x' is not a number", True),
        (3, "rule Ids (unique): id=1 repeats", False),
        (4, "rule Amounts (range): amount = 101.5 is above 100", True),
    ]


CODE = QualityRule("Codes", "pattern", ("code",), regex=re.compile(r"[A-Z]{2}-\d+"))
STATUS = QualityRule(
    "Statuses",
    "allowed_values",
    ("status",),
    allowed=json_keys(["new", "paid", 1, True]),
    shown_values='["new", "paid", 1, true]',
)


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        ("AB-12", None),
        (None, None),  # null is not_null's business
        ("AB-12x", "code = 'AB-12x' does not match '[A-Z]{2}-\\d+'"),  # the whole value
        ("xAB-12", "code = 'xAB-12' does not match '[A-Z]{2}-\\d+'"),
        (12, "code = 12 does not match '[A-Z]{2}-\\d+'"),  # a number as its JSON text
        ({"a": 1}, "code is a JSON object"),
        (["AB-1"], "code is a JSON array"),
    ],
)
def test_pattern_must_match_the_whole_value(code: Any, reason: str | None) -> None:
    got = [v.reason for v in check([{"code": code}], [CODE])]
    assert got == ([] if reason is None else [f"rule Codes (pattern): {reason}"])


def test_pattern_matches_numbers_and_booleans_by_their_json_text() -> None:
    digits = QualityRule("Digits", "pattern", ("v",), regex=re.compile(r"\d+|true"))
    assert check([{"v": 42}, {"v": True}, {"v": "7"}], [digits]) == []
    (violation,) = check([{"v": 4.5}], [digits])
    assert violation.reason == "rule Digits (pattern): v = 4.5 does not match '\\d+|true'"


@pytest.mark.parametrize(
    ("status", "allowed"),
    [
        ("new", True),
        ("paid", True),
        (1, True),
        (1.0, True),  # equal numbers are one JSON value
        (True, True),
        (None, True),  # null is not_null's business
        ("1", False),  # a string is not the number
        ("true", False),
        (2, False),
        ("NEW", False),  # case matters
        ({"s": "new"}, False),
    ],
)
def test_allowed_values_compare_as_json(status: Any, allowed: bool) -> None:
    got = [v.reason for v in check([{"status": status}], [STATUS])]
    expected_reason = (
        f"rule Statuses (allowed_values): status = {status!r} is not one of "
        '["new", "paid", 1, true]'
    )
    assert got == ([] if allowed else [expected_reason])


def test_booleans_are_not_numbers_for_range() -> None:
    (violation,) = check([{"amount": True}], [RANGE])
    assert violation.reason == "rule Amounts (range): amount = True is not a number"


def test_row_view_lets_the_window_column_stand_for_window_start() -> None:
    row = row_view(
        ("user_id",), ("n", "total"), ("u1",), 600_000, 1_200_000, (3, 9.5), "event_time"
    )
    assert row == {
        "user_id": "u1",
        "window_start": 600_000,
        "window_end": 1_200_000,
        "event_time": 600_000,
        "n": 3,
        "total": 9.5,
    }
    assert check([row], [NOT_NULL]) == []


def gate(on_failure: str, **kw: Any) -> QualityGate:
    plan = QualityPlan(rules=(NOT_NULL, RANGE), on_failure=on_failure, **kw)  # type: ignore[arg-type]
    return QualityGate(plan, ("user_id",), ("amount",))


RECORDS = [
    (0, 10, {"user_id": "a", "event_time": 1, "amount": 5}),
    (1, 11, {"user_id": "b", "event_time": 1, "amount": 500}),
    (1, 12, {"user_id": None, "event_time": 1, "amount": 5}),
]


def test_continue_quarantines_failing_records_with_the_first_rule_they_break() -> None:
    kept, quarantined = gate("continue", after_extract=True).filter_records(list(RECORDS))
    assert kept == RECORDS[:1]
    assert quarantined == [
        Quarantined(1, 11, "rule Amounts (range): amount = 500 is above 100"),
        Quarantined(1, 12, "rule Keys (not_null): user_id is null"),
    ]
    assert per_partition(quarantined) == {1: 2}


def test_a_record_breaking_two_rules_is_quarantined_once() -> None:
    record = (0, 5, {"user_id": None, "event_time": 1, "amount": -3})
    _kept, quarantined = gate("continue", after_extract=True).filter_records([record])
    assert quarantined == [Quarantined(0, 5, "rule Keys (not_null): user_id is null")]


def test_warn_keeps_everything() -> None:
    kept, quarantined = gate("warn", after_extract=True).filter_records(list(RECORDS))
    assert kept == RECORDS and quarantined == []


def test_abort_stops_with_the_record_and_rule() -> None:
    with pytest.raises(QualityAbortError) as stopped:
        gate("abort", after_extract=True).filter_records(list(RECORDS))
    assert str(stopped.value) == (
        "data quality: partition 1 offset 11: rule Amounts (range): amount = 500 is above 100 "
        "(onFailure: abort)"
    )


def test_rules_after_transform_check_result_rows() -> None:
    rows = [ResultRow(("a",), 0, 60_000, (7,)), ResultRow(("b",), 0, 60_000, (700,))]
    gate("warn", window_column="event_time").check_rows(rows)  # logs, writes
    with pytest.raises(QualityAbortError, match="amount = 700 is above 100"):
        gate("abort", window_column="event_time").check_rows(rows)

"""Durations (``"10 minutes"``) and triggers (``"processingtime=5 seconds"``)."""

from __future__ import annotations

import re
from collections.abc import Callable
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamproc.config import Trigger, format_duration_ms, parse_duration_ms
from streamproc.config.durations import UNIT_MS, duration_pattern
from streamproc.config.streaming import parse_trigger

HELP = "expected '<number> <unit>' with unit ms, second(s), minute(s), hour(s), day(s)"


@pytest.mark.parametrize(
    ("text", "ms"),
    [
        ("10 minutes", 600_000),
        ("1 minute", 60_000),
        ("15 MINUTES", 900_000),
        ("5 Seconds", 5_000),
        ("5 s", 5_000),
        ("5 sec", 5_000),
        ("1.5 seconds", 1_500),
        ("0.5 second", 500),
        (".25 s", 250),
        ("250ms", 250),
        ("250 milliseconds", 250),
        ("1 millisecond", 1),
        ("  3 mins  ", 180_000),
        ("3 min", 180_000),
        ("1 hour", 3_600_000),
        ("2 h", 7_200_000),
        ("1.5 hours", 5_400_000),
        ("1 day", 86_400_000),
        ("7 d", 604_800_000),
        ("+2 days", 172_800_000),
    ],
)
def test_valid_durations(text: str, ms: int) -> None:
    assert parse_duration_ms(text) == ms


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", f"'' is not a duration; {HELP}"),
        ("10", f"'10' is not a duration; {HELP}"),
        ("minutes", f"'minutes' is not a duration; {HELP}"),
        ("10 minuts", f"'10 minuts' is not a duration; {HELP}"),
        ("5 secnds", f"'5 secnds' is not a duration; {HELP}"),
        ("2 weeks", f"'2 weeks' is not a duration; {HELP}"),
        ("1 month", f"'1 month' is not a duration; {HELP}"),
        ("five seconds", f"'five seconds' is not a duration; {HELP}"),
        ("1e3 ms", f"'1e3 ms' is not a duration; {HELP}"),
        ("5 seconds ago", f"'5 seconds ago' is not a duration; {HELP}"),
        ("0 ms", "'0 ms' is not positive; expected a duration greater than 0"),
        ("0.0 hours", "'0.0 hours' is not positive; expected a duration greater than 0"),
        ("-1 s", "'-1 s' is not positive; expected a duration greater than 0"),
        ("0.5 ms", "'0.5 ms' is not a whole number of milliseconds"),
        ("0.0001 s", "'0.0001 s' is not a whole number of milliseconds"),
    ],
)
def test_invalid_durations(text: str, message: str) -> None:
    with pytest.raises(ValueError) as raised:
        parse_duration_ms(text)
    assert str(raised.value) == message


@given(st.integers(min_value=1, max_value=10**12))
def test_format_then_parse_is_identity(ms: int) -> None:
    assert parse_duration_ms(format_duration_ms(ms)) == ms


@given(
    st.integers(min_value=1, max_value=10**6),
    st.sampled_from(sorted(UNIT_MS)),
    st.sampled_from([str.lower, str.upper, str.title]),
    st.sampled_from(["", " ", "  "]),
)
def test_any_count_of_any_unit_in_any_case(
    count: int, unit: str, case: Callable[[str], str], space: str
) -> None:
    assert parse_duration_ms(f"{count}{space}{case(unit)}") == count * UNIT_MS[unit]


@given(
    st.decimals(min_value=Decimal("0.001"), max_value=Decimal(10**6), places=3),
    st.sampled_from(sorted(UNIT_MS)),
)
def test_decimals_agree_with_exact_arithmetic(number: Decimal, unit: str) -> None:
    exact = number * UNIT_MS[unit]
    text = f"{number} {unit}"
    if exact == exact.to_integral_value():
        assert parse_duration_ms(text) == int(exact)
    else:
        with pytest.raises(ValueError, match="whole number of milliseconds"):
            parse_duration_ms(text)


@given(st.text(max_size=20))
def test_the_schema_pattern_accepts_what_the_parser_accepts(text: str) -> None:
    try:
        parse_duration_ms(text)
    except ValueError as exc:
        # The schema pattern is for editors: it may accept a non-positive
        # duration, but never a text that is not a duration at all.
        if "is not a duration" in str(exc):
            assert re.fullmatch(duration_pattern(), text) is None
    else:
        assert re.fullmatch(duration_pattern(), text) is not None


def test_format_picks_the_largest_exact_unit() -> None:
    assert format_duration_ms(600_000) == "10 minutes"
    assert format_duration_ms(60_000) == "1 minute"
    assert format_duration_ms(90_000) == "90 seconds"
    assert format_duration_ms(1_500) == "1500 ms"
    assert format_duration_ms(86_400_000) == "1 day"


@pytest.mark.parametrize(
    ("text", "trigger"),
    [
        ("continuous", Trigger("continuous")),
        ("CONTINUOUS", Trigger("continuous")),
        ("once", Trigger("once")),
        ("AvailableNow", Trigger("availablenow")),
        ("processingtime=5 seconds", Trigger("processingtime", 5_000)),
        ("ProcessingTime=1 minute", Trigger("processingtime", 60_000)),
        ("processing_time=30 seconds", Trigger("processingtime", 30_000)),
        (" processingtime = 250 ms ", Trigger("processingtime", 250)),
    ],
)
def test_valid_triggers(text: str, trigger: Trigger) -> None:
    assert parse_trigger(text) == trigger


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("processingtime=5 secnds", f"'processingtime=5 secnds' is not a duration; {HELP}"),
        ("processingtime=", f"'processingtime=' is not a duration; {HELP}"),
        (
            "processingtime=0 s",
            "'processingtime=0 s' is not positive; expected a duration greater than 0",
        ),
        (
            "every 5 seconds",
            "'every 5 seconds' is not a trigger; "
            "expected continuous, once, availablenow or processingtime=<duration>",
        ),
        (
            "continuous=1 second",
            "'continuous=1 second' is not a trigger; "
            "expected continuous, once, availablenow or processingtime=<duration>",
        ),
    ],
)
def test_invalid_triggers(text: str, message: str) -> None:
    with pytest.raises(ValueError) as raised:
        parse_trigger(text)
    assert str(raised.value) == message


def test_trigger_spec_writes_the_config_notation() -> None:
    assert Trigger("processingtime", 30_000).spec == "processingtime=30 seconds"
    assert Trigger("once").spec == "once"

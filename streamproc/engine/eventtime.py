"""Event-time parsing: JSON values to integer epoch milliseconds (UTC).

The engine's batch loop handles the common case (an int of epoch milliseconds) inline and
calls the parser returned by `event_time_parser` for everything else, so these functions
sit on the hot path only for ISO-8601 strings. They raise `EventTimeError` (a ValueError)
with a one-line reason naming the value; the engine prefixes the column name.

Accepted per format:
    auto: a JSON string is an ISO-8601 time, a JSON number epoch milliseconds: a string
        in any form `datetime.fromisoformat` accepts in 3.11 ('Z', offsets, fractional
        seconds, a date only, the basic form '20260315'), or a year ('2026') or a month
        ('2026-03') alone, as Spark reads them; naive means UTC. A string of digits is
        therefore a year or a basic date, or bad, never epoch milliseconds. An int or a
        finite float is epoch milliseconds (fractions are floored).
    iso8601: ISO-8601 strings only, as a string under auto.
    epoch_millis: an int, a finite float (floored), or a decimal string.
    epoch_seconds: an int, a finite float or a decimal string; converted exactly (via
        the shortest decimal form of a float) and floored to the millisecond.
Booleans are never times. Results must fall in years 1..9999.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, NoReturn

from streamproc.engine.spec import EventTimeFormat

#: 0001-01-01T00:00:00Z and 9999-12-31T23:59:59.999Z in epoch milliseconds.
MIN_EVENT_TS_MS = -62_135_596_800_000
MAX_EVENT_TS_MS = 253_402_300_799_999

_EPOCH_AWARE = datetime(1970, 1, 1, tzinfo=UTC)
_EPOCH_NAIVE = datetime(1970, 1, 1)
_ONE_MS = timedelta(milliseconds=1)
_DECIMAL = re.compile(r"-?[0-9]+(?:\.[0-9]+)?")
#: A year, or a year and a month, alone (ISO 8601 reduced precision, which Spark reads).
_YEAR_MONTH = re.compile(r"([0-9]{4})(?:-([0-9]{2}))?")
_fromisoformat = datetime.fromisoformat

_EXPECTED: dict[str, str] = {
    "auto": "an ISO-8601 time or epoch milliseconds",
    "iso8601": "an ISO-8601 time",
    "epoch_millis": "epoch milliseconds",
    "epoch_seconds": "epoch seconds",
}


class EventTimeError(ValueError):
    """An event-time value that cannot be read; the message names the value."""


def show(value: Any, limit: int = 60) -> str:
    """A short one-line repr of a JSON value for reasons ('null' for None)."""
    text = "null" if value is None else repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _fail(value: Any, fmt: str) -> NoReturn:
    if value is None:
        raise EventTimeError("missing")
    raise EventTimeError(f"{show(value)} is not {_EXPECTED[fmt]}")


def _checked(ms: int, value: Any) -> int:
    if MIN_EVENT_TS_MS <= ms <= MAX_EVENT_TS_MS:
        return ms
    raise EventTimeError(f"{show(value)} is outside years 1..9999")


def _iso_ms(value: str, fmt: str) -> int:
    try:
        moment = _fromisoformat(value)
    except ValueError:
        reduced = _YEAR_MONTH.fullmatch(value)
        if reduced is None or not 1 <= int(reduced.group(2) or 1) <= 12:
            _fail(value, fmt)
        moment = datetime(int(reduced.group(1)), int(reduced.group(2) or 1), 1)
    # timedelta // timedelta is exact integer arithmetic on microseconds, and floors,
    # so pre-1970 fractions round towards the past like positive ones.
    if moment.tzinfo is None:
        return _checked((moment - _EPOCH_NAIVE) // _ONE_MS, value)
    return _checked((moment - _EPOCH_AWARE) // _ONE_MS, value)


def _scaled(value: Any, scale: int, fmt: str) -> int:
    """Exact floor(value * scale) for an int, a finite float or a decimal string."""
    kind = type(value)
    if kind is int:
        return _checked(value * scale, value)
    if kind is float:
        if not math.isfinite(value):
            _fail(value, fmt)
        if scale == 1:
            return _checked(math.floor(value), value)
        # repr() is the shortest decimal that round-trips, i.e. what the JSON said.
        return _checked(math.floor(Decimal(repr(value)) * scale), value)
    if kind is str and _DECIMAL.fullmatch(value):
        return _checked(math.floor(Decimal(value) * scale), value)
    _fail(value, fmt)


def parse_auto(value: Any) -> int:
    """Parse an `auto` event time to epoch milliseconds (UTC): strings are ISO 8601."""
    kind = type(value)
    if kind is str:
        try:
            return _iso_ms(value, "auto")
        except EventTimeError:
            if _DECIMAL.fullmatch(value) is None:
                raise
            # A string of digits is a year or a date under auto, never epoch milliseconds.
            raise EventTimeError(
                f"{show(value, 24)} is not an ISO-8601 time (auto: epoch milliseconds must be "
                "a JSON number)"
            ) from None
    if kind is int or kind is float:
        return _scaled(value, 1, "auto")
    _fail(value, "auto")


def parse_iso8601(value: Any) -> int:
    """Parse an ISO-8601 event time (naive means UTC) to epoch milliseconds."""
    if type(value) is str:
        return _iso_ms(value, "iso8601")
    _fail(value, "iso8601")


def parse_epoch_millis(value: Any) -> int:
    """Parse epoch milliseconds (int, float, decimal string), flooring fractions."""
    return _scaled(value, 1, "epoch_millis")


def parse_epoch_seconds(value: Any) -> int:
    """Parse epoch seconds (int, float, decimal string) to epoch milliseconds, floored."""
    return _scaled(value, 1000, "epoch_seconds")


_PARSERS: dict[str, Callable[[Any], int]] = {
    "auto": parse_auto,
    "iso8601": parse_iso8601,
    "epoch_millis": parse_epoch_millis,
    "epoch_seconds": parse_epoch_seconds,
}


def event_time_parser(fmt: EventTimeFormat) -> Callable[[Any], int]:
    """The parser for a format; it raises EventTimeError for an unreadable value."""
    return _PARSERS[fmt]


def parse_event_time(value: Any, fmt: EventTimeFormat = "auto") -> int:
    """Parse one event-time value to epoch milliseconds (UTC).

    Args:
        value: The JSON value of the event-time field (None when missing or null).
        fmt: The configured format.

    Returns:
        Event time in integer epoch milliseconds.

    Raises:
        EventTimeError: the value is missing, of the wrong kind, unparsable, not finite,
            or outside years 1..9999.
    """
    return _PARSERS[fmt](value)


def format_event_time(event_ts_ms: int) -> str:
    """ISO-8601 UTC text for an event time, for display only."""
    moment = _EPOCH_AWARE + timedelta(milliseconds=event_ts_ms)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")

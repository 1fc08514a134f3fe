"""Durations as the original format writes them (``"10 minutes"``), parsed to whole milliseconds.

A duration is ``<number> <unit>``: the number may be decimal (``"1.5 seconds"``) and
the unit is one of ms/millisecond(s), s/sec(s)/second(s), min(s)/minute(s),
h/hour(s), d/day(s), in any case. The result must be a whole number of
milliseconds greater than zero. Months and years are not durations here: their
length depends on the calendar, and a window must have one fixed length.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

from streamproc.config.messages import render

_SECOND = 1000
_MINUTE = 60 * _SECOND
_HOUR = 60 * _MINUTE
_DAY = 24 * _HOUR

UNIT_MS: dict[str, int] = {
    "ms": 1,
    "millisecond": 1,
    "milliseconds": 1,
    "s": _SECOND,
    "sec": _SECOND,
    "secs": _SECOND,
    "second": _SECOND,
    "seconds": _SECOND,
    "min": _MINUTE,
    "mins": _MINUTE,
    "minute": _MINUTE,
    "minutes": _MINUTE,
    "h": _HOUR,
    "hour": _HOUR,
    "hours": _HOUR,
    "d": _DAY,
    "day": _DAY,
    "days": _DAY,
}

DURATION_HELP = "expected '<number> <unit>' with unit ms, second(s), minute(s), hour(s), day(s)"

# A sign is accepted by the pattern so that "-5 seconds" gets the precise
# "not positive" message instead of the vaguer "not a duration".
_NUMBER = r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)"
_DURATION = re.compile(rf"\s*({_NUMBER})\s*([A-Za-z]+)\s*")


class DurationError(ValueError):
    """A text that is not a valid duration.

    Attributes:
        reason: what is wrong, without the text itself (``is not a duration; expected ...``),
            so that a caller can name a larger value holding the duration.
    """

    def __init__(self, text: str, reason: str) -> None:
        super().__init__(f"{render(text)} {reason}")
        self.reason = reason


def case_insensitive(word: str) -> str:
    """``ms`` -> ``[mM][sS]``: JSON Schema patterns (ECMA 262) have no case-insensitive flag."""
    return "".join(f"[{c.lower()}{c.upper()}]" if c.isalpha() else re.escape(c) for c in word)


def duration_pattern(anchored: bool = True) -> str:
    """A regular expression (Python and ECMA 262) matching the text of a duration."""
    units = "|".join(case_insensitive(u) for u in sorted(UNIT_MS, key=len, reverse=True))
    body = rf"{_NUMBER}\s*(?:{units})"
    return rf"^\s*{body}\s*$" if anchored else body


def parse_duration_ms(text: str) -> int:
    """Parse a duration such as ``"10 minutes"`` or ``"1.5 s"`` to whole milliseconds.

    Args:
        text: ``<number> <unit>``; see the module docstring for the units.

    Returns:
        The duration in milliseconds, always > 0.

    Raises:
        DurationError: a ValueError with a one-line message naming the text and what is accepted,
            e.g. ``'5 secnds' is not a duration; expected '<number> <unit>' with unit
            ms, second(s), minute(s), hour(s), day(s)``.
    """
    match = _DURATION.fullmatch(text)
    unit_ms = UNIT_MS.get(match.group(2).lower()) if match else None
    if match is None or unit_ms is None:
        raise DurationError(text, f"is not a duration; {DURATION_HELP}")
    try:
        total = Decimal(match.group(1)) * unit_ms
    except InvalidOperation:  # pragma: no cover - the pattern only admits decimals
        raise DurationError(text, f"is not a duration; {DURATION_HELP}") from None
    if total <= 0:
        raise DurationError(text, "is not positive; expected a duration greater than 0")
    if total != total.to_integral_value():
        raise DurationError(text, "is not a whole number of milliseconds")
    return int(total)


def format_duration_ms(ms: int) -> str:
    """Render milliseconds in the largest unit that divides them: 600000 -> ``"10 minutes"``.

    ``parse_duration_ms(format_duration_ms(ms)) == ms`` for every ``ms > 0``.
    """
    for unit_ms, name in ((_DAY, "day"), (_HOUR, "hour"), (_MINUTE, "minute"), (_SECOND, "second")):
        if ms % unit_ms == 0:
            count = ms // unit_ms
            return f"{count} {name}" if count == 1 else f"{count} {name}s"
    return f"{ms} ms"

"""Conversions between engine values and SQL parameters (pure)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def ms_to_datetime(ms: int | None) -> datetime | None:
    """Epoch milliseconds (event time) to an aware UTC datetime; exact, pre-1970 too."""
    if ms is None:
        return None
    return _EPOCH + timedelta(milliseconds=ms)


def datetime_to_ms(value: datetime | None) -> int | None:
    """An aware datetime back to epoch milliseconds."""
    if value is None:
        return None
    delta = value - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


def key_text(value: Any) -> str | None:
    """A group-by value as stored in a text column: strings as they are, other JSON as JSON."""
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"))


def to_json(value: Any) -> str:
    """Compact JSON text for a jsonb parameter."""
    return json.dumps(value, separators=(",", ":"), allow_nan=False)


def key_json(key: Sequence[Any]) -> str:
    """A group key tuple as the jsonb array stored in the partials table."""
    return json.dumps(list(key), separators=(",", ":"), allow_nan=False)

"""Conversions between engine values and SQL parameters (pure)."""

from __future__ import annotations

import json
import marshal
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


def key_types(key: Sequence[Any]) -> str:
    """The JSON type of each group-by value, one letter each: s, n, b, or - for null."""
    return "".join(TYPE_LETTER.get(type(value), "s") for value in key)


#: The letter of each JSON type in `group_key_types` (any other type is a string).
TYPE_LETTER = {str: "s", int: "n", float: "n", bool: "b", type(None): "-"}

# Partial states and keys are stored in marshal format 2: it round-trips the
# engine's values exactly (ints of any size, floats bit for bit, bool apart
# from int, str, None, lists and dicts of first/last values), equal values
# always encode to equal bytes (format 2 writes no back-references), and it
# is about ten times faster than JSON. Format 2 has been frozen since Python 2.5.
_MARSHAL_VERSION = 2


def encode_key(key: Sequence[Any]) -> bytes:
    """A group key (the tuple of group-by values) as stored: typed and canonical."""
    return marshal.dumps(tuple(key), _MARSHAL_VERSION)


def decode_key(raw: bytes) -> tuple[Any, ...]:
    """Inverse of `encode_key`."""
    key: tuple[Any, ...] = marshal.loads(raw)
    return key


def encode_state(state: Sequence[Any]) -> bytes:
    """A partial aggregate state as stored."""
    return marshal.dumps(tuple(state), _MARSHAL_VERSION)


def decode_state(raw: bytes) -> tuple[Any, ...]:
    """Inverse of `encode_state`."""
    state: tuple[Any, ...] = marshal.loads(raw)
    return state

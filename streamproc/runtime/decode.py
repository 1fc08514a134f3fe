"""Decode raw Kafka record values into JSON objects, or say why not.

The engine only ever sees dicts; everything that is not a UTF-8 JSON object
is a bad record here, with a one-line reason, so the worker never crashes on
input.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson

from streamproc.sources.base import RawRecord

# Deep nesting makes json.loads raise RecursionError; a record that deep is
# poison, not data, and must never take the worker down.
_MAX_REASON_CHARS = 200


@dataclass(frozen=True, slots=True)
class UndecodableRecord:
    """A record that is not a UTF-8 JSON object, with the reason."""

    raw: RawRecord
    reason: str


def decode_records(
    raws: Iterable[RawRecord],
) -> tuple[list[tuple[int, int, dict[str, Any]]], list[UndecodableRecord]]:
    """Split fetched records into decoded JSON objects and undecodable ones.

    orjson decodes first (about 7 times faster); a value it refuses, or one
    where it may have rounded a big integer to a float, is decoded again by
    the standard library, so that what a record means is exactly as before:
    integers of any size stay exact, NaN and Infinity are read (then refused
    by the engine where a number must be finite), lone surrogates in escapes
    are kept, the last of duplicate keys wins, and nesting deeper than about
    a thousand levels is a bad record.

    Returns:
        ``(good, bad)``: good records as ``(partition, offset, object)`` in
        input order, and the rest with a one-line reason each.
    """
    good: list[tuple[int, int, dict[str, Any]]] = []
    bad: list[UndecodableRecord] = []
    fast = orjson.loads
    append = good.append
    for raw in raws:
        value = raw.value
        if value is None:
            bad.append(UndecodableRecord(raw, "value: null (a tombstone), not a JSON object"))
            continue
        try:
            obj = fast(value)
            if type(obj) is dict and not _exact(obj):
                obj = _standard(value)
        except orjson.JSONDecodeError:
            try:
                obj = _standard(value)
            except UnicodeDecodeError as exc:
                reason = f"value: not UTF-8 ({exc.reason} at byte {exc.start})"
                bad.append(UndecodableRecord(raw, reason))
                continue
            except (ValueError, RecursionError, TypeError) as exc:
                bad.append(UndecodableRecord(raw, _not_json_reason(exc)))
                continue
        if type(obj) is dict:
            append((raw.partition, raw.offset, obj))
        else:
            bad.append(UndecodableRecord(raw, f"value: a JSON {_json_kind(obj)}, not an object"))
    return good, bad


def _standard(value: bytes) -> Any:
    # Decode UTF-8 ourselves: json.loads on bytes guesses the encoding (a
    # leading 0xFF 0xFE reads as UTF-16) instead of rejecting it.
    return json.loads(value.decode("utf-8"))


#: orjson reads an integer outside 64 bits as a float: such a float is integral
#: and at least this large.
_BIG = 9.2e18


def _exact(obj: Any) -> bool:
    """False when a value may be a big integer orjson rounded (then decode again)."""
    values = obj.values() if type(obj) is dict else obj
    for v in values:
        t = type(v)
        if t is float:
            if (v >= _BIG or v <= -_BIG) and v.is_integer():
                return False
        elif (t is dict or t is list) and not _exact(v):
            return False
    return True


def _not_json_reason(exc: BaseException) -> str:
    if isinstance(exc, RecursionError):
        return "value: JSON nested too deeply"
    message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return f"value: not JSON ({message[:_MAX_REASON_CHARS]})"


def _json_kind(obj: object) -> str:
    if obj is None:
        return "null"
    if isinstance(obj, bool):
        return "boolean"
    if isinstance(obj, int | float):
        return "number"
    if isinstance(obj, str):
        return "string"
    if isinstance(obj, list):
        return "array"
    return type(obj).__name__

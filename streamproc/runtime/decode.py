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

    Returns:
        ``(good, bad)``: good records as ``(partition, offset, object)`` in
        input order, and the rest with a one-line reason each.
    """
    good: list[tuple[int, int, dict[str, Any]]] = []
    bad: list[UndecodableRecord] = []
    loads = json.loads
    append = good.append
    for raw in raws:
        value = raw.value
        if value is None:
            bad.append(UndecodableRecord(raw, "value: null (a tombstone), not a JSON object"))
            continue
        try:
            # Decode UTF-8 ourselves: json.loads on bytes guesses the encoding
            # (a leading 0xFF 0xFE reads as UTF-16) instead of rejecting it.
            obj = loads(value.decode("utf-8"))
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

"""Poison input: records no pipeline may choke on, placed among good records."""

from __future__ import annotations

import json
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tests.kafka_io import Message
from tests.reference import parse_ts


@dataclass(frozen=True)
class Poison:
    """A record no pipeline may choke on, and what the DLQ must say about it."""

    kind: str
    value: bytes | None
    reason: str  # a part of the DLQ `reason` header
    rejected_by_sink: bool = False  # valid for the engine, refused by PostgreSQL


def _json(record: dict[str, Any]) -> bytes:
    return json.dumps(record).encode()


def poison_records() -> list[Poison]:
    """Twenty-eight kinds of poison for the fault query (group by user_id, numbers in value).

    Where a poison has a valid event time it is EVENT_TIME, which `with_poison`
    replaces with the latest time of its partition so far: on time, so that
    the engine does not set it aside as late before the sink sees it.
    """
    ok = {"user_id": "u1", "event_time": EVENT_TIME, "value": 1}

    def with_(**changes: Any) -> bytes:
        record = {**ok, **changes}
        return _json({k: v for k, v in record.items() if v is not _DROP})

    noise = random_text(1_000_000)  # incompressible: its index entry cannot shrink
    return [
        Poison("invalid UTF-8", b'{"user_id": "u1", "x": "\xff\xfe"}', "not UTF-8"),
        Poison("not JSON", b'{"user_id": "u1", "event_time": ', "not JSON"),
        Poison("empty value", b"", "not JSON"),
        Poison("tombstone", None, "null (a tombstone)"),
        Poison("JSON array", b"[1, 2, 3]", "a JSON array, not an object"),
        Poison("JSON number", b"42", "a JSON number, not an object"),
        Poison("JSON null", b"null", "a JSON null, not an object"),
        Poison("JSON string", b'"hello"', "a JSON string, not an object"),
        Poison("JSON boolean", b"true", "a JSON boolean, not an object"),
        Poison("no event time", with_(event_time=_DROP), "event_time: missing"),
        Poison("null event time", with_(event_time=None), "event_time: null"),
        Poison("garbage event time", with_(event_time="yesterday"), "is not an ISO-8601"),
        Poison("object event time", with_(event_time={"$date": 1}), "is not an ISO-8601"),
        Poison("event time past 9999", with_(event_time=10**16), "outside years 1..9999"),
        Poison("event time at the edge", with_(event_time="9999-12-31T23:59:00Z"), "too close"),
        Poison("NaN event time", b'{"user_id": "u1", "event_time": NaN}', "is not an ISO-8601"),
        Poison("overflowing value", with_(value=_RAW_1E400), "is not a finite number"),
        Poison("value out of range", with_(value=1e300), "is out of range"),
        Poison("NaN value", with_(value=_RAW_NAN), "is not a finite number"),
        Poison("numeric column holds a string", with_(value="12"), "is not a number"),
        Poison("numeric column holds an object", with_(value={"a": 1}), "is not a number"),
        Poison(
            "SQL in a numeric column",
            with_(value="0); DROP TABLE streamproc_ledger; --"),
            "is not a number",
        ),
        Poison(
            "SQL and quotes in keys and the event time",
            _json(
                {
                    "'; DROP TABLE streamproc_ledger; --": '"',
                    'a"b\\': "'; DELETE FROM streamproc_partials; --",
                    "user_id": "u1",
                    "event_time": "'; DELETE FROM streamproc_ledger; --",
                }
            ),
            "is not an ISO-8601",
        ),
        Poison("group value an object", with_(user_id={"a": 1}), "not a valid group-by value"),
        Poison("deeply nested JSON", b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
        # Valid for the engine, refused by PostgreSQL: isolated and dead-lettered.
        Poison("NUL in the group key", with_(user_id="u\u0000x"), _REJECTED, True),
        Poison("lone surrogate in the group key", with_(user_id="\ud800"), _REJECTED, True),
        Poison("1 MB group key", with_(user_id=noise), _REJECTED, True),
    ]


EVENT_TIME = "__EVENT_TIME__"
_DROP = object()
_REJECTED = "rejected by the sink: "
# json.dumps cannot write these; the markers are replaced in the bytes.
_RAW_1E400 = "__1e400__"
_RAW_NAN = "__NaN__"


def random_text(n: int, seed: int = 7) -> str:
    """n random letters and digits (incompressible), the same for the same seed."""
    rng = random.Random(seed)
    return "".join(rng.choices("abcdefghijklmnopqrstuvwxyz0123456789", k=n))


def fill_markers(value: bytes | None, event_time: str) -> bytes | None:
    """Put in the event time, and the JSON json.dumps refuses to write (1e400, NaN)."""
    if value is None:
        return None
    value = value.replace(b'"__1e400__"', b"1e400").replace(b'"__NaN__"', b"NaN")
    return value.replace(EVENT_TIME.encode(), event_time.encode())


def with_poison(
    stream: Mapping[int, Sequence[dict[str, Any]]], poisons: Sequence[Poison], seed: int = 5
) -> tuple[list[Message], dict[tuple[int, int], Poison]]:
    """Every poison once in every partition, at random places among the good records.

    Returns the messages to produce and where each poison will land (partition, offset).
    """
    rng = random.Random(seed)
    messages: list[Message] = []
    where: dict[tuple[int, int], Poison] = {}
    for p, records in stream.items():
        slots = sorted(rng.sample(range(len(records) + len(poisons)), len(poisons)))
        order = list(poisons)
        rng.shuffle(order)
        good = iter(records)
        queue = iter(order)
        latest = records[0]["event_time"]
        for offset in range(len(records) + len(poisons)):
            if slots and offset == slots[0]:
                slots.pop(0)
                poison = next(queue)
                where[(p, offset)] = poison
                value = fill_markers(poison.value, latest)
                messages.append((p, f"poison-{p}-{offset}".encode(), value))
            else:
                rec = next(good)
                latest = max(latest, rec["event_time"], key=parse_ts)
                messages.append((p, f"msg-{rec['seq']}".encode(), json.dumps(rec).encode()))
    return messages, where


def good_records(
    stream: Mapping[int, Sequence[dict[str, Any]]], where: Mapping[tuple[int, int], Poison]
) -> dict[int, list[tuple[int, dict[str, Any]]]]:
    """The good records with their offsets in the poisoned topic (for the model)."""
    out: dict[int, list[tuple[int, dict[str, Any]]]] = {}
    for p, records in stream.items():
        good = iter(records)
        n = len(records) + sum(1 for q, _ in where if q == p)
        out[p] = [(o, next(good)) for o in range(n) if (p, o) not in where]
    return out

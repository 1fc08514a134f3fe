"""Test data: streams with disorder, late records, nulls and ties; the usual queries."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

from tests.reference import Query

BASE_MS = 1_764_151_200_000  # 2025-11-26T10:00:00Z
MINUTE = 60_000

#: Every aggregate function over `value`, and count(*).
AGGS: tuple[tuple[str, str | None, str], ...] = (
    ("count", None, "count"),
    ("value_count", "value", "count"),
    ("value_sum", "value", "sum"),
    ("value_avg", "value", "avg"),
    ("value_min", "value", "min"),
    ("value_max", "value", "max"),
    ("value_first", "value", "first"),
    ("value_last", "value", "last"),
)

#: Each output mode x window shape, with every aggregate (5 min delay, 10 min windows).
MODE_CASES: dict[str, Query] = {
    "append_tumbling": Query(
        ("user_id",), AGGS, delay_ms=5 * MINUTE, size_ms=10 * MINUTE, output_mode="append"
    ),
    "append_sliding": Query(
        ("user_id",),
        AGGS,
        delay_ms=5 * MINUTE,
        size_ms=10 * MINUTE,
        slide_ms=4 * MINUTE,
        output_mode="append",
    ),
    "update_tumbling": Query(
        ("user_id",), AGGS, delay_ms=5 * MINUTE, size_ms=10 * MINUTE, output_mode="update"
    ),
    "update_sliding": Query(
        ("user_id",),
        AGGS,
        delay_ms=5 * MINUTE,
        size_ms=10 * MINUTE,
        slide_ms=4 * MINUTE,
        output_mode="update",
    ),
    "complete_tumbling": Query(
        ("user_id",), AGGS, delay_ms=5 * MINUTE, size_ms=10 * MINUTE, output_mode="complete"
    ),
    "complete_sliding": Query(
        ("user_id",),
        AGGS,
        delay_ms=5 * MINUTE,
        size_ms=10 * MINUTE,
        slide_ms=4 * MINUTE,
        output_mode="complete",
    ),
    "update_nonwindowed": Query(("user_id",), AGGS, output_mode="update"),
    "complete_nonwindowed": Query(("user_id",), AGGS, output_mode="complete"),
}


def make_stream(
    n: int, partitions: int = 4, seed: int = 1, users: int = 7, start_ms: int = BASE_MS
) -> dict[int, list[dict[str, Any]]]:
    """Records per partition in offset order: disorder, ~3% late, nulls, exact ties.

    Args:
        n: How many records in all.
        partitions: How many partitions they are spread over (at random).
        seed: The random seed: the same arguments always give the same stream.
        users: How many distinct `user_id` values.
        start_ms: The event time of the first record; one record every 2 s after it.

    Returns:
        partition -> records, each {"user_id", "event_time" (ISO-8601), "seq", "value"?}.
    """
    rng = random.Random(seed)
    out: dict[int, list[dict[str, Any]]] = {p: [] for p in range(partitions)}
    for i in range(n):
        p = rng.randrange(partitions)
        base = start_ms + i * 2_000
        roll = rng.random()
        if roll < 0.03:
            ts = base - 20 * MINUTE - rng.randrange(5 * MINUTE)  # late for a 5 min delay
        elif roll < 0.05:
            ts = start_ms + (i // 50) * 50 * 2_000  # exact ties
        else:
            ts = base - rng.randrange(2 * MINUTE)
        record: dict[str, Any] = {
            "user_id": f"u{rng.randrange(users)}",
            "event_time": iso(ts),
            "seq": i,
        }
        v = rng.random()
        if v < 0.05:
            record["value"] = None
        elif v > 0.08:
            record["value"] = rng.randrange(-50, 500)
        out[p].append(record)
    return out


def iso(ms: int) -> str:
    """Epoch milliseconds as ISO-8601 UTC text with a Z (2025-11-26T10:00:00.250000Z)."""
    moment = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)
    return moment.isoformat().replace("+00:00", "Z")


def halves(
    stream: dict[int, list[dict[str, Any]]], fraction: float = 0.5
) -> tuple[dict[int, list[dict[str, Any]]], dict[int, list[dict[str, Any]]]]:
    """Each partition cut in two at `fraction` of its records: (first part, rest)."""
    cut = {p: int(len(records) * fraction) for p, records in stream.items()}
    return (
        {p: records[: cut[p]] for p, records in stream.items()},
        {p: records[cut[p] :] for p, records in stream.items()},
    )

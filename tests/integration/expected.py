"""An independent, deliberately plain model of what the sink table must hold.

Written from DESIGN.md section 1 alone (no engine code): lateness per
partition in offset order, then aggregation of the on-time records per
(key, window), then the output mode's view of the final table.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any


@dataclass(frozen=True)
class Query:
    group_by: tuple[str, ...]
    aggregations: tuple[tuple[str, str | None, str], ...]  # (output, column or None for *, func)
    time_column: str = "event_time"
    delay_ms: int | None = None
    size_ms: int | None = None
    slide_ms: int | None = None
    output_mode: str = "update"


def parse_ts(value: Any) -> int:
    if isinstance(value, int):
        return value
    text = str(value)
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    dt = datetime.fromisoformat(text)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return round(dt.timestamp() * 1000)


def windows_of(ts: int, size: int, slide: int) -> list[tuple[int, int]]:
    out = []
    k = ts // slide
    while k * slide + size > ts:
        if k * slide <= ts:
            out.append((k * slide, k * slide + size))
        k -= 1
    return sorted(out)


@dataclass
class Outcome:
    table: dict[tuple[Any, ...], tuple[Any, ...]]
    late: list[tuple[int, int]]  # (partition, offset)
    watermark_ms: int | None


def expected(
    query: Query, partitions: Mapping[int, Sequence[tuple[int, dict[str, Any]]]]
) -> Outcome:
    """partitions: partition -> [(offset, record)] in offset order."""
    contributions: dict[tuple[Any, ...], list[tuple[int, int, int, dict[str, Any]]]] = {}
    late: list[tuple[int, int]] = []
    marks: list[int | None] = []
    for p, records in sorted(partitions.items()):
        max_ts: int | None = None
        for offset, rec in records:
            ts = parse_ts(rec[query.time_column])
            if query.delay_ms is not None and max_ts is not None and ts < max_ts - query.delay_ms:
                late.append((p, offset))
                continue
            max_ts = ts if max_ts is None else max(max_ts, ts)
            key = tuple(rec.get(c) for c in query.group_by)
            wins = (
                windows_of(ts, query.size_ms, query.slide_ms or query.size_ms)
                if query.size_ms
                else [(None, None)]
            )
            for ws, we in wins:
                contributions.setdefault((*key, ws, we), []).append((ts, p, offset, rec))
        marks.append(None if max_ts is None or query.delay_ms is None else max_ts - query.delay_ms)
    watermark = None if (not marks or None in marks) else min(m for m in marks if m is not None)
    table = {}
    for full_key, contribs in contributions.items():
        we = full_key[-1]
        if query.output_mode == "append" and (watermark is None or we > watermark):
            continue
        table[full_key] = tuple(_agg(func, col, contribs) for _, col, func in query.aggregations)
    return Outcome(table, late, watermark)


def _agg(func: str, col: str | None, contribs: list[tuple[int, int, int, dict[str, Any]]]) -> Any:
    if col is None:
        return len(contribs)
    if func in ("first", "last"):
        ordered = sorted(contribs, key=lambda c: (c[0], c[1], c[2]))
        chosen = ordered[0] if func == "first" else ordered[-1]
        return chosen[3].get(col)
    values = [c[3].get(col) for c in contribs if c[3].get(col) is not None]
    if func == "count":
        return len(values)
    if not values:
        return None
    if func == "sum":
        return sum(values)
    if func == "avg":
        return sum(values) / len(values)
    if func == "min":
        return min(values)
    if func == "max":
        return max(values)
    raise ValueError(func)

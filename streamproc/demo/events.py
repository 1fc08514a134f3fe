"""Synthetic user events for the demo and the tests (pure, seeded).

Event time runs faster than wall time (`event_ms_per_second`), so windows of
minutes close within a demo of seconds. A fraction of the events is
deliberately late: their event time lies further behind the stream than the
watermark delay allows.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from streamproc.config import PipelineConfig


@dataclass(frozen=True, slots=True)
class EventStreamSpec:
    """Shape of the generated stream."""

    start_ms: int = int(datetime(2026, 11, 26, 10, 0, tzinfo=UTC).timestamp() * 1000)
    users: int = 50
    event_step_ms: int = 250  # event-time gap between consecutive events
    jitter_ms: int = 30_000  # on-time disorder
    late_fraction: float = 0.01
    late_by_ms: int = 30 * 60_000  # how far behind the stream a late event lies
    seed: int = 7


def user_events(spec: EventStreamSpec, count: int) -> Iterator[dict[str, Any]]:
    """`count` events: user_id, event_time (ISO-8601 UTC), event_count, total_value."""
    rng = random.Random(spec.seed)
    for i in range(count):
        base = spec.start_ms + i * spec.event_step_ms
        if rng.random() < spec.late_fraction and i > 0:
            ts = base - spec.late_by_ms - rng.randrange(60_000)
        else:
            ts = base - rng.randrange(spec.jitter_ms)
        yield {
            "user_id": f"u{rng.randrange(spec.users):03d}",
            "event_time": iso_ms(ts),
            "event_count": 1,
            "total_value": round(rng.uniform(1, 500), 2),
        }


def iso_ms(ts_ms: int) -> str:
    """Epoch milliseconds as an ISO-8601 UTC string with millisecond precision."""
    dt = datetime.fromtimestamp(ts_ms / 1000, tz=UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts_ms % 1000:03d}Z"


#: Values each group-by field takes (`user-0` ... `user-7`).
KEYS = 8


@dataclass(frozen=True, slots=True)
class ConfigStreamSpec:
    """Records shaped for one pipeline config: its group-by, aggregated and time fields.

    Attributes:
        time_column: the event-time field (None: the config has no watermark or window).
        time_format: the config's eventTimeFormat ('auto', 'iso8601', 'epoch_millis',
            'epoch_seconds').
        group_by: the group-by fields; each takes one of `keys` values.
        numbers: fields averaged or compared (avg, min, max, first, last): a price.
        integers: fields only summed: a quantity, 1 to 20.
        counted: fields only counted (count): always 1.
        span_ms: the event time the stream covers, start to end: long enough that
            append-mode windows close while it runs.
        late_by_ms: how far behind the stream a late record lies (beyond the delay).
    """

    time_column: str | None
    time_format: str
    group_by: tuple[str, ...]
    numbers: tuple[str, ...]
    integers: tuple[str, ...]
    counted: tuple[str, ...]
    span_ms: int
    late_by_ms: int
    keys: int = KEYS
    late_fraction: float = 0.01
    seed: int = 7


def config_records(spec: ConfigStreamSpec, start_ms: int, count: int) -> Iterator[dict[str, Any]]:
    """`count` records for the spec, event time from `start_ms` over `spec.span_ms`.

    On-time records run in event-time order with a little disorder (well within any
    delay); about `late_fraction` of them lie `late_by_ms` behind the stream, so the
    config's late-data strategy sees some. Seeded: the same call gives the same records.
    """
    rng = random.Random(spec.seed)
    step = spec.span_ms / max(count, 1)
    for i in range(count):
        base = start_ms + int(i * step)
        late = i > 0 and rng.random() < spec.late_fraction
        ts = base - spec.late_by_ms - rng.randrange(1000) if late else base - rng.randrange(500)
        record: dict[str, Any] = {
            column: f"{column.removesuffix('_id')}-{rng.randrange(spec.keys)}"
            for column in spec.group_by
        }
        if spec.time_column is not None:
            record[spec.time_column] = _encode_time(ts, spec.time_format)
        for column in spec.numbers:
            record[column] = round(rng.uniform(1, 500), 2)
        for column in spec.integers:
            record[column] = rng.randint(1, 20)
        for column in spec.counted:
            record[column] = 1
        yield record


def _encode_time(ts_ms: int, time_format: str) -> Any:
    if time_format == "epoch_millis":
        return ts_ms
    if time_format == "epoch_seconds":
        return ts_ms / 1000
    return iso_ms(ts_ms)


def stream_spec_for(
    cfg: PipelineConfig, seconds: float, count: int | None = None
) -> ConfigStreamSpec:
    """Records for `cfg`, produced over `seconds` of wall time.

    Event time runs faster than wall time so that, within the run, it covers three
    times (window + watermark delay): append-mode windows close and update-mode ones
    are rewritten while one watches. Late records lie a window plus the delay behind.

    With session windows (`gapDuration`) and the number of records `count`, event time
    covers enough that a key's records are a third of the gap apart on average (keys
    are drawn at random, so about 5% of a key's pauses reach the gap): each key has a
    few sessions, not one long one.
    """
    agg = cfg.aggregation
    watermark = cfg.streaming.watermark if cfg.streaming else None
    delay_ms = watermark.delay_ms if watermark else 0
    size_ms = (agg.window_size_ms if agg else None) or 60_000
    time_column = (agg.window_column if agg else None) or (
        watermark.event_time_column if watermark else None
    )
    aggregations = agg.aggregations if agg else ()
    group_by = agg.group_by if agg else ()
    counted = {a.column for a in aggregations if a.column and a.func == "count"}
    summed = {a.column for a in aggregations if a.column and a.func == "sum"}
    numbers = {a.column for a in aggregations if a.column and a.func not in ("count", "sum")}
    skip = {*group_by, time_column}
    span_ms = max(int(3 * (size_ms + delay_ms)), int(seconds * 1000))
    gap_ms = agg.gap_duration_ms if agg else None
    if gap_ms and count:
        keys = KEYS ** max(len(group_by), 1)
        span_ms = max(span_ms, gap_ms * count // (3 * keys))
    return ConfigStreamSpec(
        time_column=time_column,
        time_format=watermark.event_time_format if watermark else "auto",
        group_by=group_by,
        numbers=tuple(sorted(numbers - skip)),
        integers=tuple(sorted(summed - numbers - skip)),
        counted=tuple(sorted(counted - summed - numbers - skip)),
        span_ms=span_ms,
        late_by_ms=delay_ms + size_ms,
    )

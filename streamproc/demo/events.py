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

"""The event-time guard on an injected wall clock: no test waits for or reads real time.

A record without a Kafka timestamp (0 or less) is measured against the wall
clock the query hands the guard (the engine's clock); one with a timestamp,
against that timestamp, whatever the clock says.

    wall clock (fake)      T
    maxFutureSkew          |---- 1 h ----|
    event times            T + 30 min (kept)      T + 2 h (bad)
"""

from __future__ import annotations

import json

from streamproc.runtime.decode import decode_records
from streamproc.runtime.eventtime_guard import EventTimeGuard
from streamproc.runtime.plan import QueryPlan
from streamproc.sources.base import RawRecord
from tests.plans import spec_of
from tests.reference import Query

HOUR = 3_600_000
#: 2026-01-01T00:00:00Z
T = 1_767_225_600_000


class FakeClock:
    """Wall time in epoch ms that moves only when the test moves it."""

    def __init__(self, now_ms: int) -> None:
        self.now_ms = now_ms
        self.reads = 0

    def __call__(self) -> int:
        self.reads += 1
        return self.now_ms


def guard_on(clock: FakeClock) -> EventTimeGuard:
    plan = QueryPlan(
        pipeline_id="q",
        query_name="q",
        spec=spec_of(Query(("user_id",), (("n", None, "count"),), delay_ms=0)),
        bootstrap="memory",
        topic="events",
        starting_offsets="earliest",
        trigger="availablenow",
        max_future_skew_ms=HOUR,
    )
    return EventTimeGuard(plan, clock)


def raw(offset: int, event_ms: int, *, timestamp: int = 0) -> RawRecord:
    body = json.dumps({"user_id": "u", "event_time": event_ms}).encode()
    return RawRecord(partition=0, offset=offset, key=None, value=body, timestamp=timestamp)


def offsets_kept_and_bad(
    guard: EventTimeGuard, raws: list[RawRecord]
) -> tuple[list[int], list[int]]:
    good, undecodable = decode_records(raws)
    assert not undecodable
    kept, bad = guard.future(good, raws)
    return [offset for _, offset, _ in kept], [b.raw.offset for b in bad]


def test_a_record_without_a_timestamp_is_measured_against_the_injected_clock() -> None:
    clock = FakeClock(T)
    guard = guard_on(clock)
    raws = [raw(0, T + HOUR // 2), raw(1, T + 2 * HOUR)]
    assert offsets_kept_and_bad(guard, raws) == ([0], [1])
    assert clock.reads == 1  # once per batch
    # Two hours later by the clock, the same records are both within the skew.
    clock.now_ms = T + 2 * HOUR
    assert offsets_kept_and_bad(guard, raws) == ([0, 1], [])


def test_a_records_kafka_timestamp_wins_over_the_clock() -> None:
    clock = FakeClock(T + 10 * HOUR)  # far ahead: it would keep both
    guard = guard_on(clock)
    raws = [raw(0, T + HOUR // 2, timestamp=T), raw(1, T + 2 * HOUR, timestamp=T)]
    assert offsets_kept_and_bad(guard, raws) == ([0], [1])


def test_the_reason_names_the_distance_and_the_skew() -> None:
    guard = guard_on(FakeClock(T))
    good, _ = decode_records([raw(0, T + 3 * HOUR)])
    _, bad = guard.future(good, [raw(0, T + 3 * HOUR)])
    assert bad[0].reason == (
        "event_time: 2026-01-01T03:00:00.000Z is 3 hours ahead of the time the record was "
        "written (2026-01-01T00:00:00.000Z); watermark.maxFutureSkew is 1 hour"
    )

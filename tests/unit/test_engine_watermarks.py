"""Watermarks and lateness. Timelines are event time in ms; "wall" is the injected clock.

wm(p) = max event time of p's aggregated records - delay;
W = min over known partitions of wm(p), monotonic.
"""

from __future__ import annotations

from typing import Any

from streamproc.engine import (
    LATE_WATERMARK,
    LATE_WINDOW_CLOSED,
    AggSpec,
    Engine,
    QuerySpec,
    WindowSpec,
)
from streamproc.state import memory_store_factory

TEN = WindowSpec(10, 10)


class Clock:
    """A manual wall clock (ms)."""

    def __init__(self) -> None:
        self.now = 0

    def __call__(self) -> int:
        return self.now


def spec(
    delay: int | None = 5,
    window: WindowSpec | None = TEN,
    idle_ms: int | None = None,
    mode: Any = "update",
) -> QuerySpec:
    return QuerySpec(
        group_by=("k",),
        aggregations=(AggSpec("count", None, "count"),),
        output_mode=mode,
        event_time_column="ts",
        delay_ms=delay,
        window=window,
        idle_timeout_ms=idle_ms,
    )


def recs(partition: int, *times: int, first_offset: int = 0) -> list[Any]:
    return [(partition, first_offset + i, {"ts": t, "k": "a"}) for i, t in enumerate(times)]


def test_lateness_uses_the_partition_watermark_from_earlier_records() -> None:
    # delay 5, p0:  10   20   14   15   16
    #                    wm=15 -> 14 is late; 15 (== wm) and 16 are on time
    engine = Engine(spec(), memory_store_factory, clock=Clock())
    result = engine.process(recs(0, 10, 20, 14, 15, 16))
    assert [(r.offset, r.event_ts_ms, r.watermark_ms, r.reason) for r in result.late] == [
        (2, 14, 15, LATE_WATERMARK)
    ]
    assert engine.partition_watermark_ms(0) == 15
    assert engine.partition_max_event_ts_ms(0) == 20


def test_other_partitions_never_make_a_record_late() -> None:
    # p1 is far ahead; p0's record at 1 is judged by p0's own watermark only.
    engine = Engine(spec(), memory_store_factory, clock=Clock())
    result = engine.process(recs(1, 1000) + recs(0, 3, 1))
    assert result.late == ()
    assert result.aggregated == 3


def test_late_and_bad_records_do_not_move_the_watermark() -> None:
    engine = Engine(spec(), memory_store_factory, clock=Clock())
    engine.process(recs(0, 100))
    engine.process([(0, 1, {"ts": 50, "k": "a"}), (0, 2, {"ts": "never", "k": "a"})])
    engine.process([(0, 3, {"ts": 500, "k": [1]})])  # bad: group value
    assert engine.partition_max_event_ts_ms(0) == 100


def test_global_watermark_is_the_min_and_waits_for_every_assigned_partition() -> None:
    #   p0: 5  30 -> wm 25     p1: 17 -> wm 12     p2: (no data yet), then 40 -> wm 35
    #   W = 12: [0, 10) is closed, [10, 20) is not
    engine = Engine(spec(), memory_store_factory, clock=Clock())
    engine.assign([0, 1, 2])
    engine.process(recs(0, 5, 30) + recs(1, 17))
    assert engine.global_watermark_ms is None  # p2 holds W back
    assert engine.emit().closed == ()
    engine.process(recs(2, 40))
    assert engine.global_watermark_ms == 12
    emission = engine.emit()
    assert emission.global_watermark_ms == 12
    assert emission.closed == ((("a",), 0, 10),)


def test_monotonic_watermark_and_window_closed_for_a_late_joiner() -> None:
    # W reaches 25; partition 3 joins with data at 12: its window [10, 20) is closed.
    engine = Engine(spec(), memory_store_factory, clock=Clock())
    engine.process(recs(0, 30))
    assert engine.global_watermark_ms == 25
    engine.assign([3])
    assert engine.global_watermark_ms == 25  # never backwards
    result = engine.process(recs(3, 12, 27))
    assert [(r.event_ts_ms, r.watermark_ms, r.reason) for r in result.late] == [
        (12, 25, LATE_WINDOW_CLOSED)
    ]
    assert result.aggregated == 1
    assert engine.partition_max_event_ts_ms(3) == 27  # late records do not count


def test_idle_partition_is_left_out_after_the_idle_timeout() -> None:
    #   wall 0:  p0 ts 10, p1 ts 10          W = 5
    #   wall 50: p0 ts 100                   W = 5 (p1 active until wall 60)
    #   wall 70: p0 ts 110                   p1 idle -> W = 105
    #   wall 80: p1 ts 50 -> window [50, 60) closed -> late ("window closed")
    clock = Clock()
    engine = Engine(spec(idle_ms=60), memory_store_factory, clock=clock)
    engine.process(recs(0, 10) + recs(1, 10))
    assert engine.global_watermark_ms == 5
    clock.now = 50
    engine.process(recs(0, 100, first_offset=1))
    assert engine.global_watermark_ms == 5
    clock.now = 70
    engine.process(recs(0, 110, first_offset=2))
    assert engine.global_watermark_ms == 105
    clock.now = 80
    result = engine.process(recs(1, 50, 106, first_offset=1))
    assert [(r.event_ts_ms, r.reason) for r in result.late] == [(50, LATE_WINDOW_CLOSED)]
    assert result.aggregated == 1  # 106 is in the open window [100, 110)
    assert engine.global_watermark_ms == 105  # p1 is back (wm 101) but W stays


def test_idle_timeout_is_strictly_more_than_the_timeout() -> None:
    clock = Clock()
    engine = Engine(spec(idle_ms=60), memory_store_factory, clock=clock)
    engine.process(recs(0, 10) + recs(1, 10))
    clock.now = 60
    engine.process(recs(0, 100, first_offset=1))
    assert engine.global_watermark_ms == 5  # idle for exactly 60: still counted
    clock.now = 61
    assert engine.emit().global_watermark_ms == 95


def test_remote_partitions_count_in_the_global_watermark() -> None:
    engine = Engine(spec(), memory_store_factory, clock=Clock())
    engine.process(recs(0, 100))
    engine.set_remote_watermark(7, None)  # another worker's partition, no data yet
    assert engine.global_watermark_ms == 95  # W had advanced: it does not go back
    engine2 = Engine(spec(), memory_store_factory, clock=Clock())
    engine2.set_remote_watermark(7, 40)
    engine2.process(recs(0, 100))
    assert engine2.global_watermark_ms == 40
    assert engine2.partition_watermark_ms(7) == 40
    engine2.set_remote_watermark(7, 60, idle=True)
    engine2.process([])
    assert engine2.global_watermark_ms == 95
    engine2.set_remote_watermark(0, 10)  # local: ignored
    assert engine2.partition_watermark_ms(0) == 95


def test_advance_global_watermark_closes_windows_for_later_records() -> None:
    # size 10, slide 5. W raised to 15 (say, the last W the runtime committed):
    #   p0 t=12 is in [5, 15) (closed) and [10, 20) (open): it updates [10, 20) only;
    #   p1 t=3 is in [-5, 5) and [0, 10), both closed: late, "window closed".
    sp = spec(delay=0, window=WindowSpec(10, 5))
    engine = Engine(sp, memory_store_factory, clock=Clock())
    engine.advance_global_watermark(15)
    result = engine.process(recs(0, 12) + recs(1, 3))
    assert [(r.event_ts_ms, r.reason) for r in result.late] == [(3, LATE_WINDOW_CLOSED)]
    rows = engine.emit().rows
    assert [(r.window_start_ms, r.values) for r in rows] == [(10, (1,))]


def test_a_window_ending_exactly_at_w_is_closed() -> None:
    #   W = 20:  [10, 20) closed (end 20 <= 20), [20, 30) open
    #   p1: t=19 -> late ("window closed");  t=20 -> aggregated
    engine = Engine(spec(), memory_store_factory, clock=Clock())
    engine.advance_global_watermark(20)
    result = engine.process(recs(1, 19, 20))
    assert [(r.event_ts_ms, r.watermark_ms, r.reason) for r in result.late] == [
        (19, 20, LATE_WINDOW_CLOSED)
    ]
    assert result.aggregated == 1


def test_without_a_watermark_nothing_is_late_and_windows_never_close() -> None:
    engine = Engine(spec(delay=None), memory_store_factory, clock=Clock())
    result = engine.process(recs(0, 1000, 1, -50))
    assert result.late == ()
    emission = engine.emit()
    assert emission.global_watermark_ms is None
    assert emission.closed == ()
    assert engine.partition_watermark_ms(0) is None
    assert engine.partition_max_event_ts_ms(0) == 1000


def test_partition_progress_reports_offsets_and_watermarks() -> None:
    engine = Engine(spec(), memory_store_factory, clock=Clock())
    batch = recs(0, 10, 20, first_offset=40) + recs(1, 7, first_offset=3)
    batch += recs(0, 2, first_offset=42)
    result = engine.process(batch)
    p0 = result.per_partition[0]
    assert (p0.records, p0.aggregated, p0.late, p0.bad) == (3, 2, 1, 0)
    assert (p0.first_offset, p0.next_offset) == (40, 43)
    assert (p0.max_event_ts_ms, p0.watermark_ms) == (20, 15)
    p1 = result.per_partition[1]
    assert (p1.records, p1.first_offset, p1.next_offset, p1.watermark_ms) == (1, 3, 4, 2)
    assert engine.partition_next_offset(0) == 43


def test_min_event_time_is_the_batch_own_over_aggregated_and_late_records() -> None:
    # delay 5.  batch 1, p0: 30  40  12(late)  bad   p1: 25  8   (segments interleave)
    #           batch 2, p0: 41  39                   p1: -  (no records: no progress)
    engine = Engine(spec(), memory_store_factory, clock=Clock())
    first = recs(0, 30, 40) + recs(1, 25) + recs(0, 12, first_offset=2)
    first += [(0, 3, {"ts": "never", "k": "a"}), *recs(1, 8, first_offset=1)]
    result = engine.process(first)
    assert result.per_partition[0].late == 1
    assert result.per_partition[0].min_event_ts_ms == 12  # the late record counts
    assert result.per_partition[1].min_event_ts_ms == 8
    second = engine.process(recs(0, 41, 39, first_offset=4))
    assert second.per_partition[0].min_event_ts_ms == 39  # not the earlier batch's 12
    assert set(second.per_partition) == {0}


def test_without_an_event_time_column_there_is_no_min() -> None:
    no_time = QuerySpec(("k",), (AggSpec("count", None, "count"),), "complete")
    engine = Engine(no_time, memory_store_factory, clock=Clock())
    result = engine.process([(0, 0, {"k": "a"})])
    assert result.per_partition[0].min_event_ts_ms is None

"""Window assignment, at the edges. Timelines are event time in ms.

Windows are half-open [start, end) and aligned to the epoch (t = 0), also before it.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamproc.engine import (
    AggSpec,
    Engine,
    QuerySpec,
    WindowSpec,
    open_window_starts,
    window_start,
    window_starts,
)
from streamproc.state import memory_store_factory

DAY_MS = 86_400_000


def spec(size: int, slide: int | None = None, delay: int | None = 0) -> QuerySpec:
    return QuerySpec(
        group_by=("k",),
        aggregations=(AggSpec("count", None, "count"), AggSpec("v_sum", "v", "sum")),
        output_mode="update",
        event_time_column="ts",
        delay_ms=delay,
        window=WindowSpec(size, slide or size),
    )


def windows_of(sp: QuerySpec, *times: int) -> dict[tuple[int | None, int | None], Any]:
    """Feed one record per time (partition 0) and return {(start, end): count}."""
    engine = Engine(sp, memory_store_factory, clock=lambda: 0)
    engine.process([(0, i, {"ts": t, "k": "a", "v": 1}) for i, t in enumerate(times)])
    rows = engine.emit().rows
    return {(r.window_start_ms, r.window_end_ms): r.values[0] for r in rows}


def test_record_exactly_at_a_window_start_belongs_to_that_window() -> None:
    #   [0, 10)      [10, 20)
    #   |            |
    #   t=0          t=10
    assert windows_of(spec(10, delay=None), 0, 10) == {(0, 10): 1, (10, 20): 1}


def test_record_just_before_a_window_end_stays_in_it() -> None:
    #   [0, 10)
    #   |        t=9 -> [0, 10);  t=10 is the next window's start
    assert windows_of(spec(10, delay=None), 9) == {(0, 10): 1}


def test_pre_1970_times_floor_towards_the_past() -> None:
    #   [-20, -10)  [-10, 0)   [0, 10)
    #       t=-11 ^    t=-1 ^   ^ t=0
    got = windows_of(spec(10, delay=None), -11, -10, -1, 0)
    assert got == {(-20, -10): 1, (-10, 0): 2, (0, 10): 1}


def test_slide_equal_to_size_is_tumbling() -> None:
    sp = spec(10, slide=10, delay=None)
    assert sp.window is not None and sp.window.tumbling
    assert windows_of(sp, 5, 15) == {(0, 10): 1, (10, 20): 1}


def test_sliding_window_where_slide_divides_size() -> None:
    #   size 10, slide 5:  [-5, 5) [0, 10) [5, 15)
    #   t=7 is in [0, 10) and [5, 15)
    assert windows_of(spec(10, slide=5, delay=None), 7) == {(0, 10): 1, (5, 15): 1}


def test_sliding_window_where_slide_does_not_divide_size() -> None:
    #   size 10, slide 4:  [0, 10) [4, 14) [8, 18)
    #   t=9 -> all three;  t=10 -> [4, 14) [8, 18)  (two: 10 is [0, 10)'s end)
    got = windows_of(spec(10, slide=4, delay=None), 9, 10)
    assert got == {(0, 10): 1, (4, 14): 2, (8, 18): 2}


def test_one_day_window_starts_at_utc_midnight() -> None:
    # 2024-05-01T23:59:59.999Z and 2024-05-02T00:00:00Z fall in different days.
    got = windows_of(spec(DAY_MS, delay=None), "2024-05-01T23:59:59.999Z", "2024-05-02")  # type: ignore[arg-type]
    start = 1_714_521_600_000  # 2024-05-01T00:00:00Z
    assert got == {(start, start + DAY_MS): 1, (start + DAY_MS, start + 2 * DAY_MS): 1}


def test_window_start_function_matches_the_timeline() -> None:
    assert [window_start(t, 10) for t in (-11, -10, -1, 0, 9, 10)] == [-20, -10, -10, 0, 0, 10]
    assert window_starts(9, WindowSpec(10, 4)) == [8, 4, 0]
    assert window_starts(10, WindowSpec(10, 4)) == [8, 4]


def test_open_window_starts_leaves_out_closed_windows() -> None:
    #   size 10, slide 5, t = 12:  [5, 15) [10, 20);  W = 15 closes [5, 15)
    assert open_window_starts(12, WindowSpec(10, 5), None) == [10, 5]
    assert open_window_starts(12, WindowSpec(10, 5), 15) == [10]
    assert open_window_starts(12, WindowSpec(10, 5), 20) == []


@given(
    st.integers(-(10**13), 10**13),
    st.integers(1, 50).flatmap(lambda size: st.tuples(st.just(size), st.integers(1, size))),
)
def test_window_starts_equal_brute_force(t: int, shape: tuple[int, int]) -> None:
    size, slide = shape
    k0 = t // slide
    brute = [k * slide for k in range(k0 - size - 1, k0 + 2) if k * slide <= t < k * slide + size]
    assert sorted(window_starts(t, WindowSpec(size, slide))) == brute


@pytest.mark.parametrize(("size", "slide"), [(0, 0), (10, 0), (10, 11), (-5, -5)])
def test_invalid_window_shapes_are_rejected(size: int, slide: int) -> None:
    with pytest.raises(ValueError, match="window"):
        WindowSpec(size, slide)

"""What `emit()` hands the runtime, per output mode. Timelines are event time in ms.

Common setup: tumbling 10 ms windows, delay 0, count(*) + v:sum, one key unless said.
"""

from __future__ import annotations

from typing import Any

import pytest

from streamproc.engine import (
    AggSpec,
    Engine,
    PartialRow,
    QuerySpec,
    ResultRow,
    WindowSpec,
    finalize,
    merge_states,
)
from streamproc.state import memory_store_factory

AGGS = (AggSpec("count", None, "count"), AggSpec("v_sum", "v", "sum"))
TEN = WindowSpec(10, 10)


def spec(mode: Any, window: WindowSpec | None = TEN, **kw: Any) -> QuerySpec:
    kw.setdefault("delay_ms", 0)
    return QuerySpec(("k",), AGGS, mode, event_time_column="ts", window=window, **kw)


def rec(p: int, off: int, ts: int, k: Any = "a", v: Any = 1) -> tuple[int, int, dict[str, Any]]:
    return (p, off, {"ts": ts, "k": k, "v": v})


def rows(emission: Any) -> list[tuple[Any, ...]]:
    return [(r.key, r.window_start_ms, r.window_end_ms, r.values) for r in emission.rows]


def test_append_emits_each_window_once_when_it_closes_then_evicts_it() -> None:
    #   p0:  1   5   12          -> W = 12: [0, 10) closes
    #   p0:              25      -> W = 25: [10, 20) closes
    engine = Engine(spec("append"), memory_store_factory, clock=lambda: 0)
    engine.process([rec(0, 0, 1), rec(0, 1, 5, v=2), rec(0, 2, 12)])
    first = engine.emit()
    assert rows(first) == [(("a",), 0, 10, (2, 3))]
    assert first.closed == ((("a",), 0, 10),)
    assert first.evicted == {0: ()}  # closed windows' partials are dropped by W, not by key
    # Partials: every changed (key, window) of p0, as absolute (count, sum) states.
    assert [(r.window_start_ms, r.state) for r in first.partials[0]] == [(0, (2, 3)), (10, (1, 1))]
    assert rows(engine.emit()) == []  # nothing new closed
    engine.process([rec(0, 3, 25)])
    second = engine.emit()
    assert rows(second) == [(("a",), 10, 20, (1, 1))]
    assert second.evicted == {0: ()}


def test_a_window_closes_when_the_watermark_reaches_its_end_exactly() -> None:
    #   single partition, delay 0:
    #   t:   3        9  -> W = 9:  [0, 10) still open (end 10 > 9)
    #   t:           10  -> W = 10: [0, 10) closes (end 10 <= 10)
    engine = Engine(spec("append"), memory_store_factory, clock=lambda: 0)
    engine.process([rec(0, 0, 3), rec(0, 1, 9)])
    assert engine.emit().rows == ()
    engine.process([rec(0, 2, 10)])
    emission = engine.emit()
    assert emission.global_watermark_ms == 10
    assert rows(emission) == [(("a",), 0, 10, (2, 2))]


def test_update_emits_changed_rows_and_evicts_closed_windows_after() -> None:
    engine = Engine(spec("update"), memory_store_factory, clock=lambda: 0)
    engine.process([rec(0, 0, 1), rec(0, 1, 12)])
    first = engine.emit()  # W = 12
    assert rows(first) == [(("a",), 0, 10, (1, 1)), (("a",), 10, 20, (1, 1))]
    assert first.evicted == {0: ()}  # closed windows' partials are dropped by W, not by key
    engine.process([rec(0, 2, 13, k="b")])
    second = engine.emit()
    assert rows(second) == [(("b",), 10, 20, (1, 1))]  # ("a", [10, 20)) did not change
    assert second.evicted == {0: ()}
    assert engine.emit().rows == ()


def test_complete_emits_everything_and_never_evicts() -> None:
    engine = Engine(spec("complete"), memory_store_factory, clock=lambda: 0)
    engine.process([rec(0, 0, 1), rec(0, 1, 12)])
    first = engine.emit()
    assert first.closed == ((("a",), 0, 10),)
    assert first.evicted == {0: ()}
    engine.process([rec(0, 2, 14, v=5)])
    second = engine.emit()
    assert rows(second) == [(("a",), 0, 10, (1, 1)), (("a",), 10, 20, (2, 6))]
    assert second.closed == ()  # [0, 10) closed before: reported once


def test_rows_merge_all_local_partitions_but_partials_stay_per_partition() -> None:
    # key "a" window [0, 10): p0 has 2 records, p1 has 1; only p1 changes in batch 2.
    engine = Engine(spec("update", delay_ms=None), memory_store_factory, clock=lambda: 0)
    engine.process([rec(0, 0, 1), rec(0, 1, 2, v=10), rec(1, 0, 3, v=100)])
    first = engine.emit()
    assert rows(first) == [(("a",), 0, 10, (3, 111))]
    assert {p: [r.state[:2] for r in rs] for p, rs in first.partials.items()} == {
        0: [(2, 11)],
        1: [(1, 100)],
    }
    engine.process([rec(1, 1, 4, v=1000)])
    second = engine.emit()
    assert rows(second) == [(("a",), 0, 10, (4, 1111))]
    assert second.partials[0] == ()
    assert [r.state[:2] for r in second.partials[1]] == [(2, 1100)]
    merged = merge_states(engine.spec, [first.partials[0][0].state, second.partials[1][0].state])
    assert finalize(engine.spec, merged) == (4, 1111)


def test_non_windowed_rows_have_no_window() -> None:
    sp = spec("update", window=None, delay_ms=None)
    engine = Engine(sp, memory_store_factory, clock=lambda: 0)
    engine.process([rec(0, 0, 1), rec(0, 1, 99, v=4), rec(0, 2, -7, k=None)])
    assert rows(engine.emit()) == [(("a",), None, None, (2, 5)), ((None,), None, None, (1, 1))]


def test_state_timeout_in_event_time_evicts_keys_idle_against_the_watermark() -> None:
    # timeout 10, delay 0.  "a" last seen at 5, "b" at 20: W = 20 -> "a" (5 + 10 <= 20) goes.
    sp = spec("update", window=None, state_timeout_ms=10)
    engine = Engine(sp, memory_store_factory, clock=lambda: 0)
    engine.process([rec(0, 0, 5), rec(0, 1, 20, k="b")])
    first = engine.emit()
    assert {r.key for r in first.rows} == {("a",), ("b",)}
    assert first.evicted == {0: ((("a",), None, None),)}
    engine.process([rec(0, 2, 21, v=7)])  # "a" starts over
    assert rows(engine.emit()) == [(("a",), None, None, (1, 7))]


def test_state_timeout_without_watermark_uses_the_wall_clock() -> None:
    wall = [1_000]
    sp = spec("complete", window=None, delay_ms=None, state_timeout_ms=500)
    engine = Engine(sp, memory_store_factory, clock=lambda: wall[0])
    engine.process([rec(0, 0, 1)])
    wall[0] = 1_400
    engine.process([rec(0, 1, 2, k="b")])
    assert {r.key for r in engine.emit().rows} == {("a",), ("b",)}
    wall[0] = 1_500  # "a" idle for 500 ms of wall time
    emission = engine.emit()
    assert emission.evicted == {0: ((("a",), None, None),)}
    assert {r.key for r in emission.rows} == {("b",)}


def test_empty_batches_and_emits_are_harmless() -> None:
    engine = Engine(spec("append"), memory_store_factory, clock=lambda: 0)
    result = engine.process([])
    assert (result.records, result.aggregated, result.late, result.bad) == (0, 0, (), ())
    assert result.per_partition == {}
    emission = engine.emit()
    assert emission.rows == () and emission.partials == {} and emission.closed == ()


def test_a_thousand_partitions() -> None:
    engine = Engine(spec("append"), memory_store_factory, clock=lambda: 0)
    engine.assign(range(1000))
    engine.process([rec(p, 0, p % 10) for p in range(1000)])
    assert engine.global_watermark_ms == 0
    engine.process([rec(p, 1, 10 + p % 7) for p in range(1000)])
    assert engine.global_watermark_ms == 10
    emission = engine.emit()
    assert rows(emission) == [(("a",), 0, 10, (1000, 1000))]
    # Each partition's partial of the closed window comes once, for the runtime
    # to merge; the window is dropped by W, no key is listed in evicted.
    closing = [r for v in emission.partials.values() for r in v if r.window_start_ms == 0]
    assert len(closing) == 1000
    assert emission.closed == ((("a",), 0, 10),)
    assert len(emission.partials) == 1000


def test_cache_budget_only_changes_where_state_is_read_from() -> None:
    def run(max_cached: int) -> list[Any]:
        engine = Engine(
            spec("update", delay_ms=None),
            memory_store_factory,
            clock=lambda: 0,
            max_cached_entries=max_cached,
        )
        out = []
        for i in range(6):
            batch = range(i * 5, i * 5 + 5)
            engine.process([rec(j % 2, j, j * 3, k=f"k{j % 3}", v=j) for j in batch])
            out += rows(engine.emit())
        return out

    assert run(0) == run(1_000_000)


def test_restore_rejects_partials_that_do_not_fit_the_query() -> None:
    engine = Engine(spec("update"), memory_store_factory, clock=lambda: 0)
    good = PartialRow(("a",), 10, 20, (1, 1))
    with pytest.raises(ValueError, match="slots"):
        engine.restore(0, 15, [PartialRow(("a",), 10, 20, (1,))])
    with pytest.raises(ValueError, match="window boundary"):
        engine.restore(0, 15, [PartialRow(("a",), 11, 21, good.state)])
    with pytest.raises(ValueError, match="values"):
        engine.restore(0, 15, [PartialRow(("a", "b"), 10, 20, good.state)])
    engine.restore(0, 15, [good])
    assert rows(engine.emit()) == []  # restored state is committed state: nothing changed
    engine.process([rec(0, 0, 16)])
    assert engine.emit().rows == (ResultRow(("a",), 10, 20, (2, 2)),)


def test_merge_states_of_nothing_is_the_empty_state() -> None:
    sp = spec("update")
    assert finalize(sp, merge_states(sp, [])) == (0, None)
    with pytest.raises(ValueError, match="slots"):
        merge_states(sp, [(1, 2, 3)])

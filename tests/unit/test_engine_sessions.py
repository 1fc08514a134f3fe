"""Session windows, case by case, with timelines (event-time ms; gap 5 unless said).

`test_session_properties.py` checks the engine against the model on random streams;
these pin the cases the issue names, one at a time, so that a failure reads plainly.
"""

from __future__ import annotations

from typing import Any

import pytest

from streamproc.engine import (
    AggSpec,
    Engine,
    QuerySpec,
    SessionEngine,
    SessionSpec,
    WindowSpec,
    finalize,
    merge_sessions,
)
from streamproc.state import memory_store_factory

AGGS = (
    AggSpec("n", None, "count"),
    AggSpec("total", "v", "sum"),
    AggSpec("first_v", "v", "first"),
    AggSpec("last_v", "v", "last"),
)


def spec(mode: str = "update", gap: int = 5, delay: int | None = 0) -> QuerySpec:
    return QuerySpec(
        group_by=("k",),
        aggregations=AGGS,
        output_mode=mode,  # type: ignore[arg-type]
        event_time_column="t",
        event_time_format="epoch_millis",
        delay_ms=delay,
        session=SessionSpec(gap),
    )


class Feed:
    """A SessionEngine over partitions 0..n-1, fed (partition, t, v) of key "a"."""

    def __init__(self, query: QuerySpec, partitions: int = 2) -> None:
        self.engine = SessionEngine(query, clock=lambda: 0)
        self.engine.assign(range(partitions))
        self.offsets = dict.fromkeys(range(partitions), 0)

    def process(self, *records: tuple[int, int, Any]) -> list[tuple[int, str]]:
        batch = []
        for p, t, v in records:
            batch.append((p, self.offsets[p], {"k": "a", "t": t, "v": v}))
            self.offsets[p] += 1
        return [(r.event_ts_ms, r.reason) for r in self.engine.process(batch).late]

    def emit(self) -> tuple[list[tuple[int, int, tuple[Any, ...]]], list[tuple[int, int]]]:
        """(rows as (start, end, values), deleted rows as (start, end))."""
        em = self.engine.emit()
        rows = [(r.window_start_ms, r.window_end_ms, r.values) for r in em.rows]
        return rows, [(s, e) for _, s, e in em.deleted_rows]  # type: ignore[misc]


def test_records_exactly_a_gap_apart_are_two_sessions() -> None:
    #   0  3        10 12     17          (one partition)
    #   [0 .. 8)    [10 ..17) [17 .. 22)  12 and 17 are 5 apart
    f = Feed(spec(), partitions=1)
    f.process((0, 0, 1), (0, 3, 2), (0, 10, 3), (0, 12, 4), (0, 17, 5))
    rows, deleted = f.emit()
    assert rows == [(0, 8, (2, 3, 1, 2)), (10, 17, (2, 7, 3, 4)), (17, 22, (1, 5, 5, 5))]
    assert deleted == []


def test_a_record_bridging_two_sessions_merges_them_and_update_deletes_both_rows() -> None:
    #   gap 3:   0 . . . . . . 7          [0, 3) and [7, 10)
    f = Feed(spec(gap=3, delay=None), partitions=1)
    f.process((0, 0, 1), (0, 7, 2))
    assert f.emit() == ([(0, 3, (1, 1, 1, 1)), (7, 10, (1, 2, 2, 2))], [])
    #   0  . 4 . 7           4 is < 3 from neither 0 nor 7: a third session
    f.process((0, 4, 3))
    assert f.emit() == ([(4, 7, (1, 3, 3, 3))], [])
    #   0 2 4 6 7            2 bridges [0, 3) and [4, 7); 6 bridges that and [7, 10)
    f.process((0, 2, 4), (0, 6, 5))
    rows, deleted = f.emit()
    assert rows == [(0, 10, (5, 15, 1, 2))]
    assert deleted == [(0, 3), (4, 7), (7, 10)]


def test_partial_sessions_of_two_partitions_merge_into_one_row() -> None:
    #   p0:  0  2            -> partial [0, 7)
    #   p1:        6  9      -> partial [6, 14); overlapping: one session [0, 14)
    f = Feed(spec())
    f.process((0, 0, 1), (0, 2, 2), (1, 6, 3), (1, 9, 4))
    rows, _ = f.emit()
    assert rows == [(0, 14, (4, 10, 1, 4))]
    partials = {p: f.engine.partials_of(p) for p in (0, 1)}
    assert [(r.window_start_ms, r.window_end_ms) for r in partials[0]] == [(0, 7)]
    assert [(r.window_start_ms, r.window_end_ms) for r in partials[1]] == [(6, 14)]


def test_touching_partials_of_two_partitions_stay_two_sessions() -> None:
    #   p0: 0 -> [0, 5)   p1: 5 -> [5, 10)   touching, not overlapping
    f = Feed(spec())
    f.process((0, 0, 1), (1, 5, 2))
    rows, _ = f.emit()
    assert rows == [(0, 5, (1, 1, 1, 1)), (5, 10, (1, 2, 2, 2))]


def test_closing_waits_for_w_not_for_the_partition_that_holds_the_session() -> None:
    #   p0:  0  2 ........ 30        wm(p0) = 30: p0's partial [0, 7) is behind it
    #   p1:  1 .. 6                  wm(p1) = 6 = W: p1's [1, 11) keeps [0, 11) open
    #   p1:            20            W = 20: closed, written once (append)
    f = Feed(spec("append"))
    f.process((0, 0, 1), (0, 2, 2), (0, 30, 9), (1, 1, 3))
    assert f.emit() == ([], [])
    f.process((1, 6, 4))
    assert f.engine.global_watermark_ms == 6
    assert f.emit() == ([], [])
    f.process((1, 20, 5))
    rows, deleted = f.emit()
    assert rows == [(0, 11, (4, 10, 1, 4))]
    assert deleted == []
    assert f.emit() == ([], [])


def test_a_record_that_would_extend_or_start_a_closed_session_is_late() -> None:
    #   p0: 10 14 ...... 40          session [10, 19) closes at W = 20 (raised from
    #   p1 (new, behind W):          outside, as a restored committed W is)
    #        12 -> (a) 12 + 5 <= 20: its own session is closed
    #        17 -> (b) within the gap of [10, 19): it would extend it
    #        19 -> [19, 24): touches [10, 19) but does not overlap it: accepted
    f = Feed(spec("append"))
    f.process((0, 10, 1), (0, 14, 2), (0, 40, 3))
    f.engine.advance_global_watermark(20)
    rows, _ = f.emit()
    assert rows == [(10, 19, (2, 3, 1, 2))]
    late = f.process((1, 12, 4), (1, 17, 5), (1, 19, 6))
    assert late == [(12, "session closed"), (17, "session closed")]
    assert [(r.window_start_ms, r.window_end_ms) for r in f.engine.partials_of(1)] == [(19, 24)]


def test_first_and_last_go_by_event_time_across_partitions() -> None:
    #   p0: 3(v=a) 1(v=b)   p1: 2(v=c) 4(v=d)    one session [1, 9): first b, last d
    q = QuerySpec(
        ("k",),
        (AggSpec("f", "v", "first"), AggSpec("l", "v", "last")),
        "update",
        event_time_column="t",
        event_time_format="epoch_millis",
        session=SessionSpec(5),
    )
    e = SessionEngine(q, clock=lambda: 0)
    e.process([(0, 0, {"k": "a", "t": 3, "v": "a"}), (0, 1, {"k": "a", "t": 1, "v": "b"})])
    e.process([(1, 0, {"k": "a", "t": 2, "v": "c"}), (1, 1, {"k": "a", "t": 4, "v": "d"})])
    assert [r.values for r in e.emit().rows] == [("b", "d")]


def test_merge_sessions_of_state_rows_is_the_same_in_any_order() -> None:
    #   p0: 0 2 -> [0, 7)     p1: 6 9 -> [6, 14), 20 -> [20, 25)
    f = Feed(spec(delay=None))
    f.process((0, 0, 1), (0, 2, 2), (1, 6, 3), (1, 9, 4), (1, 20, 5))
    rows = [(p, row) for p in (0, 1) for row in f.engine.partials_of(p)]
    merged = merge_sessions(f.engine.spec, rows)
    assert merge_sessions(f.engine.spec, list(reversed(rows))) == merged
    assert [(m.start_ms, m.end_ms, m.partials) for m in merged] == [
        (0, 14, ((0, 0, 7), (1, 6, 14))),
        (20, 25, ((1, 20, 25),)),
    ]
    assert [finalize(f.engine.spec, m.state) for m in merged] == [(4, 10, 1, 4), (1, 5, 5, 5)]


def test_sessions_and_fixed_windows_do_not_mix() -> None:
    with pytest.raises(ValueError, match="a window or sessions, not both"):
        QuerySpec(
            ("k",), AGGS, "update", event_time_column="t", window=WindowSpec(5, 5),
            session=SessionSpec(5),
        )  # fmt: skip
    with pytest.raises(ValueError, match="session gap must be positive"):
        SessionSpec(0)
    with pytest.raises(ValueError, match="runs in SessionEngine"):
        Engine(spec(), memory_store_factory, clock=lambda: 0)
    with pytest.raises(ValueError, match="session-window queries only"):
        SessionEngine(QuerySpec(("k",), AGGS, "update"), clock=lambda: 0)

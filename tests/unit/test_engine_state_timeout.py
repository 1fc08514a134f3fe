"""Windowed stateTimeout in the engine: idle (key, window)s expire before W closes them.

The engine is driven trigger by trigger (one `process` and one `emit(expire_idle=True)`
per phase), and compared with the independent model run with the same trigger
boundaries (`tests/reference.expected_in_phases`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamproc.engine import (
    EXPIRED_STATE,
    LATE_STATE_EXPIRED,
    AggSpec,
    Emission,
    Engine,
    PartialRow,
    QuerySpec,
    WindowSpec,
)
from streamproc.state import memory_store_factory
from tests.reference import Query, assert_tables_equal, expected_in_phases

AGGS = (AggSpec("n", None, "count"), AggSpec("v_sum", "v", "sum"), AggSpec("v_last", "v", "last"))
Phase = Mapping[int, Sequence[Any]]


def ttl_spec(mode: str, size: int, slide: int, delay: int, timeout: int) -> QuerySpec:
    return QuerySpec(
        group_by=("k",),
        aggregations=AGGS,
        output_mode=mode,  # type: ignore[arg-type]
        event_time_column="ts",
        delay_ms=delay,
        window=WindowSpec(size, slide),
        state_timeout_ms=timeout,
    )


class Sink:
    """The result table as the runtime writes it: upserts, or (append) inserts once."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.table: dict[tuple[Any, ...], tuple[Any, ...]] = {}

    def write(self, emission: Emission) -> None:
        for row in emission.rows:
            at = (*row.key, row.window_start_ms, row.window_end_ms)
            assert self.mode != "append" or at not in self.table, f"row {at} written twice"
            self.table[at] = row.values


def drive(
    spec: QuerySpec, phases: Sequence[Phase], partitions: int
) -> tuple[Engine, Sink, dict[tuple[int, int], str], list[Emission]]:
    """Each phase as one batch and one trigger; returns the late reasons and emissions."""
    engine = Engine(spec, memory_store_factory, lambda: 0)
    engine.assign(range(partitions))
    sink = Sink(spec.output_mode)
    late: dict[tuple[int, int], str] = {}
    offsets = dict.fromkeys(range(partitions), 0)
    emissions = []
    for phase in phases:
        batch = []
        for p, records in phase.items():
            for record in records:
                batch.append((p, offsets[p], record))
                offsets[p] += 1
        result = engine.process(batch)
        assert result.records == result.aggregated + len(result.late) + len(result.bad)
        late |= {(r.partition, r.offset): r.reason for r in result.late}
        emission = engine.emit(expire_idle=True)
        sink.write(emission)
        emissions.append(emission)
    return engine, sink, late, emissions


def check_against_model(spec: QuerySpec, phases: Sequence[Phase], partitions: int) -> Engine:
    engine, sink, late, _ = drive(spec, phases, partitions)
    model = expected_in_phases(Query.of(spec), phases)
    assert late == model.late_reasons
    assert_tables_equal(sink.table, model.table)
    return engine


def rec(k: str, ts: int, v: int = 1) -> dict[str, Any]:
    return {"k": k, "ts": ts, "v": v}


# Tumbling [0, 100), delay 0, timeout 10. Partition 0:
#
#   trigger 1   a@1  b@5               W = 5
#   trigger 2   c@12                   W = 12: a idle since 1 (1 + 10 <= 12) expires
#   trigger 3   a@13 c@14              a's window expired: a@13 is late, "state expired"
#   trigger 4   z@200                  W = 200: [0, 100) closes (b, c; the tombstone goes)
TIMELINE = [
    {0: [rec("a", 1), rec("b", 5)]},
    {0: [rec("c", 12)]},
    {0: [rec("a", 13), rec("c", 14)]},
    {0: [rec("z", 200)]},
]


def test_append_writes_an_expired_window_at_once_and_later_records_are_late() -> None:
    spec = ttl_spec("append", 100, 100, 0, 10)
    _, sink, late, emissions = drive(spec, TIMELINE, 1)
    assert [e.expired for e in emissions] == [(), ((("a",), 0, 100),), (), ()]
    assert emissions[1].rows[0].key == ("a",) and emissions[1].rows[0].values == (1, 1, 1)
    # The expired window's partial is not handed on: the runtime replaces it by a tombstone.
    assert [r.key for r in emissions[1].partials[0]] == [("c",)]
    assert late == {(0, 3): LATE_STATE_EXPIRED}
    assert sink.table == {
        ("a", 0, 100): (1, 1, 1),
        ("b", 0, 100): (1, 1, 1),
        ("c", 0, 100): (2, 2, 1),
    }
    check_against_model(spec, TIMELINE, 1)


def test_update_keeps_the_row_of_an_expired_window_as_it_was() -> None:
    spec = ttl_spec("update", 100, 100, 0, 10)
    _, sink, late, emissions = drive(spec, TIMELINE, 1)
    assert emissions[1].expired == ((("a",), 0, 100),)
    assert late == {(0, 3): LATE_STATE_EXPIRED}
    assert sink.table[("a", 0, 100)] == (1, 1, 1)
    assert sink.table[("c", 0, 100)] == (2, 2, 1)
    check_against_model(spec, TIMELINE, 1)


def test_tombstones_go_when_the_watermark_passes_the_window_end() -> None:
    spec = ttl_spec("update", 100, 100, 0, 10)
    engine, *_ = drive(spec, TIMELINE[:3], 1)
    assert engine.tombstones == 1
    engine.process([(0, 5, rec("z", 200))])
    engine.emit(expire_idle=True)
    assert engine.tombstones == 0


def test_activity_is_merged_over_partitions() -> None:
    # a@1 in partition 0 is idle, but a@9 in partition 1 keeps (a, [0, 100)) alive at
    # W = 12 (9 + 10 > 12); at W = 19 both are idle and the window expires.
    spec = ttl_spec("append", 100, 100, 0, 10)
    phases = [
        {0: [rec("a", 1)], 1: [rec("a", 9)]},
        {0: [rec("x", 12)], 1: [rec("x", 12)]},
        {0: [rec("x", 19)], 1: [rec("x", 19)]},
        {0: [rec("a", 20)], 1: []},
    ]
    _, sink, late, emissions = drive(spec, phases, 2)
    assert [e.expired for e in emissions] == [(), (), ((("a",), 0, 100),), ()]
    assert sink.table == {("a", 0, 100): (2, 2, 1)}
    assert late == {(0, 3): LATE_STATE_EXPIRED}
    check_against_model(spec, phases, 2)


# Sliding size 30, slide 10, delay 0, timeout 5:
#
#   trigger 1   a@3 a@12   W = 12
#   trigger 2   x@27       W = 27: (a, [0, 30)) and (a, [10, 40)), idle since 12, expire
#                          ([-10, 20) closes instead)
#   trigger 3   a@28       in [0, 30), [10, 40) (expired) and [20, 50) (new): goes there
SLIDING = [
    {0: [rec("a", 3), rec("a", 12)]},
    {0: [rec("x", 27)]},
    {0: [rec("a", 28)]},
]


@pytest.mark.parametrize("mode", ["update", "append"])
def test_a_sliding_record_goes_into_its_live_windows_only(mode: str) -> None:
    spec = ttl_spec(mode, 30, 10, 0, 5)
    _, sink, late, emissions = drive(spec, SLIDING, 1)
    assert sorted(e[1] for e in emissions[1].expired) == [0, 10]
    assert late == {}  # [20, 50) was live: the record counts, as with closed windows
    if mode == "update":
        assert sink.table[("a", 20, 50)] == (1, 1, 1)
        assert sink.table[("a", 10, 40)] == (1, 1, 1)  # a@28 did not go in
    else:
        assert sink.table[("a", 10, 40)] == (1, 1, 1)  # written when it expired
    check_against_model(spec, SLIDING, 1)


def test_a_sliding_record_whose_open_windows_all_expired_is_late() -> None:
    # a@22 is in [0, 30), [10, 40), [20, 50); all three expire at W = 29 (idle since 22).
    spec = ttl_spec("update", 30, 10, 0, 5)
    phases = [{0: [rec("a", 22)]}, {0: [rec("x", 29)]}, {0: [rec("a", 29)]}]
    _, _, late, emissions = drive(spec, phases, 1)
    assert sorted(e[1] for e in emissions[1].expired) == [0, 10, 20]
    assert late == {(0, 2): LATE_STATE_EXPIRED}
    check_against_model(spec, phases, 1)


def test_a_restored_tombstone_makes_records_late_in_every_partition() -> None:
    spec = ttl_spec("update", 100, 100, 0, 10)
    engine = Engine(spec, memory_store_factory, lambda: 0)
    engine.assign([0, 1])
    engine.restore(0, 30, [PartialRow(("a",), 0, 100, EXPIRED_STATE)])
    engine.restore(1, 30, [PartialRow(("b",), 0, 100, (1, 2, 25, 1, 0, 2, 25))])
    engine.advance_global_watermark(30)
    result = engine.process([(1, 1, rec("a", 31)), (1, 2, rec("b", 32))])
    assert [(r.offset, r.reason, r.watermark_ms) for r in result.late] == [
        (1, LATE_STATE_EXPIRED, 30)
    ]
    assert result.aggregated == 1


def test_a_tombstone_for_a_query_without_windowed_timeout_is_refused() -> None:
    spec = QuerySpec(
        group_by=("k",),
        aggregations=AGGS,
        output_mode="update",
        event_time_column="ts",
        delay_ms=0,
        window=WindowSpec(100, 100),
    )
    engine = Engine(spec, memory_store_factory, lambda: 0)
    with pytest.raises(ValueError, match="is a tombstone; the query expires no window"):
        engine.restore(0, 30, [PartialRow(("a",), 0, 100, EXPIRED_STATE)])


@st.composite
def ttl_scenarios(draw: st.DrawFn) -> tuple[QuerySpec, list[Phase], int]:
    size = draw(st.sampled_from([10, 20]))
    slide = draw(st.sampled_from([size, size // 2, 3]))
    spec = ttl_spec(
        draw(st.sampled_from(["update", "append"])),
        size,
        slide,
        draw(st.sampled_from([0, 2, 5])),
        draw(st.integers(1, size + 2)),
    )
    partitions = draw(st.integers(1, 3))
    phases: list[Phase] = []
    # Event times drift forward phase by phase, so that W moves, keys go idle and
    # come back (a few records are late by the watermark, a few are bad).
    step = draw(st.sampled_from([2, 5, 9]))
    for i in range(draw(st.integers(1, 8))):
        phases.append(
            {
                p: [
                    {
                        "k": draw(st.sampled_from("abc")),
                        "ts": i * step + draw(st.integers(0, 12)),
                        "v": 1,
                    }
                    if draw(st.integers(0, 20))
                    else {"k": "a", "ts": "bad"}
                    for _ in range(draw(st.integers(0, 4)))
                ]
                for p in range(partitions)
            }
        )
    return spec, phases, partitions


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ttl_scenarios())
def test_random_streams_match_the_model_trigger_by_trigger(
    scenario: tuple[QuerySpec, list[Phase], int],
) -> None:
    spec, phases, partitions = scenario
    check_against_model(spec, phases, partitions)

"""Aggregate semantics, and merging partial states from any split."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from streamproc.engine import AggSpec, Engine, QuerySpec, WindowSpec, finalize, merge_states
from streamproc.state import memory_store_factory

ALL = (
    AggSpec("n", None, "count"),
    AggSpec("v_count", "v", "count"),
    AggSpec("v_sum", "v", "sum"),
    AggSpec("v_avg", "v", "avg"),
    AggSpec("v_min", "v", "min"),
    AggSpec("v_max", "v", "max"),
    AggSpec("v_first", "v", "first"),
    AggSpec("v_last", "v", "last"),
)
SPEC = QuerySpec(
    group_by=(),
    aggregations=ALL,
    output_mode="update",
    event_time_column="ts",
    window=WindowSpec(100, 100),
)


def values_of(records: list[tuple[int, int, dict[str, Any]]], spec: QuerySpec = SPEC) -> Any:
    engine = Engine(spec, memory_store_factory, clock=lambda: 0)
    engine.process(records)
    (row,) = engine.emit().rows
    return dict(zip([a.output for a in spec.aggregations], row.values, strict=True))


def test_nulls_and_missing_values_are_skipped_but_counted_by_star() -> None:
    got = values_of([(0, 0, {"ts": 1, "v": None}), (0, 1, {"ts": 2}), (0, 2, {"ts": 3, "v": 4})])
    assert got["n"] == 3 and got["v_count"] == 1
    assert (got["v_sum"], got["v_avg"], got["v_min"], got["v_max"]) == (4, 4.0, 4, 4)


def test_nothing_counted_gives_null() -> None:
    got = values_of([(0, 0, {"ts": 1, "v": None})])
    assert got == {
        "n": 1,
        "v_count": 0,
        "v_sum": None,
        "v_avg": None,
        "v_min": None,
        "v_max": None,
        "v_first": None,
        "v_last": None,
    }


def test_first_and_last_take_the_value_even_when_null() -> None:
    #   ts:  1 (v=null)   5 (v=7)   9 (missing)
    got = values_of([(0, 0, {"ts": 5, "v": 7}), (0, 1, {"ts": 1, "v": None}), (0, 2, {"ts": 9})])
    assert (got["v_first"], got["v_last"]) == (None, None)


def test_first_and_last_ties_go_to_lower_and_higher_partition_and_offset() -> None:
    #   ts 5 in p0 off 0 ("a"), p0 off 1 ("b"), p1 off 0 ("c"), p1 off 1 ("d")
    records = [
        (1, 0, {"ts": 5, "v": 30}),
        (0, 0, {"ts": 5, "v": 10}),
        (1, 1, {"ts": 5, "v": 40}),
        (0, 1, {"ts": 5, "v": 20}),
    ]
    got = values_of(records)
    assert (got["v_first"], got["v_last"]) == (10, 40)


def test_min_and_max_take_numbers_only_and_strings_are_bad_records() -> None:
    # The sink stores min/max as double precision: a string is a bad record.
    spec = QuerySpec((), (AggSpec("m", "v", "min"), AggSpec("x", "v", "max")), "update")
    mixed = [(0, i, {"v": v}) for i, v in enumerate([3, "b", 1.5, "a", 2])]
    engine = Engine(spec, memory_store_factory, clock=lambda: 0)
    result = engine.process(mixed)
    assert [(b.offset, b.reason) for b in result.bad] == [
        (1, "v: 'b' is not a number (needed by v:min)"),
        (3, "v: 'a' is not a number (needed by v:min)"),
    ]
    (row,) = engine.emit().rows
    assert row.values == (1.5, 3)


def test_int_sums_are_exact_and_avg_is_correctly_rounded() -> None:
    big = 2**62
    spec = QuerySpec((), (AggSpec("s", "v", "sum"), AggSpec("a", "v", "avg")), "update")
    got = values_of([(0, i, {"v": big + i}) for i in range(3)], spec)
    assert got["s"] == 3 * big + 3
    assert type(got["s"]) is int
    assert got["a"] == (3 * big + 3) / 3


def test_avg_of_floats_is_a_double_and_of_ints_too() -> None:
    spec = QuerySpec((), (AggSpec("a", "v", "avg"),), "update")
    assert values_of([(0, 0, {"v": 1}), (0, 1, {"v": 2})], spec) == {"a": 1.5}
    assert type(values_of([(0, 0, {"v": 2})], spec)["a"]) is float


def test_without_event_time_first_and_last_follow_partition_and_offset() -> None:
    spec = QuerySpec((), (AggSpec("f", "v", "first"), AggSpec("l", "v", "last")), "update")
    records = [(1, 0, {"v": "p1"}), (0, 5, {"v": "p0-5"}), (0, 6, {"v": "p0-6"})]
    assert values_of(records, spec) == {"f": "p0-5", "l": "p1"}


@st.composite
def recs(draw: st.DrawFn) -> list[tuple[int, int, dict[str, Any]]]:
    items = draw(
        st.lists(
            st.tuples(
                st.integers(0, 3),
                st.integers(0, 9),
                st.one_of(st.none(), st.integers(-50, 50), st.sampled_from(["x", "y", "z"])),
            ),
            max_size=30,
        )
    )
    offsets: dict[int, int] = {}
    out = []
    for p, ts, v in items:
        offsets[p] = offsets.get(p, -1) + 1
        out.append((p, offsets[p], {"ts": ts} if v is None else {"ts": ts, "v": v}))
    return out


MERGE_SPEC = QuerySpec(
    group_by=(),
    aggregations=(
        *(a for a in ALL if a.func not in ("sum", "avg", "min", "max")),
        AggSpec("i_sum", "i", "sum"),
        AggSpec("i_avg", "i", "avg"),
        AggSpec("i_min", "i", "min"),
        AggSpec("i_max", "i", "max"),
    ),
    output_mode="update",
    event_time_column="ts",
)


@settings(max_examples=150, deadline=None)
@given(recs(), st.lists(st.integers(0, 5), min_size=1))
def test_merging_partials_of_any_split_equals_one_pass(
    records: list[tuple[int, int, dict[str, Any]]], owners: list[int]
) -> None:
    # Split the partitions over several engines (workers), in any grouping; merge the
    # JSON-round-tripped partials of all of them; compare with one engine over all.
    for _, _, r in records:
        if isinstance(r.get("v"), int):
            r["i"] = r["v"]
    one = Engine(MERGE_SPEC, memory_store_factory, clock=lambda: 0)
    one.process(records)
    one_rows = one.emit().rows
    states: dict[int, Any] = {}
    for worker in set(owners):
        mine = [r for r in records if owners[r[0] % len(owners)] == worker]
        engine = Engine(MERGE_SPEC, memory_store_factory, clock=lambda: 0)
        engine.process(mine)
        for p, partials in engine.emit().partials.items():
            for partial in partials:
                states[p] = json.loads(json.dumps(partial.state))  # a JSONB round trip
    merged = merge_states(MERGE_SPEC, [states[p] for p in sorted(states)])
    if not records:
        assert one_rows == () and states == {}
        return
    assert finalize(MERGE_SPEC, merged) == one_rows[0].values

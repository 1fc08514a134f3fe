"""Property tests: the engine against the model (tests/reference.py), over random streams.

Random queries (every aggregate, tumbling / sliding / no window, every output mode,
with and without a watermark) and random streams (several partitions, disorder, late
records, nulls and missing fields, exact time ties, bad records) are fed to the engine in
a random interleaving of partitions, cut into random batches with emits at random points.
Whatever the schedule:

* every record is classified (aggregated / late / bad) exactly as the reference says,
  and every BatchResult balances;
* the sink table built from `Emission.rows` equals the reference table;
* the table the exactly-once runtime builds from `Emission.partials` alone (merge_states
  + finalize over partitions) equals it too;
* closing the RocksDB stores at any point and resuming with a new engine on the same
  directory, or restoring a new engine from the committed partials, gives the same table.

Values are small ints and multiples of 1/4 (sums of those are exact in any order), so
tables compare exactly; `test_float_sums_match_within_rounding` covers arbitrary floats.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamproc.engine import AggSpec, Engine, QuerySpec, WindowSpec, format_event_time
from streamproc.state import WindowStore, memory_store_factory, rocks_store_factory
from tests.reference import Outcome, Query, expected
from tests.unit.sink_simulators import PartialsRuntime, SinkTable

MISSING = object()
SETTINGS = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

POOL = (
    AggSpec("count", None, "count"),
    AggSpec("v_count", "v", "count"),
    AggSpec("v_sum", "v", "sum"),
    AggSpec("v_avg", "v", "avg"),
    AggSpec("v_min", "v", "min"),
    AggSpec("v_max", "v", "max"),
    AggSpec("v_first", "v", "first"),
    AggSpec("v_last", "v", "last"),
    AggSpec("s_min", "s", "min"),
    AggSpec("s_max", "s", "max"),
    AggSpec("s_first", "s", "first"),
    AggSpec("s_last", "s", "last"),
    AggSpec("s_count", "s", "count"),
)


@st.composite
def specs(draw: st.DrawFn, windowed: bool | None = None, append: bool = False) -> QuerySpec:
    """A random valid query (no idle or state timeout: those depend on wall time)."""
    kind = draw(st.sampled_from(["tumbling", "sliding", "none"]))
    if windowed is not None:
        kind = draw(st.sampled_from(["tumbling", "sliding"])) if windowed else "none"
    window = None
    if kind == "tumbling":
        size = draw(st.sampled_from([1, 5, 10]))
        window = WindowSpec(size, size)
    elif kind == "sliding":
        size = draw(st.sampled_from([6, 10]))
        window = WindowSpec(size, draw(st.integers(1, size)))
    has_time = window is not None or draw(st.booleans())
    delay = draw(st.sampled_from([None, 0, 2, 7])) if has_time else None
    modes = ["update", "complete"] + (["append"] if window and delay is not None else [])
    if append and window is not None:
        delay = draw(st.sampled_from([0, 2, 7]))
        modes = ["append"]
    aggs = draw(st.lists(st.sampled_from(POOL), min_size=1, max_size=6, unique=True))
    return QuerySpec(
        group_by=draw(st.sampled_from([("k",), ("k", "j"), ()])),
        aggregations=tuple(aggs),
        output_mode=draw(st.sampled_from(modes)),
        event_time_column="ts" if has_time else None,
        delay_ms=delay,
        window=window,
    )


def _record(draw: st.DrawFn, bad_rate: int) -> Any:
    if draw(st.integers(0, 60)) < bad_rate:
        return draw(
            st.sampled_from(
                [
                    "not an object",
                    [1, 2],
                    {"ts": "garbage", "k": "a", "v": 1},
                    {"k": "a", "v": 1},
                    {"ts": None, "k": "a"},
                    {"ts": 3, "k": [1], "v": 1},
                    {"ts": 3, "k": "a", "v": "abc"},
                    {"ts": 3, "k": "a", "v": True},
                    {"ts": 3, "k": "a", "v": float("nan")},
                    {"ts": 3, "k": float("inf")},
                    {"ts": 3, "s": {"x": 1}},
                    {"ts": True, "k": "a"},
                ]
            )
        )
    ts = draw(st.integers(-25, 45))
    fields = {
        "ts": format_event_time(ts) if draw(st.integers(0, 9)) == 0 else ts,
        "k": draw(st.sampled_from(["a", "b", None, 1, True, 1.0, -0.0, 0, MISSING])),
        "j": draw(st.sampled_from(["x", 2, MISSING])),
        "v": draw(
            st.one_of(
                st.sampled_from([None, MISSING]),
                st.integers(-5, 20),
                st.integers(-20, 80).map(lambda q: q / 4),
            )
        ),
        "s": draw(st.sampled_from(["p", "q", "pp", 3, 2.5, None, MISSING])),
    }
    return {name: value for name, value in fields.items() if value is not MISSING}


@dataclass
class Scenario:
    """A query, its streams, and a schedule: global order, batch cuts, emit points."""

    spec: QuerySpec
    streams: dict[int, list[Any]]
    order: list[tuple[int, int]]  # (partition, offset) in processing order
    batch_sizes: list[int]
    emits: list[bool]


@st.composite
def scenarios(
    draw: st.DrawFn, windowed: bool | None = None, bad_rate: int = 3, append: bool = False
) -> Scenario:
    """A random query, random streams, and a random way to feed them to the engine."""
    spec = draw(specs(windowed, append))
    n_parts = draw(st.integers(1, 3))
    streams = {
        p: [_record(draw, bad_rate) for _ in range(draw(st.integers(0, 18)))]
        for p in range(n_parts)
    }
    picks = draw(st.permutations([p for p, s in streams.items() for _ in s]))
    cursor = dict.fromkeys(streams, 0)
    order = []
    for p in picks:
        order.append((p, cursor[p]))
        cursor[p] += 1
    sizes = draw(st.lists(st.integers(0, 12), min_size=1, max_size=12))
    emits = draw(st.lists(st.booleans(), min_size=len(sizes), max_size=len(sizes)))
    return Scenario(spec, streams, order, sizes, emits)


def batches_of(sc: Scenario, order: Sequence[tuple[int, int]]) -> list[tuple[list[Any], bool]]:
    """Cut records into batches by the scenario's sizes (cycled), with emit flags."""
    out: list[tuple[list[Any], bool]] = []
    i = 0
    step = 0
    while i < len(order) or step < len(sc.batch_sizes):
        size = sc.batch_sizes[step % len(sc.batch_sizes)]
        if step >= len(sc.batch_sizes) and size == 0:
            size = 1
        chunk = [(p, o, sc.streams[p][o]) for p, o in order[i : i + size]]
        out.append((chunk, sc.emits[step % len(sc.emits)]))
        i += size
        step += 1
    return out


@dataclass
class Run:
    """What feeding a scenario to engines produced."""

    sink: SinkTable
    runtime: PartialsRuntime
    late: dict[tuple[int, int], str]
    bad: set[tuple[int, int]]
    #: What the ledger holds per partition after the last emit: (max event time, next offset).
    committed: dict[int, tuple[int | None, int | None]]


def _feed(engine: Engine, run: Run, batch: list[Any], emit: bool) -> None:
    result = engine.process(batch)
    assert result.records == len(batch)
    assert result.records == result.aggregated + len(result.late) + len(result.bad)
    for progress in result.per_partition.values():
        assert progress.records == progress.aggregated + progress.late + progress.bad
    assert sum(p.records for p in result.per_partition.values()) == result.records
    for late in result.late:
        run.late[(late.partition, late.offset)] = late.reason
    run.bad |= {(bad.partition, bad.offset) for bad in result.bad}
    if emit:
        _emit(engine, run)


def run_engine(
    sc: Scenario,
    factory: Callable[[int], WindowStore],
    crash_at: int | None = None,
    resume: Callable[[Run, Engine], Engine] | None = None,
    max_cached_entries: int = 1_000_000,
) -> Run:
    """Feed the scenario; optionally stop after `crash_at` (mod batches + 1) batches.

    `resume` gets the run so far and the old engine (not yet closed) and returns a new
    engine; the records it has not committed (offset >= its next offset) are replayed.
    """
    run = Run(SinkTable(sc.spec.output_mode), PartialsRuntime(sc.spec), {}, set(), {})
    engine = Engine(sc.spec, factory, clock=lambda: 0, max_cached_entries=max_cached_entries)
    engine.assign(sc.streams)
    plan = batches_of(sc, sc.order)
    if crash_at is not None:
        crash_at %= len(plan) + 1
    for i, (batch, emit) in enumerate(plan):
        if crash_at is not None and resume is not None and i == crash_at:
            engine = resume(run, engine)
            resume_from = {p: engine.partition_next_offset(p) or 0 for p in sc.streams}
            rest = [(p, o) for p, o in sc.order if o >= resume_from[p]]
            for batch2, emit2 in batches_of(sc, rest):
                _feed(engine, run, batch2, emit2)
            break
        _feed(engine, run, batch, emit)
    _emit(engine, run)
    engine.close()
    return run


def _emit(engine: Engine, run: Run) -> None:
    emission = engine.emit()
    run.sink.apply(emission)
    run.runtime.apply(emission)
    for p in engine.local_partitions:
        run.committed[p] = (engine.partition_max_event_ts_ms(p), engine.partition_next_offset(p))


def run_reference(spec: QuerySpec, streams: Mapping[int, Sequence[Any]]) -> Outcome:
    """What the model says of the scenario's query and streams (offset = index)."""
    return expected(Query.of(spec), streams)


def assert_matches(run: Run, ref: Outcome, exact: bool = True) -> None:
    """Classification and both sink tables equal the reference."""
    assert run.bad == ref.bad
    assert run.late == ref.late_reasons
    for table in (run.sink.rows, run.runtime.sink.rows):
        assert table.keys() == ref.typed_table.keys()
        for key, values in ref.typed_table.items():
            if exact:
                assert table[key] == values, key
            else:
                assert all(_close(a, b) for a, b in zip(table[key], values, strict=True)), key


def _close(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return a is not None and b is not None and math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-6)
    return bool(a == b)


# Properties -----------------------------------------------------------------------------


@SETTINGS
@given(scenarios())
def test_engine_matches_reference_for_any_schedule(sc: Scenario) -> None:
    run = run_engine(sc, memory_store_factory)
    assert_matches(run, run_reference(sc.spec, sc.streams))


@SETTINGS
@given(scenarios(windowed=True, bad_rate=1))
def test_windowed_engine_matches_reference(sc: Scenario) -> None:
    run = run_engine(sc, memory_store_factory)
    assert_matches(run, run_reference(sc.spec, sc.streams))


@SETTINGS
@given(scenarios(windowed=True, append=True))
def test_append_mode_matches_reference(sc: Scenario) -> None:
    run = run_engine(sc, memory_store_factory)
    assert_matches(run, run_reference(sc.spec, sc.streams))


@settings(SETTINGS, max_examples=50)
@given(scenarios(), st.sampled_from([0, 3, 1_000_000]))
def test_rocksdb_state_read_back_from_disk_gives_the_same_table(
    sc: Scenario, max_cached: int
) -> None:
    # A small cache budget makes the engine read state back from RocksDB between emits.
    with tempfile.TemporaryDirectory() as directory:
        run = run_engine(sc, rocks_store_factory(directory), max_cached_entries=max_cached)
    assert_matches(run, run_reference(sc.spec, sc.streams))


@settings(SETTINGS, max_examples=50)
@given(scenarios(), st.integers(0, 30))
def test_rocksdb_reopen_mid_stream_gives_the_same_table(sc: Scenario, crash_at: int) -> None:
    with tempfile.TemporaryDirectory() as directory:
        factory = rocks_store_factory(directory)

        def reopen(run: Run, old: Engine) -> Engine:
            old.close()  # a crash: whatever was not emitted is lost
            engine = Engine(sc.spec, factory, clock=lambda: 0)
            engine.assign(sc.streams)
            return engine

        run = run_engine(sc, factory, crash_at, reopen)
    assert_matches(run, run_reference(sc.spec, sc.streams))


@settings(SETTINGS, max_examples=100)
@given(scenarios(), st.integers(0, 30))
def test_restore_from_committed_partials_gives_the_same_table(sc: Scenario, crash_at: int) -> None:
    def restore(run: Run, old: Engine) -> Engine:
        old.close()  # a crash, or the partition moved to this worker
        engine = Engine(sc.spec, memory_store_factory, clock=lambda: 0)
        engine.assign(sc.streams)
        for p in sc.streams:
            max_ts, next_offset = run.committed.get(p, (None, None))
            engine.restore(p, max_ts, run.runtime.partials_of(p), next_offset=next_offset)
        return engine

    run = run_engine(sc, memory_store_factory, crash_at, restore)
    assert_matches(run, run_reference(sc.spec, sc.streams))


@settings(SETTINGS, max_examples=60)
@given(scenarios(bad_rate=0), st.randoms(use_true_random=False))
def test_result_does_not_depend_on_partition_interleaving(sc: Scenario, rnd: Any) -> None:
    first = run_engine(sc, memory_store_factory)
    shuffled = sorted(sc.order, key=lambda po: (rnd.random(), po))
    per_partition: dict[int, list[int]] = {}
    for p, o in shuffled:
        per_partition.setdefault(p, []).append(o)
    for offsets in per_partition.values():
        offsets.sort()
    cursor = dict.fromkeys(per_partition, 0)
    order = []
    for p, _ in shuffled:
        order.append((p, per_partition[p][cursor[p]]))
        cursor[p] += 1
    second = run_engine(Scenario(sc.spec, sc.streams, order, [7], [True]), memory_store_factory)
    assert first.sink.rows == second.sink.rows
    assert first.late == second.late


FLOAT_SPEC = QuerySpec(
    group_by=("k",),
    aggregations=(AggSpec("sum", "v", "sum"), AggSpec("avg", "v", "avg")),
    output_mode="update",
    event_time_column="ts",
    delay_ms=5,
    window=WindowSpec(10, 10),
)


@settings(SETTINGS, max_examples=60)
@given(
    st.dictionaries(
        st.integers(0, 3),
        st.lists(
            st.fixed_dictionaries(
                {
                    "ts": st.integers(0, 40),
                    "k": st.sampled_from(["a", "b"]),
                    "v": st.floats(-1e6, 1e6, allow_nan=False),
                }
            ),
            max_size=15,
        ),
        min_size=1,
    ),
    st.lists(st.integers(1, 9), min_size=1, max_size=5),
)
def test_float_sums_match_within_rounding(
    streams: Mapping[int, list[Any]], sizes: list[int]
) -> None:
    order = [(p, o) for p, s in streams.items() for o in range(len(s))]
    sc = Scenario(FLOAT_SPEC, dict(streams), order, sizes, [True])
    run = run_engine(sc, memory_store_factory)
    assert_matches(run, run_reference(FLOAT_SPEC, streams), exact=False)

"""Property tests: `SessionEngine` against the model (tests/reference_sessions.py).

Random session queries (every aggregate, every output mode, gaps of 1 to 5 ms, with
and without a watermark) and random streams (keys spread over up to three partitions,
disorder, late records, bad records, event times a small range apart so that records
exactly a gap apart, bridges and merges across partitions are common) are fed to the
engine in a random interleaving, cut into random batches with emits at random points
and, at random, W raised from outside before a batch (as a restored committed W does),
which makes records "session closed". Whatever the schedule:

* every record is classified (aggregated / late and why / bad) as the model says;
* the sink table built from the emissions (append: insert once; update and complete:
  the deletes, then the upserts) equals the model's table row by row, and after every
  emit no two rows of a key overlap;
* the state rows built from `SessionEmission.state_rows` alone equal the engine's
  partial sessions, and merging them over partitions (`merge_sessions`) gives rows the
  sink table holds (update, complete): what the sessions' commit plan relies on.

Values are small ints and multiples of 1/4 so that sums are exact in any order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamproc.engine import (
    AggSpec,
    PartialRow,
    QuerySpec,
    SessionEmission,
    SessionEngine,
    SessionSpec,
    finalize,
    merge_sessions,
)
from tests.reference import Query, TableKey, typed
from tests.reference_sessions import Phase, assert_no_overlap, expected_sessions
from tests.unit.sink_simulators import table_key

MISSING = object()
SETTINGS = settings(
    max_examples=200,
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
    AggSpec("s_first", "s", "first"),
    AggSpec("s_last", "s", "last"),
)

BAD = ["not an object", {"k": "a", "v": 1}, {"ts": "garbage", "k": "a"}, {"ts": 3, "v": "x"}]


@st.composite
def session_specs(draw: st.DrawFn, append: bool = False) -> QuerySpec:
    """A random valid session query (no idle timeout: it depends on wall time)."""
    delay = draw(st.sampled_from([None, 0, 2, 6]))
    modes = ["update", "complete"] + (["append"] if delay is not None else [])
    if append:
        delay = draw(st.sampled_from([0, 2, 6]))
        modes = ["append"]
    return QuerySpec(
        group_by=draw(st.sampled_from([("k",), ()])),
        aggregations=tuple(
            draw(st.lists(st.sampled_from(POOL), min_size=1, max_size=5, unique=True))
        ),
        output_mode=draw(st.sampled_from(modes)),
        event_time_column="ts",
        event_time_format="epoch_millis",
        delay_ms=delay,
        session=SessionSpec(draw(st.sampled_from([1, 2, 3, 5]))),
    )


def _record(draw: st.DrawFn) -> Any:
    if draw(st.integers(0, 40)) == 0:
        return draw(st.sampled_from(BAD))
    fields = {
        "ts": draw(st.integers(-10, 40)),
        "k": draw(st.sampled_from(["a", "b", 1, True, MISSING])),
        "v": draw(
            st.one_of(
                st.sampled_from([None, MISSING]),
                st.integers(-5, 20),
                st.integers(-20, 80).map(lambda q: q / 4),
            )
        ),
        "s": draw(st.sampled_from(["p", "q", 3, None, MISSING])),
    }
    return {name: value for name, value in fields.items() if value is not MISSING}


@dataclass
class SessionScenario:
    """A query, its partitions, and the phases (one `process` each) with emit flags."""

    spec: QuerySpec
    partitions: list[int]
    phases: list[Phase]
    emits: list[bool]


@st.composite
def session_scenarios(draw: st.DrawFn, append: bool = False) -> SessionScenario:
    spec = draw(session_specs(append))
    partitions = list(range(draw(st.integers(1, 3))))
    n = draw(st.integers(0, 40))
    order = [(draw(st.sampled_from(partitions)), _record(draw)) for _ in range(n)]
    phases: list[Phase] = []
    emits: list[bool] = []
    i = 0
    while i < len(order) or not phases:
        size = draw(st.integers(1, 10))
        floor = draw(st.one_of(st.none(), st.none(), st.integers(-10, 40)))
        phases.append((floor, order[i : i + size]))
        emits.append(draw(st.booleans()))
        i += size
    return SessionScenario(spec, partitions, phases, emits)


class Tables:
    """The sink table and each partition's state rows, built from emissions alone."""

    def __init__(self, spec: QuerySpec, partitions: Sequence[int]) -> None:
        self.spec = spec
        self.sink: dict[TableKey, tuple[Any, ...]] = {}
        #: partition -> (typed key, start) -> (key, end, state): a state row is
        #: (key, start, partition) in the checkpoint; its end is a column.
        self.state: dict[int, dict[tuple[Any, int], tuple[Any, int, tuple[Any, ...]]]] = {
            p: {} for p in partitions
        }

    def apply(self, em: SessionEmission) -> None:
        mode = self.spec.output_mode
        if mode == "append":
            assert not em.deleted_rows
        for key, start, end in em.deleted_rows:
            tkey = table_key(key, start, end)
            assert tkey in self.sink, f"delete of a row never written: {tkey}"
            del self.sink[tkey]
        for row in em.rows:
            tkey = table_key(row.key, row.window_start_ms, row.window_end_ms)
            if mode == "append":
                assert tkey not in self.sink, f"append emitted {tkey} twice"
            self.sink[tkey] = row.values
        if mode == "complete":
            emitted = {table_key(r.key, r.window_start_ms, r.window_end_ms) for r in em.rows}
            assert set(self.sink) == emitted, "complete: the deletes left stale rows"
        if mode != "append":
            assert_no_overlap(self.sink)
        for p, rows in self.state.items():
            upserts, deletes = em.state_rows(p)
            for key, start, _ in deletes:
                assert start is not None
                assert rows.pop((typed(key), start), None) is not None
            for row in upserts:
                assert row.window_start_ms is not None and row.window_end_ms is not None
                rows[(typed(row.key), row.window_start_ms)] = (
                    row.key,
                    row.window_end_ms,
                    row.state,
                )

    def check_state(self, engine: SessionEngine) -> None:
        """State rows from the changes == the engine's partials; merged, in the table."""
        for p, rows in self.state.items():
            mine = {
                table_key(r.key, r.window_start_ms, r.window_end_ms): r.state
                for r in engine.partials_of(p)
            }
            assert {
                table_key(key, s, e): st
                for (key, e, st), (_, s) in zip(rows.values(), rows, strict=True)
            } == mine
        if self.spec.output_mode == "append":
            return
        partials = [
            (p, PartialRow(key, start, end, state))
            for p, rows in self.state.items()
            for (_, start), (key, end, state) in rows.items()
        ]
        for merged in merge_sessions(self.spec, partials):
            tkey = table_key(merged.key, merged.start_ms, merged.end_ms)
            assert self.sink.get(tkey) == finalize(self.spec, merged.state), tkey


@dataclass
class Committed:
    """What a checkpoint holds after an emit: per partition (max event time, next
    offset), the closed sessions kept as fences, W, and the phase it follows."""

    positions: dict[int, tuple[int | None, int | None]]
    fences: tuple[Any, ...]
    watermark_ms: int | None
    after_phase: int


def _commit(engine: SessionEngine, tables: Tables, phase: int) -> Committed:
    tables.apply(engine.emit())
    tables.check_state(engine)
    positions = {
        p: (engine.partition_max_event_ts_ms(p), engine.partition_next_offset(p))
        for p in engine.local_partitions
    }
    return Committed(positions, engine.fences, engine.global_watermark_ms, phase)


def _restored(sc: SessionScenario, tables: Tables, committed: Committed) -> SessionEngine:
    """A new engine from the committed state rows (built from the changes alone)."""
    engine = SessionEngine(sc.spec, clock=lambda: 0)
    engine.assign(sc.partitions)
    for p, rows in tables.state.items():
        max_ts, next_offset = committed.positions.get(p, (None, None))
        partials = [PartialRow(key, start, end, st) for (_, start), (key, end, st) in rows.items()]
        engine.restore(p, max_ts, partials, next_offset=next_offset, closed=committed.fences)
    if committed.watermark_ms is not None:
        engine.advance_global_watermark(committed.watermark_ms)
    return engine


def run_sessions(
    sc: SessionScenario, crash_before: int | None = None
) -> tuple[Tables, dict[tuple[int, int], str], set[Any]]:
    """Feed the scenario; with `crash_before`, drop the engine before that phase and
    go on with one restored from the last commit, replaying the phases after it."""
    engine = SessionEngine(sc.spec, clock=lambda: 0)
    engine.assign(sc.partitions)
    tables = Tables(sc.spec, sc.partitions)
    late: dict[tuple[int, int], str] = {}
    bad: set[tuple[int, int]] = set()
    committed = Committed({}, (), None, -1)
    i = 0
    while i < len(sc.phases):
        if i == crash_before:
            crash_before = None
            engine = _restored(sc, tables, committed)
            i = committed.after_phase + 1
            continue
        floor, items = sc.phases[i]
        if floor is not None:
            engine.advance_global_watermark(floor)
        offsets = {p: engine.partition_next_offset(p) or 0 for p in sc.partitions}
        batch = []
        for p, record in items:
            batch.append((p, offsets[p], record))
            offsets[p] += 1
        result = engine.process(batch)
        assert result.records == len(batch)
        assert result.records == result.aggregated + len(result.late) + len(result.bad)
        late.update({(r.partition, r.offset): r.reason for r in result.late})
        bad |= {(b.partition, b.offset) for b in result.bad}
        if sc.emits[i]:
            committed = _commit(engine, tables, i)
        i += 1
    _commit(engine, tables, len(sc.phases))
    return tables, late, bad


def _check(sc: SessionScenario, crash_before: int | None = None) -> None:
    gap = sc.spec.session.gap_ms if sc.spec.session else 0
    ref = expected_sessions(Query.of(sc.spec), gap, sc.partitions, sc.phases)
    tables, late, bad = run_sessions(sc, crash_before)
    assert bad == ref.bad
    assert late == ref.late_reasons
    assert tables.sink == ref.typed_table


@SETTINGS
@given(session_scenarios())
def test_session_engine_matches_reference(sc: SessionScenario) -> None:
    _check(sc)


@SETTINGS
@given(session_scenarios(append=True))
def test_session_append_mode_matches_reference(sc: SessionScenario) -> None:
    _check(sc)


@SETTINGS
@given(session_scenarios(), st.integers(0, 12))
def test_a_restart_from_the_last_commit_gives_the_same_table(
    sc: SessionScenario, crash: int
) -> None:
    # The restored engine knows only what the emissions said (state rows from the
    # changes, fences, positions, W): what the checkpoint holds.
    _check(sc, crash % (len(sc.phases) + 1))

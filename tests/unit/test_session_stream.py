"""`SessionStreamEngine`: a session emit in the runtime's `Emission` shape.

Gap 10, delay 10, one partition: a record at t stands for [t, t + 10).
"""

from __future__ import annotations

from streamproc.engine import AggSpec, PartialRow, QuerySpec, ResultRow, SessionSpec
from streamproc.engine.passthrough import engine_for
from streamproc.engine.session_stream import SessionStreamEngine

SPEC = QuerySpec(
    group_by=("k",),
    aggregations=(AggSpec("n", None, "count"),),
    output_mode="update",
    event_time_column="t",
    event_time_format="epoch_millis",
    delay_ms=10,
    session=SessionSpec(10),
)


def new_engine() -> SessionStreamEngine:
    engine = engine_for(SPEC, lambda _p: None, lambda: 0)  # type: ignore[arg-type,return-value]
    assert isinstance(engine, SessionStreamEngine)
    engine.assign([0])
    return engine


def test_a_merge_is_state_row_upserts_deletes_and_deleted_rows() -> None:
    #   a@0 -> [0,10); a@15 -> [15,25); a@8 bridges them -> [0,25)
    engine = new_engine()
    engine.process([(0, 0, {"t": 0, "k": "a"}), (0, 1, {"t": 15, "k": "a"})])
    first = engine.emit(closed_partials=False)
    assert first.rows == (ResultRow(("a",), 0, 10, (1,)), ResultRow(("a",), 15, 25, (1,)))
    assert first.deleted_rows == () and first.evicted == {}
    engine.process([(0, 2, {"t": 8, "k": "a"})])
    second = engine.emit(closed_partials=False)
    assert second.rows == (ResultRow(("a",), 0, 25, (3,)),)
    assert second.deleted_rows == ((("a",), 0, 10), (("a",), 15, 25))
    assert second.partials == {0: (PartialRow(("a",), 0, 25, (3,)),)}
    assert second.evicted == {0: ((("a",), 15, 25),)}


def test_a_worker_not_closing_sessions_writes_a_closing_one_and_forgets_it() -> None:
    # closed_partials=True: other workers hold partitions; the checkpoint closes.
    engine = new_engine()
    engine.process([(0, 0, {"t": 0, "k": "a"}), (0, 1, {"t": 30, "k": "b"})])
    em = engine.emit(closed_partials=True)  # W = 20 >= 10: a's session is closed
    assert em.closed == ()
    assert em.partials == {0: (PartialRow(("a",), 0, 10, (1,)), PartialRow(("b",), 30, 40, (1,)))}
    assert engine.sessions.partials_of(0) == (PartialRow(("b",), 30, 40, (1,)),)
    assert engine.sessions.fences == ()


def test_a_worker_closing_sessions_itself_deletes_their_state_rows_and_fences_them() -> None:
    engine = new_engine()
    engine.process([(0, 0, {"t": 0, "k": "a"})])
    engine.emit(closed_partials=False)
    engine.process([(0, 1, {"t": 25, "k": "b"})])  # W = 15: [0,10) closed, fenced to 20
    em = engine.emit(closed_partials=False)
    assert em.closed == ((("a",), 0, 10),)
    assert em.evicted == {0: ((("a",), 0, 10),)}
    assert engine.sessions.fences == ((("a",), 0, 10),)

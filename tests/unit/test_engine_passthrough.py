"""The pass-through engine and plan: a streaming query without aggregation, one row a record."""

from __future__ import annotations

from typing import Any

import pytest

from streamproc.engine import (
    AggSpec,
    Engine,
    PassThroughEngine,
    QuerySpec,
    ResultRow,
    engine_for,
    record_row,
)
from streamproc.runtime.planner import plan_from_config
from streamproc.runtime.prepare import local_rows
from streamproc.sinks.definition import query_definition
from streamproc.sinks.kafka import record_message
from streamproc.state import memory_store_factory
from tests.unit.test_config_broken import DELETE, mutate

MIN = 60_000
T0 = 1_764_151_200_000
S = "streamingConfigJson"


AGGREGATION = QuerySpec(("k",), (AggSpec("n", None, "count"),), "update")


def spec(delay_ms: int | None = 5 * MIN, **changes: Any) -> QuerySpec:
    fields: dict[str, Any] = {
        "group_by": (),
        "aggregations": (),
        "output_mode": "append",
        "event_time_column": "ts" if delay_ms is not None else None,
        "delay_ms": delay_ms,
        "passthrough": True,
    }
    return QuerySpec(**(fields | changes))


def rec(ts: Any, n: int) -> dict[str, Any]:
    return {"ts": ts, "n": n}


def test_every_record_is_one_row_keyed_by_its_position_even_far_behind_the_watermark() -> None:
    # partition 0: ts 0, 20 min, then 1 min (19 minutes behind wm(0) = 15 min)
    # partition 1: ts 30 min
    engine = PassThroughEngine(spec(), lambda: 0)
    batch = [
        (0, 10, rec(T0, 1)),
        (0, 11, rec(T0 + 20 * MIN, 2)),
        (1, 5, rec(T0 + 30 * MIN, 3)),
        (0, 12, rec(T0 + MIN, 4)),
    ]
    result = engine.process(batch)
    assert (result.records, result.aggregated, result.late, result.bad) == (4, 4, (), ())
    assert result.per_partition[0].first_offset == 10
    assert result.per_partition[0].next_offset == 13
    assert result.per_partition[0].records == 3
    assert result.per_partition[0].max_event_ts_ms == T0 + 20 * MIN
    assert result.per_partition[0].watermark_ms == T0 + 15 * MIN
    emission = engine.emit()
    assert emission.rows == tuple(ResultRow((p, o), None, None, (r,)) for p, o, r in batch)
    assert emission.partials == {} and emission.evicted == {} and emission.closed == ()
    # W = min(wm(0), wm(1)) = min(15, 25) minutes
    assert emission.global_watermark_ms == T0 + 15 * MIN
    assert engine.emit().rows == ()  # each row once


def test_a_record_whose_event_time_cannot_be_read_is_written_and_moves_no_watermark() -> None:
    engine = PassThroughEngine(spec(), lambda: 0)
    result = engine.process([(0, 0, rec("not a time", 1)), (0, 1, {"n": 2})])
    assert result.aggregated == 2 and result.bad == ()
    assert engine.partition_max_event_ts_ms(0) is None
    assert [r.values[0]["n"] for r in engine.emit().rows] == [1, 2]


def test_without_a_watermark_no_event_time_is_read() -> None:
    engine = PassThroughEngine(spec(delay_ms=None), lambda: 0)
    engine.process([(0, 0, {"anything": [1, 2]})])
    assert engine.emit().global_watermark_ms is None
    assert engine.partition_watermark_ms(0) is None


def test_restore_and_revoke_drop_rows_not_emitted_and_set_the_position() -> None:
    engine = PassThroughEngine(spec(), lambda: 0)
    engine.process([(0, 0, rec(T0, 1)), (1, 0, rec(T0, 2)), (2, 0, rec(T0, 3))])
    engine.restore(0, T0 + 7 * MIN, (), next_offset=40)
    engine.revoke([1])
    assert [r.key for r in engine.emit().rows] == [(2, 0)]
    assert engine.partition_max_event_ts_ms(0) == T0 + 7 * MIN
    assert engine.partition_max_event_ts_ms(1) is None
    with pytest.raises(ValueError, match="no partial states"):
        engine.restore(0, None, [object()])  # type: ignore[list-item]


def test_a_remote_partition_holds_w_back() -> None:
    engine = PassThroughEngine(spec(), lambda: 0)
    engine.set_remote_watermark(1, None)
    engine.process([(0, 0, rec(T0 + 10 * MIN, 1))])
    assert engine.emit().global_watermark_ms is None
    engine.set_remote_watermark(1, T0)
    assert engine.global_watermark_ms == T0


def test_engine_for_picks_by_spec_and_the_spec_refuses_what_a_pass_through_cannot_have() -> None:
    assert isinstance(engine_for(spec(), memory_store_factory, lambda: 0), PassThroughEngine)
    assert isinstance(engine_for(AGGREGATION, memory_store_factory, lambda: 0), Engine)
    with pytest.raises(ValueError, match="append mode"):
        spec(output_mode="update")
    with pytest.raises(ValueError, match="no state to time out"):
        spec(state_timeout_ms=MIN)
    with pytest.raises(ValueError, match="no aggregations, group-by or window"):
        spec(group_by=("k",))
    with pytest.raises(ValueError, match="pass-through queries only"):
        PassThroughEngine(AGGREGATION, lambda: 0)


def test_rows_are_written_as_they_are_whoever_owns_the_other_partitions() -> None:
    engine = PassThroughEngine(spec(), lambda: 0)
    engine.process([(3, 9, rec(T0, 1))])
    emission = engine.emit()
    assert local_rows(emission, engine.spec, owns_every_partition=False) == emission.rows


def test_the_definition_says_pass_through_only_for_one() -> None:
    # An aggregation's stored definition must not change (it would read as a change).
    topic, sink = "t", {"table": "x"}
    assert query_definition(spec(), topic=topic, sink=sink)["rows"] == (
        "one per record (no aggregation)"
    )
    assert "rows" not in query_definition(AGGREGATION, topic=topic, sink=sink)


def test_a_kafka_sink_message_is_the_record_with_its_position_in_headers() -> None:
    message = record_message("out", "src", record_row(2, 41, {"a": 1, "b": "x"}))
    assert message.topic == "out" and message.key is None
    assert message.value == b'{"a":1,"b":"x"}'
    assert dict(message.headers) == {
        "source_topic": b"src",
        "source_partition": b"2",
        "source_offset": b"41",
    }


# --- planning --------------------------------------------------------------------------


def test_a_streaming_pipeline_without_aggregation_plans_a_pass_through_query() -> None:
    plan = plan_from_config_of({("transforms",): []})
    assert plan.spec.passthrough and plan.spec.output_mode == "append"
    assert plan.spec.event_time_column == "event_time" and plan.spec.delay_ms == 5 * MIN
    # the records are the rows: every quality rule runs on the records
    assert plan.quality.after_extract and not plan.quality.after_transform


def test_without_transforms_and_without_a_watermark_too() -> None:
    plan = plan_from_config_of({("transforms",): DELETE, (S, "watermark"): DELETE})
    assert plan.spec.passthrough and plan.spec.event_time_column is None


@pytest.mark.parametrize(
    ("changes", "line"),
    [
        (
            {(S, "outputMode"): "update"},
            f"{S}.outputMode: 'update' needs an aggregation transform; without one each "
            "record is written once as its own row: use 'append'",
        ),
        (
            {(S, "outputMode"): "complete"},
            f"{S}.outputMode: 'complete' needs an aggregation transform (it rewrites its table)",
        ),
        (
            {(S, "stateTimeout"): "1 hour"},
            f"{S}.stateTimeout: 1 hour means nothing without an aggregation (no state is "
            "kept); remove it",
        ),
    ],
    ids=["update", "complete", "state-timeout"],
)
def test_what_a_pass_through_query_refuses_is_one_line(
    changes: dict[tuple[Any, ...], Any], line: str
) -> None:
    from streamproc.commands.preflight import preflight

    checked = preflight(mutate({("transforms",): [], **changes}), env={})
    assert not checked.ok
    assert checked.errors == [line]


def plan_from_config_of(changes: dict[tuple[Any, ...], Any]) -> Any:
    from streamproc.config import load_config

    return plan_from_config(load_config(mutate(changes), {}), env={})

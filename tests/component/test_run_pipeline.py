"""`streamproc.testing.run_pipeline` used exactly as a user's own unit test would use it.

Only the public surface is touched: a config dict, a list of records, the
returned rows, late and bad records and counts.
"""

from __future__ import annotations

import zlib
from typing import Any

import pytest

from streamproc.config import ConfigError
from streamproc.testing import (
    BadOutput,
    InputRecord,
    LateOutput,
    RunCounts,
    run_pipeline,
    run_pipeline_async,
)
from tests.reference import Query, assert_tables_equal, expected
from tests.streams import MODE_CASES, make_stream

T0 = 1_764_151_200_000  # 2025-11-26T10:00:00Z
MIN = 60_000


def config(
    *,
    output_mode: str = "append",
    window: str | None = "10 minutes",
    delay: str = "5 minutes",
    aggregations: str = "events=*:count,total=value:sum",
) -> dict[str, Any]:
    """A user's pipeline: events per user in 10-minute windows, into PostgreSQL."""
    parameters: dict[str, Any] = {"groupByColumns": "user_id", "aggregations": aggregations}
    if window is not None:
        parameters |= {"windowColumn": "event_time", "windowDuration": window}
    return {
        "pipelineId": "user-events",
        "mode": "streaming",
        "extract": {
            "sourceType": "kafka",
            "topic": "user-events",
            "connectionParams": {
                "kafka.bootstrap.servers": "kafka:9092",
                "startingOffsets": "latest",
            },
        },
        "transforms": [{"transformType": "aggregation", "parameters": parameters}],
        "load": {
            "sinkType": "postgresql",
            "table": "user_event_counts",
            "connectionParams": {"url": "postgresql://app@db/app"},
        },
        "streamingConfigJson": {
            "checkpointLocation": "/var/lib/streamproc",
            "queryName": "user-event-counts",
            "outputMode": output_mode,
            "triggerMode": "processingtime=5 seconds",
            "watermark": {"eventTimeColumn": "event_time", "delayThreshold": delay},
        },
        "errorHandlingConfig": {"dlqConfig": {"dlqType": "none"}},
    }


def event(user: str, minute: float, value: Any = 1) -> dict[str, Any]:
    """A record at T0 + minute (event time, epoch ms)."""
    return {"user_id": user, "event_time": T0 + int(minute * MIN), "value": value}


def test_append_windows_are_the_hand_computed_rows() -> None:
    # event time (min)  0    3    6    9 | 10   12        21
    # u1                1    2           |      4
    # u2                          5      |
    # the record at 21 moves the watermark to 16: [0, 10) closes, [10, 20) stays open
    records = [event("u1", 0, 1), event("u1", 3, 2), event("u2", 6, 5), event("u1", 12, 4)]
    result = run_pipeline(config(), [*records, event("u3", 21, 0)])
    assert result.rows == (
        {"user_id": "u1", "window_start_ms": T0, "window_end_ms": T0 + 10 * MIN, "events": 2,
         "total": 3},
        {"user_id": "u2", "window_start_ms": T0, "window_end_ms": T0 + 10 * MIN, "events": 1,
         "total": 5},
    )  # fmt: skip
    assert result.counts == RunCounts(
        records=5, aggregated=5, late=0, bad=0, filtered=0, result_rows=2, batches=1
    )
    assert result.watermark_ms == T0 + 16 * MIN
    assert result.late == () and result.bad == ()


def test_update_mode_rows_include_open_windows() -> None:
    records = [event("u1", 1, 10), event("u1", 11, 20), event("u1", 12, 30)]
    rows = run_pipeline(config(output_mode="update"), records).rows
    assert [(r["window_start_ms"], r["events"], r["total"]) for r in rows] == [
        (T0, 1, 10),
        (T0 + 10 * MIN, 2, 50),
    ]


def test_a_late_record_is_reported_and_not_counted() -> None:
    # u1 at 20 min sets the partition's watermark to 15: a record at 2 min is late.
    records = [event("u1", 20), event("u1", 2, 7), event("u1", 16)]
    result = run_pipeline(config(output_mode="update"), records)
    assert result.late == (
        LateOutput(
            partition=0,
            offset=1,
            event_ts_ms=T0 + 2 * MIN,
            watermark_ms=T0 + 15 * MIN,
            reason="event time older than watermark",
            record=event("u1", 2, 7),
        ),
    )
    # [10, 20) holds the record at 16, [20, 30) the one at 20; nothing holds the late one.
    assert [(r["window_start_ms"], r["events"]) for r in result.rows] == [
        (T0 + 10 * MIN, 1),
        (T0 + 20 * MIN, 1),
    ]
    assert result.counts.late == 1 and result.counts.aggregated == 2


def test_bad_records_are_reported_with_their_reason() -> None:
    records = [
        event("u1", 1),
        b"{not json",
        InputRecord({"user_id": "u1", "event_time": "yesterday"}, key="k1"),
        event("u1", 2, "three"),
    ]
    result = run_pipeline(config(output_mode="update"), records)
    assert [(b.offset, b.value) for b in result.bad] == [
        (1, b"{not json"),
        (2, b'{"user_id": "u1", "event_time": "yesterday"}'),
        (3, b'{"user_id": "u1", "event_time": 1764151320000, "value": "three"}'),
    ]
    assert all(isinstance(b, BadOutput) and b.partition == 0 for b in result.bad)
    reasons = [b.reason for b in result.bad]
    assert reasons[0].startswith("value: not JSON")
    assert "event_time" in reasons[1] and "'yesterday'" in reasons[1]
    assert "value" in reasons[2] and "'three'" in reasons[2]
    assert result.counts.bad == 3 and result.counts.aggregated == 1
    assert result.rows[0]["events"] == 1


def test_partitions_hold_the_watermark_back_until_each_has_data() -> None:
    # W is the lowest partition's watermark: with partition 1 empty nothing closes.
    records = [InputRecord(event("u1", 1), partition=0), InputRecord(event("u1", 30), partition=0)]
    assert run_pipeline(config(), records, partitions=2).rows == ()
    both = [*records, InputRecord(event("u2", 40), partition=1)]
    result = run_pipeline(config(), both, partitions=2)
    assert [(r["user_id"], r["window_start_ms"]) for r in result.rows] == [("u1", T0)]


def test_non_windowed_rows_have_no_window_columns() -> None:
    records = [event("u2", 1, 4), event("u1", 2, 1), event("u2", 3, 6)]
    result = run_pipeline(config(output_mode="complete", window=None), records)
    assert result.rows == (
        {"user_id": "u1", "events": 1, "total": 1},
        {"user_id": "u2", "events": 2, "total": 10},
    )


def test_a_bad_config_raises_with_every_problem() -> None:
    broken = config()
    broken["streamingConfigJson"]["outputMode"] = "appendd"
    with pytest.raises(ConfigError) as caught:
        run_pipeline(broken, [])
    assert "outputMode" in str(caught.value)


def test_a_record_for_a_missing_partition_is_refused() -> None:
    with pytest.raises(ValueError, match="partition 3: the topic has 2"):
        run_pipeline(config(), [InputRecord(event("u1", 1), partition=3)], partitions=2)


async def test_inside_an_event_loop_await_the_async_form() -> None:
    with pytest.raises(RuntimeError, match="run_pipeline_async"):
        run_pipeline(config(), [])
    result = await run_pipeline_async(config(output_mode="update"), [event("u1", 1)])
    assert result.counts.records == 1


def _config_of(query: Query) -> dict[str, Any]:
    """The pipeline config of a model query (every aggregate over `value`)."""
    aggs = ",".join(f"{out}={col or '*'}:{func}" for out, col, func in query.aggregations)
    assert query.size_ms is not None and query.delay_ms is not None
    cfg = config(
        output_mode=query.output_mode,
        window=f"{query.size_ms // 1000} seconds",
        delay=f"{query.delay_ms // 1000} seconds",
        aggregations=aggs,
    )
    if query.slide_ms:
        params = cfg["transforms"][0]["parameters"]
        params["slideDuration"] = f"{query.slide_ms // 1000} seconds"
    return cfg


@pytest.mark.parametrize("case", ["append_sliding", "update_tumbling", "complete_sliding"])
def test_rows_equal_the_reference_model(case: str) -> None:
    query = MODE_CASES[case]
    stream = make_stream(1_200, partitions=3, seed=zlib.crc32(case.encode()) % 1000)
    records = [InputRecord(r, partition=p) for p, rs in stream.items() for r in rs]
    result = run_pipeline(_config_of(query), records, partitions=3)
    model = expected(query, stream)
    group = query.group_by
    outputs = [out for out, _, _ in query.aggregations]
    table = {
        (*(r[c] for c in group), r["window_start_ms"], r["window_end_ms"]): tuple(
            r[o] for o in outputs
        )
        for r in result.rows
    }
    assert_tables_equal(table, model.table)
    assert {(x.partition, x.offset) for x in result.late} == set(model.late)
    assert result.counts.records == 1_200 and result.counts.late == len(model.late)
    assert result.watermark_ms == model.watermark_ms

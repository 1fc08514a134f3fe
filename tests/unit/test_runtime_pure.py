"""Pure runtime pieces: planning from configs, late summaries, rate-limited logs, batch ids."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from streamproc.batch.plan import batch_plan_from_config
from streamproc.commands.run import summary_lines
from streamproc.config import load_config
from streamproc.engine import LateRecord
from streamproc.runtime.accounting import RunStats
from streamproc.runtime.late import LateSummary, RateLimitedLog
from streamproc.runtime.planner import plan_from_config
from streamproc.runtime.routers import bad_router
from streamproc.sinks.base import batch_id

CONFIGS = sorted(Path(__file__).resolve().parents[2].joinpath("configs").glob("*.json"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_example_config_plans(path: Path) -> None:
    cfg = load_config(path, env={})
    if not cfg.is_streaming:
        batch = batch_plan_from_config(cfg)
        assert batch.spec is not None and batch.spec.aggregations and batch.table
        return
    plan = plan_from_config(cfg)
    assert plan.topic and plan.query_name and plan.spec.aggregations
    assert plan.sink_type == "postgresql" and plan.dsn and plan.table


def test_streaming_example_plan_matches_the_seed() -> None:
    plan = plan_from_config(
        load_config(CONFIGS[[p.name for p in CONFIGS].index("streaming-example.json")], env={})
    )
    assert plan.trigger == "processingtime" and plan.trigger_interval_ms == 5_000
    assert plan.spec.window is not None
    assert (plan.spec.window.size_ms, plan.spec.window.slide_ms) == (600_000, 300_000)
    assert plan.spec.delay_ms == 600_000 and plan.spec.output_mode == "append"
    assert [a.output for a in plan.spec.aggregations] == ["event_count_count", "total_value_sum"]
    assert plan.late_strategy == "sendtodlq" and plan.late_dlq_topic == "late-user-events"
    assert plan.max_records_per_trigger == 10_000
    assert plan.dlq_type == "kafka" and plan.dlq_topic == "failed-events-dlq"


def late(ts_ms: int) -> LateRecord:
    return LateRecord(0, 0, ts_ms, ts_ms + 1, "event time older than watermark", {})


def test_late_summary_uses_the_seeds_words() -> None:
    summary = LateSummary()
    assert summary.text() == "Late data: 0 record(s)"
    base = 1_764_151_200_000  # 2025-11-26T10:00:00Z
    for ts in (base + 15 * 60_000, base + 18 * 60_000, base + 16 * 60_000):
        summary.add(late(ts))
    assert summary.text() == (
        "Late data: 3 record(s), event time range: 2025-11-26 10:15:00 to 2025-11-26 10:18:00 UTC"
    )


def test_rate_limited_log_caps_lines_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    limited = RateLimitedLog(
        logging.getLogger("t"), per_interval=2, interval_s=10, clock=lambda: now[0]
    )
    with caplog.at_level(logging.WARNING, logger="t"):
        for i in range(5):
            limited.warning("line %d", i)
        now[0] = 11.0
        limited.warning("line %d", 5)
    assert [r.getMessage() for r in caplog.records] == [
        "line 0",
        "line 1",
        "3 more line(s) like these suppressed",
        "line 5",
    ]


def test_batch_ids_are_deterministic() -> None:
    assert batch_id("q", "t", 3, 100, 250) == "q/t/3/100-250" == batch_id("q", "t", 3, 100, 250)


def test_a_postgresql_dlq_writes_to_its_table_or_the_result_table_dlq() -> None:
    path = CONFIGS[[p.name for p in CONFIGS].index("streaming-example.json")]
    config = load_config(path, env={})

    def planned(**dlq_changes: object) -> tuple[str | None, str]:
        dlq = config.error_handling.dlq.model_copy(update=dlq_changes)
        handling = config.error_handling.model_copy(update={"dlq": dlq})
        plan = plan_from_config(config.model_copy(update={"error_handling": handling}))
        return plan.dlq_table, type(bad_router(plan)).__name__

    assert planned(dlq_type="postgresql") == (f"{config.load.table}_dlq", "TableBad")
    assert planned(dlq_type="postgresql", table="ops.dead") == ("ops.dead", "TableBad")
    assert planned(dlq_type="logging", table="ops.dead") == (None, "LogBad")


def _stats(batch_seconds: float, lock_s: float) -> RunStats:
    stats = RunStats(records=40, aggregated=40, batches=1, batch_seconds=batch_seconds)
    stats.times.seconds.update({"fetch": 0.0, "engine": batch_seconds / 2, "lock": lock_s})
    return stats


def test_the_summary_says_the_lock_share_only_over_a_second_of_work() -> None:
    plan = plan_from_config(load_config(CONFIGS[0], env={}))
    short = summary_lines(plan, _stats(0.004, 0.09), 1.0)
    assert not any("lock share" in line for line in short)
    long = summary_lines(plan, _stats(2.0, 0.5), 3.0)
    assert [line for line in long if "lock share" in line] == [
        "  lock share: 0.25 (locks every worker of the query shares were held or waited for "
        "0.5s of the 2.0s the worker ran batches: more workers speed it up at most 4.0x)"
    ]
    assert long[1].startswith("  aggregated 40, late 0")


def test_the_summary_says_round_trips_per_commit_when_the_commits_counted_them() -> None:
    plan = plan_from_config(load_config(CONFIGS[0], env={}))
    in_memory = summary_lines(plan, _stats(2.0, 0.5), 3.0)
    assert not any("round trips" in line for line in in_memory)
    stats = _stats(2.0, 0.5)
    stats.round_trips, stats.counted_commits = 9, 4
    lines = summary_lines(plan, stats, 3.0)
    assert [line for line in lines if "round trips" in line] == [
        "  round trips per commit: 2.25 (PostgreSQL; 4 commits)"
    ]


def test_the_summary_of_a_pass_through_query_says_passed_through() -> None:
    document = json.loads(CONFIGS[0].read_text())
    document["transforms"] = []
    document["streamingConfigJson"]["outputMode"] = "append"
    document["dataQualityConfig"] = {"enabled": False}
    plan = plan_from_config(load_config(document, env={}))
    assert summary_lines(plan, _stats(0.1, 0.0), 1.0)[1].startswith("  passed through 40, late 0")

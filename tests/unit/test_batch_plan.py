"""The plan of a batch job, from a config: what it runs and what it refuses."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from streamproc.batch.plan import BatchPlan, batch_plan_from_config
from streamproc.config import load_config
from streamproc.engine import WindowSpec
from tests.unit.test_config_broken import DELETE, mutate

S = "streamingConfigJson"


def plan_of(changes: dict[tuple[Any, ...], Any]) -> BatchPlan:
    return batch_plan_from_config(load_config(mutate({("mode",): "batch", **changes}), env={}))


def test_an_aggregation_runs_complete_without_watermark_so_every_window_is_final() -> None:
    plan = plan_of({(S, "watermark", "delayThreshold"): "1 second"})
    assert plan.spec is not None
    assert plan.spec.output_mode == "complete"
    assert plan.spec.delay_ms is None
    assert plan.spec.event_time_column == "event_time"
    assert plan.spec.window == WindowSpec(600_000, 600_000)
    assert (plan.source_type, plan.topic, plan.write_mode, plan.batchsize) == (
        "kafka",
        "orders",
        "append",
        1000,
    )


def test_a_sliding_window_and_the_load_options_are_kept() -> None:
    plan = plan_of(
        {
            ("transforms", 0, "parameters", "slideDuration"): "5 minutes",
            ("load", "writeMode"): "upsert",
            ("load", "upsertKeys"): ["window_end", "user_id", "window_start"],
            ("load", "connectionParams", "batchsize"): 250,
        }
    )
    assert plan.spec is not None and plan.spec.window == WindowSpec(600_000, 300_000)
    assert (plan.write_mode, plan.upsert_keys, plan.batchsize) == (
        "upsert",
        ("window_end", "user_id", "window_start"),
        250,
    )


def test_without_aggregation_the_records_are_loaded() -> None:
    plan = plan_of({("transforms",): [], (S,): DELETE, ("dataQualityConfig",): DELETE})
    assert plan.spec is None


def test_a_file_source_names_its_path() -> None:
    plan = plan_of(
        {
            ("extract",): {"sourceType": "file", "path": "/data/*.jsonl.gz"},
            ("errorHandlingConfig", "dlqConfig", "bootstrapServers"): "k:9092",
        }
    )
    assert (plan.source_type, plan.path, plan.source_name) == (
        "file",
        "/data/*.jsonl.gz",
        "/data/*.jsonl.gz",
    )
    assert plan.dlq_bootstrap == "k:9092"


def test_earliest_is_the_batch_default_and_may_be_given() -> None:
    assert plan_of({("extract", "connectionParams", "startingOffsets"): "earliest"}).topic


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {("extract", "connectionParams", "startingOffsets"): "latest"},
            "'latest' reads nothing in batch mode",
        ),
        ({("load",): {"sinkType": "kafka", "topic": "x"}}, "not supported in batch mode"),
        (
            {("load", "writeMode"): "upsert", ("load", "upsertKeys"): "user_id,window_start"},
            "use (user_id, window_start, window_end)",
        ),
    ],
)
def test_what_a_batch_job_cannot_do_is_refused_in_one_line(
    changes: dict[tuple[Any, ...], Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        plan_of(changes)


def test_options_a_batch_job_ignores_get_one_warning_each() -> None:
    from streamproc.commands.preflight import preflight

    document = mutate(
        {
            ("mode",): "batch",
            (S,): DELETE,
            ("transforms", 0, "parameters", "windowColumn"): DELETE,
            ("transforms", 0, "parameters", "windowDuration"): DELETE,
            ("transforms", 0, "parameters", "stateTimeout"): "1 hour",
            ("loggingConfig", "metricsPort"): 9108,
            ("dataQualityConfig",): DELETE,
        }
    )
    checked = preflight(document, env={})
    assert isinstance(checked.plan, BatchPlan)
    assert checked.warnings == [
        "transforms[0].parameters.stateTimeout: ignored in batch mode; a batch job aggregates "
        "its whole input at once and evicts nothing",
        "loggingConfig.metricsPort: ignored in batch mode; a batch job serves no /metrics, it "
        "prints its report (rows read, written, rejected) when it ends",
    ]
    assert checked.notes == []


def test_status_of_a_batch_config_says_it_keeps_no_checkpoint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from streamproc import cli

    path = tmp_path / "job.json"
    path.write_text(json.dumps(mutate({("mode",): "batch"})))
    assert cli.main(["status", str(path)]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[-1] == (
        f"streamproc: {path}: mode 'batch' keeps no checkpoint, so it has no status; "
        "a batch job's report is printed when it ends"
    )

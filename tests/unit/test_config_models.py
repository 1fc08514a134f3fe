"""Typed accessors, defaults, aliases, warnings and the loader's handling of files."""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from streamproc.config import (
    Aggregation,
    ConfigError,
    PipelineConfig,
    ValidationReport,
    load_config,
    validate_config,
)
from streamproc.config.semantic import Draft

BATCH: dict[str, Any] = {
    "pipelineId": "nightly",
    "extract": {
        "sourceType": "KAFKA",
        "topic": "orders",
        "connectionParams": {
            "kafka.bootstrap.servers": "b1:9092, b2:9092",
            "kafka.security.protocol": "SASL_SSL",
            "kafka.sasl.mechanism": "PLAIN",
            "kafka.ssl.truststore.type": "PEM",
        },
    },
    "transforms": [
        {
            "transformType": "Aggregation",
            "parameters": {
                "groupByColumns": " region , product ",
                "aggregations": "qty:sum, revenue=price:sum, n=*:count, price:AVG",
            },
        }
    ],
    "load": {
        "sinkType": "PostgreSQL",
        "table": "analytics.totals",
        "writeMode": "upsert",
        "upsertKeys": "region,product",
        "connectionParams": {"host": "::1", "database": "db", "user": "me"},
    },
}


def with_changes(base: dict[str, Any], **sections: Any) -> dict[str, Any]:
    config = copy.deepcopy(base)
    config.update(sections)
    return config


def test_batch_defaults_and_normalization() -> None:
    cfg = load_config(BATCH, env={})
    assert (cfg.mode, cfg.is_streaming, cfg.streaming) == ("batch", False, None)
    extract = cfg.extract
    assert extract.source_type == "kafka"
    assert extract.bootstrap_servers == "b1:9092,b2:9092"
    assert extract.starting_offsets == "latest"  # Spark's default
    assert extract.max_offsets_per_trigger is None
    assert extract.security_params == {
        "kafka.security.protocol": "SASL_SSL",
        "kafka.sasl.mechanism": "PLAIN",
        "kafka.ssl.truststore.type": "PEM",
    }
    agg = cfg.aggregation
    assert agg is not None
    assert agg.group_by == ("region", "product")
    assert agg.aggregations == (
        Aggregation("qty_sum", "qty", "sum"),
        Aggregation("revenue", "price", "sum"),
        Aggregation("n", None, "count"),
        Aggregation("price_avg", "price", "avg"),
    )
    assert (agg.windowed, agg.window_size_ms, agg.slide_ms) == (False, None, None)
    assert agg.output_columns == ("region", "product", "qty_sum", "revenue", "n", "price_avg")
    load = cfg.load
    assert (load.sink_type, load.table, load.upsert_keys) == (
        "postgresql",
        "analytics.totals",
        ("region", "product"),
    )
    assert load.dsn() == "postgresql://me@[::1]:5432/db"


def test_error_handling_defaults_follow_the_format() -> None:
    handling = load_config(BATCH, env={}).error_handling
    retry, breaker, dlq = handling.retry, handling.circuit_breaker, handling.dlq
    assert (retry.strategy, retry.max_attempts, retry.jitter) == ("exponential", 3, True)
    assert (retry.initial_delay_seconds, retry.max_delay_seconds) == (5, 60)
    assert retry.backoff_multiplier == 2.0
    assert (breaker.enabled, breaker.failure_threshold) == (True, 5)
    assert (breaker.reset_timeout_seconds, breaker.half_open_max_attempts) == (60, 1)
    assert (dlq.dlq_type, dlq.buffer_size, dlq.producer_config) == ("logging", 100, {})
    assert handling.fail_fast is False


def test_quality_and_logging_defaults() -> None:
    cfg = load_config(BATCH, env={})
    quality = cfg.data_quality
    assert (quality.enabled, quality.rules, quality.on_failure) == (False, (), "abort")
    assert (quality.validate_after_extract, quality.validate_after_transform) == (False, True)
    assert (cfg.logging.log_level, cfg.logging.include_metrics) == ("INFO", True)


@pytest.mark.parametrize(
    ("written", "strategy"),
    [
        ("LogAndDrop", "loganddrop"),
        ("logdrop", "loganddrop"),
        ("DLQ", "sendtodlq"),
        ("send-to-dlq", "sendtodlq"),
        ("Separate", "separatestream"),
        ("SEPARATE_STREAM", "separatestream"),
        ("drop", "drop"),
    ],
)
def test_late_strategy_aliases(written: str, strategy: str) -> None:
    streaming = {
        "checkpointLocation": ".cp",
        "queryName": "q",
        "outputMode": "update",
        "lateDataConfig": {"strategy": written, "dlqTopic": "late", "lateDataTable": "late"},
    }
    config = with_changes(BATCH, mode="streaming", streamingConfigJson=streaming)
    cfg = load_config(config, env={})
    assert cfg.streaming is not None
    assert cfg.streaming.late_data.strategy == strategy


@pytest.mark.parametrize(
    ("written", "strategy"),
    [
        ("ExponentialBackoff", "exponential"),
        ("fixed_delay", "fixed"),
        ("FixedDelay", "fixed"),
        ("NoRetry", "none"),
        ("NONE", "none"),
    ],
)
def test_retry_strategy_aliases(written: str, strategy: str) -> None:
    config = with_changes(BATCH, errorHandlingConfig={"retryConfig": {"strategy": written}})
    assert load_config(config, env={}).error_handling.retry.strategy == strategy


def test_rule_type_and_log_level_aliases() -> None:
    config = with_changes(
        BATCH,
        dataQualityConfig={"rules": [{"ruleType": "NotNull", "columns": ["region"]}]},
        loggingConfig={"logLevel": "warning"},
    )
    cfg = load_config(config, env={})
    assert cfg.data_quality.rules[0].rule_type == "not_null"
    assert cfg.logging.log_level == "WARN"


@pytest.mark.parametrize(
    ("output_mode", "windowed", "watermark"),
    [
        ("update", False, False),
        ("complete", False, False),
        ("update", True, False),
        ("complete", True, True),
        ("append", True, True),
    ],
)
def test_output_modes_spark_allows(output_mode: str, windowed: bool, watermark: bool) -> None:
    config = copy.deepcopy(BATCH)
    config["mode"] = "streaming"
    config["load"]["writeMode"] = "append"
    streaming: dict[str, Any] = {
        "checkpointLocation": ".cp",
        "queryName": "q",
        "outputMode": output_mode,
    }
    if windowed:
        config["transforms"][0]["parameters"].update(windowColumn="ts", windowDuration="1 hour")
    if watermark:
        streaming["watermark"] = {"eventTimeColumn": "ts", "delayThreshold": "1 minute"}
    config["streamingConfigJson"] = streaming
    assert validate_config(config, env={}).errors == []


def test_append_without_aggregation_is_fine() -> None:
    config = with_changes(
        BATCH,
        mode="streaming",
        transforms=[],
        streamingConfigJson={"checkpointLocation": ".cp", "queryName": "q"},
    )
    config["load"]["writeMode"] = "append"
    cfg = load_config(config, env={})
    assert cfg.aggregation is None
    assert cfg.streaming is not None
    assert (cfg.streaming.output_mode, cfg.streaming.trigger.kind) == ("append", "continuous")
    assert cfg.streaming.enable_idempotence is True


def test_numbers_and_flags_as_strings() -> None:
    streaming = {
        "checkpointLocation": ".cp",
        "queryName": "q",
        "outputMode": "update",
        "maxRecordsPerTrigger": "5000",
        "maxFilesPerTrigger": 10,
        "enableIdempotence": "false",
        "stateTimeout": "30 minutes",
    }
    config = with_changes(BATCH, mode="streaming", streamingConfigJson=streaming)
    cfg = load_config(config, env={})
    assert cfg.streaming is not None
    assert cfg.streaming.max_records_per_trigger == 5000
    assert cfg.streaming.max_files_per_trigger == 10
    assert cfg.streaming.enable_idempotence is False
    assert cfg.state_timeout_ms == 1_800_000


def test_spark_only_keys_give_one_warning_line(caplog: pytest.LogCaptureFixture) -> None:
    config = copy.deepcopy(BATCH)
    config["extract"]["connectionParams"].update(failOnDataLoss="false", minPartitions=4)
    config["load"]["connectionParams"]["driver"] = "org.postgresql.Driver"
    config["performanceConfig"] = {"shufflePartitions": 200, "broadcastThreshold": 10485760}
    report = validate_config(config, env={})
    assert report.errors == []
    assert report.warnings == [
        "Spark-only keys accepted and ignored (no effect in streamproc): "
        "extract.connectionParams.failOnDataLoss, extract.connectionParams.minPartitions, "
        "load.connectionParams.driver, performanceConfig.shufflePartitions, "
        "performanceConfig.broadcastThreshold"
    ]
    with caplog.at_level(logging.WARNING, logger="streamproc.config"):
        load_config(config, env={})
    assert [r.getMessage() for r in caplog.records] == report.warnings


def test_streaming_section_in_batch_mode_is_a_warning() -> None:
    config = with_changes(
        BATCH, streamingConfigJson={"checkpointLocation": ".cp", "queryName": "q"}
    )
    report = validate_config(config, env={})
    assert report.errors == []
    assert report.warnings == [
        'streamingConfigJson: ignored because mode is \'batch\'; set "mode": "streaming" to use it'
    ]


def test_file_source_needs_a_path_and_a_kafka_dlq_needs_servers() -> None:
    config = with_changes(
        BATCH,
        extract={"sourceType": "file"},
        errorHandlingConfig={"dlqConfig": {"dlqType": "kafka", "topic": "dlq"}},
    )
    assert validate_config(config, env={}).errors == [
        "extract.path: required when sourceType is 'file'",
        "errorHandlingConfig.dlqConfig.bootstrapServers: required when dlqType is 'kafka' "
        "and the source is not Kafka",
    ]


def test_kafka_sink() -> None:
    config = with_changes(BATCH, load={"sinkType": "kafka", "topic": "totals"})
    cfg = load_config(config, env={})
    assert (cfg.load.sink_type, cfg.load.topic) == ("kafka", "totals")
    assert cfg.sink_bootstrap_servers == "b1:9092,b2:9092"


@pytest.mark.parametrize(
    ("write", "error"),
    [
        (None, "cannot read the file"),
        (
            "{not json",
            "not valid JSON: Expecting property name enclosed in double quotes at line 1, column 2",
        ),
        ('{"a": 1, "a": 2}', "key 'a' appears twice in one object"),
    ],
)
def test_file_problems_are_one_error(tmp_path: Path, write: str | None, error: str) -> None:
    path = tmp_path / "pipeline.json"
    if write is not None:
        path.write_text(write, encoding="utf-8")
    report = validate_config(path, env={})
    assert report.config is None
    assert len(report.errors) == 1
    assert report.errors[0].startswith(f"{path}: {error}")


def test_top_level_must_be_an_object(tmp_path: Path) -> None:
    path = tmp_path / "pipeline.json"
    path.write_text(json.dumps([1, 2]), encoding="utf-8")
    assert validate_config(path).errors == ["(top level): expected an object, got list [1, 2]"]


def test_config_error_carries_lines_and_warnings() -> None:
    config = with_changes(BATCH, performanceConfig={"shufflePartitions": 1}, mode="fast")
    with pytest.raises(ConfigError) as raised:
        load_config(config, env={})
    assert raised.value.errors == [
        "mode: 'fast' is not a valid mode; expected one of batch, streaming"
    ]
    assert len(raised.value.warnings) == 1
    assert str(raised.value) == raised.value.errors[0]


def test_report_is_frozen() -> None:
    report = validate_config(BATCH, env={})
    assert isinstance(report, ValidationReport) and report.ok
    with pytest.raises(dataclasses.FrozenInstanceError):
        report.config = None  # type: ignore[misc]


def test_models_are_frozen() -> None:
    cfg = load_config(BATCH, env={})
    with pytest.raises(ValidationError):
        cfg.extract.path = "/elsewhere"


def test_direct_model_validation_runs_the_cross_field_checks() -> None:
    config = copy.deepcopy(BATCH)
    config["load"]["writeMode"] = "upsert"
    del config["load"]["upsertKeys"]
    with pytest.raises(ValidationError, match=r"load\.upsertKeys: required when writeMode"):
        PipelineConfig.model_validate(config)


def test_the_cross_field_draft_names_pipeline_sections() -> None:
    # Draft.of looks sections up by PipelineConfig field name; a renamed field must
    # not silently turn a cross-field check off.
    sections = {f.name for f in dataclasses.fields(Draft)} - {"failed"}
    assert sections <= set(PipelineConfig.model_fields)

"""Map a validated PipelineConfig onto a QueryPlan (the runtime's only view of a config)."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from typing import Literal

from streamproc.config import AggregationParams, PipelineConfig, format_duration_ms
from streamproc.config.kafka_security import kafka_client_params
from streamproc.config.names import IDENTIFIER_MAX
from streamproc.config.transform import aggregation_transforms
from streamproc.engine import AggSpec, QuerySpec, SessionSpec, WindowSpec
from streamproc.engine.spec import EventTimeFormat
from streamproc.runtime.plan import BreakerPolicy, QueryPlan, RetryPolicy
from streamproc.runtime.quality import QualityPlan, QualityRule, json_keys


def _event_time_format(cfg: PipelineConfig) -> EventTimeFormat:
    """The watermark's eventTimeFormat when given, else the aggregation's, else auto."""
    wm = cfg.streaming.watermark if cfg.streaming else None
    if wm is not None and "event_time_format" in wm.model_fields_set:
        return wm.event_time_format
    agg = cfg.aggregation
    return (agg.event_time_format if agg else None) or "auto"


def plan_from_config(cfg: PipelineConfig, env: Mapping[str, str] | None = None) -> QueryPlan:
    """The QueryPlan of a streaming pipeline.

    Pure but for reading the files of `kafka.ssl.*` keys: `streamproc validate`
    builds the plan too, so whatever validates also runs.

    Args:
        cfg: a validated config.
        env: where STREAMPROC_PG_DSN is looked up (default: ``os.environ``).

    Raises:
        ValueError: the pipeline is valid but cannot run as a streaming query here
            (batch mode, ...): one line naming the
            field, its value and what is accepted.
    """
    streaming = cfg.streaming
    if not cfg.is_streaming or streaming is None:
        # Batch jobs are planned by streamproc.batch.plan (preflight picks by mode).
        raise ValueError(
            "mode: 'batch' pipelines run as batch jobs (streamproc run), not as streaming "
            "queries; a batch job keeps no checkpoint"
        )
    agg = cfg.aggregation
    is_file = cfg.extract.source_type == "file"
    wm = streaming.watermark
    if agg is None:
        spec = _passthrough_spec(cfg)
    else:
        _refuse_sessions_to_kafka(cfg, agg)
        _refuse_windowed_state_timeout(cfg, agg)
        spec = QuerySpec(
            group_by=tuple(agg.group_by),
            aggregations=tuple(AggSpec(a.output, a.column, a.func) for a in agg.aggregations),
            output_mode=streaming.output_mode,
            event_time_column=wm.event_time_column if wm else agg.window_column,
            event_time_format=_event_time_format(cfg),
            delay_ms=wm.delay_ms if wm else None,
            window=WindowSpec(agg.window_size_ms, agg.slide_ms or agg.window_size_ms)
            if agg.windowed and agg.window_size_ms
            else None,
            session=SessionSpec(agg.gap_duration_ms) if agg.gap_duration_ms else None,
            idle_timeout_ms=wm.idle_timeout_ms if wm else None,
            state_timeout_ms=cfg.state_timeout_ms,
            jump_warning_ms=wm.jump_warning_ms if wm else None,
        )
    eh = cfg.error_handling
    late = streaming.late_data
    source_params = kafka_client_params(cfg.extract.security_params)
    sink_type = cfg.load.sink_type
    dsn = (
        _checkpoint_dsn(cfg, os.environ if env is None else env)
        if sink_type == "kafka"
        else cfg.load.dsn()
    )
    return QueryPlan(
        pipeline_id=cfg.pipeline_id,
        query_name=streaming.query_name,
        spec=spec,
        bootstrap=cfg.extract.bootstrap_servers or "localhost:9092",
        # A file source's checkpoint rows are keyed by its path: one spelling of it
        # (`data/` and `./data` are `data`).
        topic=os.path.normpath(cfg.extract.path or ".") if is_file else (cfg.extract.topic or ""),
        starting_offsets=_starting_offsets(cfg),
        kafka_params=source_params,
        metadata_max_age_ms=cfg.extract.connection_params.metadata_max_age_ms,
        max_future_skew_ms=wm.max_future_skew_ms if wm else None,
        trigger=streaming.trigger.kind,
        trigger_interval_ms=streaming.trigger.interval_ms,
        max_records_per_trigger=streaming.max_records_per_trigger
        or cfg.extract.max_offsets_per_trigger,
        source_type="file" if is_file else "kafka",
        max_files_per_trigger=streaming.max_files_per_trigger if is_file else None,
        on_file_truncated=streaming.on_file_truncated,
        on_file_deleted=streaming.on_file_deleted,
        file_patterns=cfg.extract.path_glob_filter if is_file else None,
        sink_type="kafka" if sink_type == "kafka" else "postgresql",
        table=cfg.load.table,
        dsn=dsn,
        sink_topic=cfg.load.topic,
        sink_bootstrap=cfg.sink_bootstrap_servers,
        checkpoint_location=streaming.checkpoint_location,
        late_strategy=late.strategy,
        late_dlq_topic=late.dlq_topic,
        late_table=late.late_data_table,
        dlq_type=eh.dlq.dlq_type,
        dlq_topic=eh.dlq.topic,
        dlq_bootstrap=cfg.dlq_bootstrap_servers,
        dlq_table=dlq_table(cfg),
        retry=retry_policy(cfg),
        breaker=breaker_policy(cfg),
        fail_fast=eh.fail_fast,
        quality=quality_plan(cfg, None).on_records_only()
        if agg is None
        else quality_plan(cfg, agg.window_column),
        log_level=cfg.logging.log_level,
        include_metrics=cfg.logging.include_metrics,
        metrics_address=cfg.logging.metrics_address,
        metrics_port=cfg.logging.metrics_port,
    )


def _starting_offsets(cfg: PipelineConfig) -> Literal["earliest", "latest"]:
    """startingOffsets; a file source reads the files already there unless told latest.

    Kafka's default is latest (Spark's too); Spark's file source reads the files
    present when it starts, so a file source defaults to earliest.
    """
    params = cfg.extract.connection_params
    if cfg.extract.source_type == "file" and "starting_offsets" not in params.model_fields_set:
        return "earliest"
    return cfg.extract.starting_offsets


def retry_policy(cfg: PipelineConfig) -> RetryPolicy:
    """errorHandlingConfig.retryConfig as the runtime's retry policy."""
    retry = cfg.error_handling.retry
    return RetryPolicy(
        strategy=retry.strategy,
        max_attempts=retry.max_attempts,
        initial_delay_s=retry.initial_delay_seconds,
        max_delay_s=retry.max_delay_seconds,
        multiplier=retry.backoff_multiplier,
        jitter=retry.jitter,
    )


def breaker_policy(cfg: PipelineConfig) -> BreakerPolicy:
    """errorHandlingConfig.circuitBreakerConfig as the runtime's breaker policy."""
    breaker = cfg.error_handling.circuit_breaker
    return BreakerPolicy(
        enabled=breaker.enabled,
        failure_threshold=breaker.failure_threshold,
        reset_timeout_s=breaker.reset_timeout_seconds,
        half_open_max_attempts=breaker.half_open_max_attempts,
    )


def dlq_table(cfg: PipelineConfig) -> str | None:
    """The dead-letter table of dlqType postgresql: dlqConfig.table, else `<load.table>_dlq`."""
    dlq = cfg.error_handling.dlq
    if dlq.dlq_type != "postgresql":
        return None
    if dlq.table:
        return dlq.table
    if not cfg.load.table:
        raise ValueError(
            "errorHandlingConfig.dlqConfig.table: dlqType 'postgresql' needs a table "
            "(the default, <load.table>_dlq, needs load.table)"
        )
    table = f"{cfg.load.table}_dlq"
    if len(table.rsplit(".", 1)[-1]) > IDENTIFIER_MAX:
        # PostgreSQL would cut the name silently, and two queries could share a table by accident.
        raise ValueError(
            f"errorHandlingConfig.dlqConfig.table: the default dead-letter table {table} is "
            f"longer than {IDENTIFIER_MAX} characters; name one with dlqConfig.table"
        )
    return table


def quality_plan(cfg: PipelineConfig, window_column: str | None) -> QualityPlan:
    """The dataQualityConfig rules of a pipeline, resolved (streaming and batch alike)."""
    dq = cfg.data_quality
    if not dq.enabled:
        return QualityPlan()
    rules = []
    for i, rule in enumerate(dq.rules):
        params = rule.parameters
        values = params.values if params and params.values else ()
        rules.append(
            QualityRule(
                name=rule.name or f"rule{i}",
                rule_type=rule.rule_type,
                columns=tuple(rule.columns),
                severity=rule.severity,
                min=params.min if params else None,
                max=params.max if params else None,
                # validation compiled it once already: this cannot fail
                regex=re.compile(params.regex) if params and params.regex is not None else None,
                allowed=json_keys(values),
                shown_values=json.dumps(list(values))[:200],
            )
        )
    return QualityPlan(
        rules=tuple(rules),
        on_failure=dq.on_failure,
        after_extract=dq.validate_after_extract,
        after_transform=dq.validate_after_transform,
        window_column=window_column,
    )


def _passthrough_spec(cfg: PipelineConfig) -> QuerySpec:
    """The spec of a streaming pipeline without aggregation: each record is a row.

    The watermark, if any, only tracks event time for progress and status: no
    record is late without a stateful operator to be late for (Spark drops late
    rows only there).
    """
    streaming = cfg.streaming
    assert streaming is not None
    if streaming.output_mode != "append":
        # validate refuses it first, naming outputMode; a pipeline built in code may not.
        raise ValueError(
            f"streamingConfigJson.outputMode: '{streaming.output_mode}' needs an aggregation "
            "transform; without one each record is written once as its own row: use 'append'"
        )
    if cfg.state_timeout_ms is not None:
        raise ValueError(
            f"streamingConfigJson.stateTimeout: {format_duration_ms(cfg.state_timeout_ms)} "
            "means nothing without an aggregation (no state is kept); remove it"
        )
    wm = streaming.watermark
    return QuerySpec(
        group_by=(),
        aggregations=(),
        output_mode="append",
        event_time_column=wm.event_time_column if wm else None,
        event_time_format=wm.event_time_format if wm else "auto",
        delay_ms=wm.delay_ms if wm else None,
        idle_timeout_ms=wm.idle_timeout_ms if wm else None,
        passthrough=True,
    )


def _refuse_sessions_to_kafka(cfg: PipelineConfig, agg: AggregationParams) -> None:
    """Session windows write to a table: their rows move (update, complete delete the
    rows of sessions that moved or merged), which a topic's messages cannot undo."""
    if agg.gap_duration_ms is None or cfg.load.sink_type == "postgresql":
        return
    index = aggregation_transforms(cfg.transforms)[0][0]
    raise ValueError(
        f"transforms[{index}].parameters.gapDuration: session windows "
        f"({format_duration_ms(agg.gap_duration_ms)} gap) write to a postgresql table "
        f"(load.sinkType {cfg.load.sink_type!r}): a session's row moves as it grows or "
        "merges, and a message on a topic cannot be taken back"
    )


def _refuse_windowed_state_timeout(cfg: PipelineConfig, agg: AggregationParams) -> None:
    # A windowed stateTimeout measures idleness in event time against W
    # (STREAMING.md, "stateTimeout on windows"): without a watermark there is
    # nothing to measure it against, and complete mode keeps every window.
    if not agg.windowed or cfg.state_timeout_ms is None:
        return
    index = aggregation_transforms(cfg.transforms)[0][0]
    path = (
        f"transforms[{index}].parameters.stateTimeout"
        if agg.state_timeout_ms is not None
        else "streamingConfigJson.stateTimeout"
    )
    timeout = format_duration_ms(cfg.state_timeout_ms)
    streaming = cfg.streaming
    assert streaming is not None
    if streaming.watermark is None:
        raise ValueError(
            f"{path}: {timeout} on a windowed aggregation needs streamingConfigJson.watermark "
            "(a (key, window) is idle in event time, against the watermark); add a watermark, "
            "or remove stateTimeout"
        )
    if streaming.output_mode == "complete":
        raise ValueError(
            f"{path}: {timeout} on a windowed aggregation is not supported in outputMode "
            "'complete' (its table keeps every window, so no window's state may go); use "
            "'update' or 'append', or remove stateTimeout"
        )


def _checkpoint_dsn(cfg: PipelineConfig, env: Mapping[str, str]) -> str:
    """Where a Kafka sink keeps its exactly-once checkpoint (ledger and partials).

    A Kafka sink has no result table, but the checkpoint still lives in
    PostgreSQL: `load.connectionParams.url` (or host/database), else
    STREAMPROC_PG_DSN.
    """
    params = cfg.load.connection_params
    if params.url is not None or params.host is not None:
        return cfg.load.dsn()
    dsn = env.get("STREAMPROC_PG_DSN")
    if not dsn:
        raise ValueError(
            "load.connectionParams.url: a kafka sink keeps its checkpoint (ledger, partials) "
            "in PostgreSQL; give url (or set STREAMPROC_PG_DSN)"
        )
    return dsn

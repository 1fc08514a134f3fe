"""Cross-field checks: relations between fields that no single field's type can see.

The checks run on a :class:`Draft`, which holds whatever parsed, so that one run
reports a bad duration, an unknown key and an output-mode conflict together. A
check that reads a value which failed to parse (or that the loader dropped so the
rest could parse) is skipped: that value already has its own error, and a check
reading a stand-in default would only add a misleading second one.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Literal

from streamproc.config.durations import format_duration_ms as fmt
from streamproc.config.messages import Problem
from streamproc.config.operations import DataQualityConfig, ErrorHandlingConfig, RuleParameters
from streamproc.config.sink import LoadConfig
from streamproc.config.source import ExtractConfig
from streamproc.config.streaming import StreamingConfig
from streamproc.config.transform import (
    WINDOW_BOUNDS,
    AggregationParams,
    TransformConfig,
    aggregation_transforms,
)

Mode = Literal["batch", "streaming"]

_S = "streamingConfigJson"
_SOURCE_SERVERS = "extract.connectionParams.kafka.bootstrap.servers"
_DLQ_SERVERS = "errorHandlingConfig.dlqConfig.bootstrapServers"
_DQ = "dataQualityConfig"
_NAME_IT = "name it with '<name>=<column>:<function>'"


@dataclass(frozen=True)
class Draft:
    """The sections of a config as far as they parsed.

    Attributes:
        mode, extract, transforms, load, streaming, error_handling, data_quality:
            the parsed section, or None when it is absent (streaming) or failed.
        failed: rendered paths of the values that failed or were dropped; a check
            reading a value at or under one of them is skipped.
    """

    mode: Mode | None
    extract: ExtractConfig | None
    transforms: tuple[TransformConfig, ...] | None
    load: LoadConfig | None
    streaming: StreamingConfig | None
    error_handling: ErrorHandlingConfig | None
    data_quality: DataQualityConfig | None
    failed: frozenset[str] = frozenset()

    @classmethod
    def of(cls, sections: Mapping[str, Any], failed: frozenset[str] = frozenset()) -> Draft:
        """A draft from parsed sections keyed by PipelineConfig field name (missing: None)."""
        names = [f.name for f in fields(cls) if f.name != "failed"]
        return cls(**{name: sections.get(name) for name in names}, failed=failed)

    def ok(self, *paths: str) -> bool:
        """True when none of ``paths`` is, or lies under, a failed path."""
        return not any(_covers(bad, path) for bad in self.failed for path in paths)

    def aggregation(self) -> tuple[str, AggregationParams] | None:
        """(path of its parameters, parameters) of the first aggregation transform."""
        found = aggregation_transforms(self.transforms or ())
        return (f"transforms[{found[0][0]}].parameters", found[0][1]) if found else None


def _covers(failed: str, path: str) -> bool:
    return path == failed or path.startswith((failed + ".", failed + "["))


@dataclass
class Findings:
    """What the cross-field checks found: errors (the config is refused) and warnings."""

    errors: list[Problem] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def error(self, path: str, text: str) -> None:
        """Record an error at ``path``."""
        self.errors.append(Problem(path, text))


def check(draft: Draft) -> Findings:
    """Run every cross-field check on ``draft``.

    Returns:
        The errors, in a fixed order (by section), and the warnings.
    """
    found = Findings()
    _check_mode(draft, found)
    _check_extract(draft, found)
    _check_transforms(draft, found)
    _check_streaming(draft, found)
    _check_load(draft, found)
    _check_error_handling(draft, found)
    _check_data_quality(draft, found)
    return found


def _check_mode(d: Draft, found: Findings) -> None:
    if d.mode == "streaming" and d.streaming is None and d.ok(_S):
        found.error(_S, "required when mode is 'streaming'")
    if d.mode == "batch" and d.streaming is not None:
        found.warnings.append(
            f'{_S}: ignored because mode is \'batch\'; set "mode": "streaming" to use it'
        )


def _check_extract(d: Draft, found: Findings) -> None:
    e = d.extract
    if e is None:
        return
    if e.source_type == "file":
        if not e.path and d.ok("extract.path"):
            found.error("extract.path", "required when sourceType is 'file'")
        return
    subscribe, topic = e.connection_params.subscribe, e.topic_name
    if e.topic is None and d.ok("extract.topic", "extract.connectionParams.subscribe"):
        found.error(
            "extract.topic",
            "required when sourceType is 'kafka' (or give extract.connectionParams.subscribe)",
        )
    if subscribe and topic and subscribe != topic:
        found.error(
            "extract.connectionParams.subscribe",
            f"'{subscribe}' differs from extract.topic '{topic}'; name one topic",
        )
    if e.bootstrap_servers is None and d.ok(_SOURCE_SERVERS):
        found.error(_SOURCE_SERVERS, "required when sourceType is 'kafka'")


def _check_transforms(d: Draft, found: Findings) -> None:
    if d.transforms is None:
        return
    aggregations = aggregation_transforms(d.transforms)
    for index, _ in aggregations[1:]:
        found.error(
            f"transforms[{index}]",
            "only one aggregation transform is supported; "
            f"transforms[{aggregations[0][0]}] is one already",
        )
    for index, p in aggregations:
        base = f"transforms[{index}].parameters"
        if p.sessions and (p.window_size_ms is not None or p.slide_duration_ms is not None):
            # One line, not one per field: the two kinds of window exclude each other.
            fixed = "windowDuration" if p.window_size_ms is not None else "slideDuration"
            found.error(
                f"{base}.gapDuration",
                f"gapDuration (session windows) and {fixed} (fixed windows) are mutually "
                "exclusive; give one",
            )
            continue
        if p.gap_duration_ms and p.window_column is None and d.ok(f"{base}.windowColumn"):
            found.error(f"{base}.windowColumn", "required when gapDuration is set")
        if (
            p.window_column
            and not p.windowed
            and d.ok(f"{base}.windowDuration", f"{base}.gapDuration")
        ):
            found.error(f"{base}.windowDuration", "required when windowColumn is set")
        if p.window_size_ms and p.window_column is None and d.ok(f"{base}.windowColumn"):
            found.error(f"{base}.windowColumn", "required when windowDuration is set")
        slide, size = p.slide_duration_ms, p.window_size_ms
        if slide is not None and size is None and d.ok(f"{base}.windowDuration"):
            found.error(f"{base}.slideDuration", "needs windowDuration (it slides a window)")
        if slide is not None and size is not None and slide > size:
            found.error(
                f"{base}.slideDuration",
                f"{fmt(slide)} is longer than windowDuration ({fmt(size)}); "
                "expected a slide no longer than the window",
            )
        taken = set(p.group_by)
        if p.windowed:
            taken.update(WINDOW_BOUNDS)
            taken.update([p.window_column] if p.window_column else [])
        for agg in p.aggregations:
            if agg.output in taken:
                found.error(
                    f"{base}.aggregations",
                    f"output column '{agg.output}' is also a group-by or window column; {_NAME_IT}",
                )


def _check_streaming(d: Draft, found: Findings) -> None:
    s = d.streaming
    if s is None or d.mode != "streaming":
        return
    if d.transforms is not None or d.ok("transforms"):
        _check_output_mode(d, s, found)
    late, base = s.late_data, f"{_S}.lateDataConfig"
    if late.strategy == "sendtodlq":
        if late.dlq_topic is None and d.ok(f"{base}.dlqTopic"):
            found.error(f"{base}.dlqTopic", "required when strategy is 'sendtodlq'")
        if _lacks_cluster(d, _dlq_servers(d), _DLQ_SERVERS):
            found.error(
                f"{base}.strategy",
                "'sendtodlq' needs a Kafka cluster: a Kafka source or "
                "errorHandlingConfig.dlqConfig.bootstrapServers",
            )
    if late.strategy == "separatestream":
        if late.late_data_table is None and d.ok(f"{base}.lateDataTable"):
            found.error(f"{base}.lateDataTable", "required when strategy is 'separatestream'")
        if d.load is not None and d.load.sink_type != "postgresql":
            found.error(
                f"{base}.strategy",
                "'separatestream' writes lateDataTable in the sink's database; "
                "it needs sinkType 'postgresql'",
            )


def _check_output_mode(d: Draft, s: StreamingConfig, found: Findings) -> None:
    # Spark's output-mode matrix, which streamproc keeps (STREAMING.md, "Output
    # modes"): append writes a row once, so it needs a window that the watermark
    # can close; complete rewrites the aggregated table, so it needs an aggregation.
    found_agg = d.aggregation()
    mode_path = f"{_S}.outputMode"
    if found_agg is None:
        if s.output_mode == "complete" and d.ok(mode_path):
            found.error(
                mode_path, "'complete' needs an aggregation transform (it rewrites its table)"
            )
        if s.output_mode == "update" and d.ok(mode_path):
            # Without aggregation each record is a row of its own, written once.
            found.error(
                mode_path,
                "'update' needs an aggregation transform; without one each record is "
                "written once as its own row: use 'append'",
            )
        return
    base, agg = found_agg
    if s.output_mode == "append" and d.ok(mode_path):
        # A window column without a duration is its own error, not this one.
        if agg.window_column is None and not agg.windowed:
            found.error(
                mode_path,
                "'append' with a non-windowed aggregation never finishes a row; use 'update' "
                "or 'complete', or give windowColumn and windowDuration",
            )
        if s.watermark is None and d.ok(f"{_S}.watermark"):
            found.error(
                f"{_S}.watermark",
                "required by outputMode 'append' with an aggregation "
                "(a row is written once, when the watermark closes its window)",
            )
    if (
        s.output_mode != "append"
        and agg.windowed
        and s.watermark is None
        and d.ok(f"{_S}.watermark")
    ):
        found.warnings.append(
            f"{_S}.watermark: not set, so the windows of this windowed '{s.output_mode}' query "
            "never close: a record of any age still changes its window, and every (key, "
            "window) stays in state (state grows without bound); set watermark "
            "{eventTimeColumn, delayThreshold} to close a window once event time passes its "
            "end by delayThreshold"
        )
    column, watermark = agg.window_column, s.watermark
    if column is not None and watermark is not None and column != watermark.event_time_column:
        found.error(
            f"{base}.windowColumn",
            f"'{column}' differs from {_S}.watermark.eventTimeColumn "
            f"'{watermark.event_time_column}'; windows are over event time, so both must "
            "name the same column",
        )
    given = watermark.model_fields_set if watermark is not None else set()
    if (
        agg.event_time_format is not None
        and watermark is not None
        and "event_time_format" in given
        and agg.event_time_format != watermark.event_time_format
    ):
        found.error(
            f"{base}.eventTimeFormat",
            f"'{agg.event_time_format}' differs from {_S}.watermark.eventTimeFormat "
            f"'{watermark.event_time_format}'; give one",
        )
    if agg.state_timeout_ms and s.state_timeout_ms and agg.state_timeout_ms != s.state_timeout_ms:
        found.error(
            f"{base}.stateTimeout",
            f"{fmt(agg.state_timeout_ms)} differs from {_S}.stateTimeout "
            f"({fmt(s.state_timeout_ms)}); give one",
        )
    timeout = agg.state_timeout_ms or s.state_timeout_ms
    if timeout and agg.sessions:
        path = f"{base}.stateTimeout" if agg.state_timeout_ms else f"{_S}.stateTimeout"
        found.error(path, "does not apply to session windows (the gap ends a session); remove it")
    if timeout and agg.windowed and agg.window_size_ms and timeout >= agg.window_size_ms:
        path = f"{base}.stateTimeout" if agg.state_timeout_ms else f"{_S}.stateTimeout"
        found.warnings.append(
            f"{path}: {fmt(timeout)} is not shorter than windowDuration "
            f"({fmt(agg.window_size_ms)}), so no window ever expires before the watermark "
            "closes it; use a shorter stateTimeout, or remove it"
        )


def _dlq_servers(d: Draft) -> str | None:
    return d.error_handling.dlq.bootstrap_servers if d.error_handling else None


def _lacks_cluster(d: Draft, own: str | None, own_path: str) -> bool:
    """True when a Kafka client (a DLQ, a sink) has neither its own bootstrap servers
    nor a Kafka source whose cluster it can share.

    A Kafka source without servers has its own error; this one is for file sources.
    """
    if own is not None or d.extract is None or d.extract.source_type == "kafka":
        return False
    return d.ok(own_path, "extract.sourceType")


def _check_load(d: Draft, found: Findings) -> None:
    load = d.load
    if load is None:
        return
    params = load.connection_params
    if load.sink_type == "postgresql":
        if load.table is None and d.ok("load.table", "load.connectionParams.table"):
            found.error("load.table", "required when sinkType is 'postgresql'")
        if load.table_name and params.table and load.table_name != params.table:
            found.error(
                "load.connectionParams.table",
                f"'{params.table}' differs from load.table '{load.table_name}'; name one table",
            )
        parts = {
            "host": params.host,
            "port": params.port,
            "database": params.database,
            "user": params.user,
            "password": params.password,
        }
        given = [key for key, value in parts.items() if value is not None]
        if params.url is not None and given:
            found.error(
                "load.connectionParams.url",
                f"given together with {', '.join(given)}; give either url or the separate keys",
            )
        for key in ("host", "database"):
            path = f"load.connectionParams.{key}"
            if (
                params.url is None
                and parts[key] is None
                and d.ok(path, "load.connectionParams.url")
            ):
                found.error(path, "required when sinkType is 'postgresql' and no url is given")
    if load.sink_type == "kafka":
        if load.topic is None and d.ok("load.topic"):
            found.error("load.topic", "required when sinkType is 'kafka'")
        servers = "load.connectionParams.kafka.bootstrap.servers"
        if _lacks_cluster(d, load.bootstrap_servers, servers):
            found.error(servers, "required when sinkType is 'kafka' and the source is not Kafka")
    if load.write_mode == "upsert" and not load.upsert_keys and d.ok("load.upsertKeys"):
        found.error("load.upsertKeys", "required when writeMode is 'upsert'")


def _check_error_handling(d: Draft, found: Findings) -> None:
    handling = d.error_handling
    if handling is None:
        return
    retry, base = handling.retry, "errorHandlingConfig.retryConfig"
    delays = (f"{base}.maxDelaySeconds", f"{base}.initialDelaySeconds")
    if retry.max_delay_seconds < retry.initial_delay_seconds and d.ok(*delays):
        found.error(
            f"{base}.maxDelaySeconds",
            f"{retry.max_delay_seconds} is less than initialDelaySeconds "
            f"({retry.initial_delay_seconds})",
        )
    dlq, base = handling.dlq, "errorHandlingConfig.dlqConfig"
    if dlq.dlq_type == "kafka":
        if dlq.topic is None and d.ok(f"{base}.topic"):
            found.error(f"{base}.topic", "required when dlqType is 'kafka'")
        if _lacks_cluster(d, dlq.bootstrap_servers, _DLQ_SERVERS):
            found.error(
                f"{base}.bootstrapServers",
                "required when dlqType is 'kafka' and the source is not Kafka",
            )
    if dlq.dlq_type in ("logging", "none") and d.mode == "streaming" and d.ok(f"{base}.dlqType"):
        kept = "counted and logged" if dlq.dlq_type == "logging" else "counted"
        found.warnings.append(
            f"{base}.dlqType: with '{dlq.dlq_type}' a bad record, or one the sink refuses, "
            f"is {kept} but kept nowhere except the source (its topic or file); use 'kafka' or "
            "'postgresql' to keep a copy"
        )
    if dlq.table is not None and dlq.dlq_type != "postgresql" and d.ok(f"{base}.table"):
        found.warnings.append(
            f"{base}.table: ignored: only dlqType 'postgresql' writes a dead-letter table "
            f"(dlqType is '{dlq.dlq_type}')"
        )
    if dlq.dlq_type == "postgresql" and d.load is not None and d.load.sink_type != "postgresql":
        found.error(
            f"{base}.dlqType",
            "'postgresql' writes to the sink's database; it needs sinkType 'postgresql'",
        )


def _columns_after_transform(d: Draft) -> set[str] | None:
    """The columns quality rules may name, or None when any column may be right.

    After the aggregation only its output exists, plus the window column, which
    names the window. Without an aggregation, or with rules checked after extract
    only, the columns are the source's, which the config does not list.
    """
    quality, found = d.data_quality, d.aggregation() if d.transforms is not None else None
    if quality is None or found is None or not quality.validate_after_transform:
        return None
    agg = found[1]
    if not d.ok(f"{_DQ}.validateAfterTransform") or (agg.windowed and agg.window_column is None):
        return None  # unknown: a window without its column has an error of its own
    return set(agg.output_columns) | ({agg.window_column} if agg.window_column else set())


def _check_rule_parameters(
    rule_type: str, params: RuleParameters | None, base: str, found: Findings
) -> None:
    """A pattern rule needs a regex that compiles; an allowed_values rule a non-empty list."""
    if rule_type == "pattern":
        if params is None or params.regex is None:
            found.error(f"{base}.parameters", "a pattern rule needs 'regex'")
            return
        try:
            re.compile(params.regex)
        except re.error as exc:
            found.error(f"{base}.parameters.regex", f"not a regular expression: {exc}")
    elif rule_type == "allowed_values" and (params is None or not params.values):
        found.error(f"{base}.parameters", "an allowed_values rule needs a non-empty 'values' list")


def _check_data_quality(d: Draft, found: Findings) -> None:
    if d.data_quality is None:
        return
    available = _columns_after_transform(d)
    for index, rule in enumerate(d.data_quality.rules):
        base = f"{_DQ}.rules[{index}]"
        params = rule.parameters
        _check_rule_parameters(rule.rule_type, params, base, found)
        if rule.rule_type == "range":
            if params is None or (params.min is None and params.max is None):
                found.error(f"{base}.parameters", "a range rule needs 'min' and/or 'max'")
            elif params.min is not None and params.max is not None and params.min > params.max:
                found.error(
                    f"{base}.parameters.min", f"{params.min} is greater than max ({params.max})"
                )
        if available is None:
            continue
        listed = ", ".join(sorted(available))
        for column in (c for c in rule.columns if c not in available):
            found.error(
                f"{base}.columns", f"'{column}' is not produced by any stage; available: {listed}"
            )

"""Pipeline configs: the JSON format of the Spark ETL framework, parsed once into typed models.

Entry points::

    from streamproc.config import load_config, validate_config
    cfg = load_config("configs/streaming-example.json")   # raises ConfigError
    report = validate_config(path)                          # never raises for bad configs

Every problem is one line, ``<path>: <what is wrong>; <what is accepted>``, and all
of them are reported at once (CONFIG.md is the reference of the format).

Typed accessors the runtime uses (times are integer milliseconds; windows,
delays and state timeouts in event time, triggers and retries in wall time):

- ``cfg.pipeline_id``, ``cfg.mode`` ('batch' | 'streaming'), ``cfg.is_streaming``.
- ``cfg.extract``: ``source_type`` ('kafka' | 'file'), ``topic`` (``subscribe`` or
  ``topic``), ``bootstrap_servers``, ``starting_offsets`` ('earliest' | 'latest',
  default 'latest'), ``max_offsets_per_trigger``, ``security_params`` (the
  ``kafka.security.protocol`` / ``kafka.sasl.*`` / ``kafka.ssl.*`` settings), ``path``.
- ``cfg.aggregation`` (the aggregation transform's parameters, or None):
  ``group_by``, ``aggregations`` (:class:`Aggregation`: ``output``, ``column`` (None
  for ``*``), ``func``), ``window_column``, ``window_size_ms``, ``slide_ms`` (the size
  when not sliding), ``gap_duration_ms`` (session windows), ``windowed`` (fixed or
  session), ``sessions``, ``output_columns``, ``state_timeout_ms``;
  ``cfg.state_timeout_ms`` resolves the transform's or the query's.
- ``cfg.load``: ``sink_type``, ``table``, ``schema_name``, ``topic``, ``write_mode``,
  ``upsert_keys``, ``batchsize``, ``dsn()``; ``cfg.sink_bootstrap_servers``.
- ``cfg.streaming`` (:class:`StreamingConfig`, set in streaming mode):
  ``checkpoint_location``, ``query_name``, ``output_mode``, ``trigger``
  (:class:`Trigger`: ``kind``, ``interval_ms``), ``watermark`` (``event_time_column``,
  ``delay_ms``, ``event_time_format``, ``idle_timeout_ms``), ``enable_idempotence``,
  ``max_records_per_trigger``, ``max_files_per_trigger``, ``state_timeout_ms``,
  ``late_data`` (``strategy`` 'drop' | 'loganddrop' | 'sendtodlq' | 'separatestream',
  ``dlq_topic``, ``late_data_table``).
- ``cfg.error_handling``: ``retry`` (``strategy`` 'exponential' | 'fixed' | 'none',
  ``max_attempts``, ``initial_delay_seconds``, ``max_delay_seconds``,
  ``backoff_multiplier``, ``jitter``), ``circuit_breaker`` (``enabled``,
  ``failure_threshold``, ``reset_timeout_seconds``, ``half_open_max_attempts``),
  ``dlq`` (``dlq_type``, ``bootstrap_servers``, ``topic``, ``table``, ``buffer_size``,
  ``producer_config``), ``fail_fast``; ``cfg.dlq_bootstrap_servers``.
- ``cfg.data_quality``: ``enabled``, ``rules`` (``rule_type`` 'not_null' | 'range' |
  'unique' | 'pattern' | 'allowed_values', ``name``, ``columns``, ``severity``,
  ``parameters.min/max/regex/values``),
  ``on_failure``, ``validate_after_extract``, ``validate_after_transform``.
- ``cfg.logging``: ``log_level`` ('DEBUG' | 'INFO' | 'WARN' | 'ERROR'), ``include_metrics``,
  ``metrics_address``, ``metrics_port``.
"""

from streamproc.config.durations import format_duration_ms, parse_duration_ms
from streamproc.config.errors import ConfigError
from streamproc.config.loader import ValidationReport, load_config, validate_config
from streamproc.config.operations import (
    CircuitBreakerConfig,
    DataQualityConfig,
    DlqConfig,
    ErrorHandlingConfig,
    LoggingConfig,
    QualityRule,
    RetryConfig,
)
from streamproc.config.pipeline import PipelineConfig
from streamproc.config.schema import json_schema
from streamproc.config.sink import LoadConfig
from streamproc.config.source import ExtractConfig
from streamproc.config.streaming import LateDataConfig, StreamingConfig, Trigger, WatermarkConfig
from streamproc.config.transform import Aggregation, AggregationParams, TransformConfig

__all__ = [
    "Aggregation",
    "AggregationParams",
    "CircuitBreakerConfig",
    "ConfigError",
    "DataQualityConfig",
    "DlqConfig",
    "ErrorHandlingConfig",
    "ExtractConfig",
    "LateDataConfig",
    "LoadConfig",
    "LoggingConfig",
    "PipelineConfig",
    "QualityRule",
    "RetryConfig",
    "StreamingConfig",
    "TransformConfig",
    "Trigger",
    "ValidationReport",
    "WatermarkConfig",
    "format_duration_ms",
    "json_schema",
    "load_config",
    "parse_duration_ms",
    "validate_config",
]

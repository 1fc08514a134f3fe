"""The original framework's example config (reference/original-streaming-example.json).

It must load unchanged, and its one real mistake must be the only error: its range
rule checks ``total_value``, a column no stage produces once the aggregation has
turned it into ``total_value_sum``.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from streamproc.config import validate_config

# Verbatim copy of the reference file, so the suite runs from a fresh clone.
REFERENCE: dict[str, Any] = json.loads(
    r"""
{
  "pipelineId": "streaming-kafka-to-postgres",
  "name": "Streaming User Events Pipeline",
  "mode": "streaming",

  "extract": {
    "sourceType": "kafka",
    "topic": "user-events",
    "schemaName": "user-event",
    "connectionParams": {
      "kafka.bootstrap.servers": "localhost:9092",
      "subscribe": "user-events",
      "startingOffsets": "latest",
      "maxOffsetsPerTrigger": "10000"
    }
  },

  "transforms": [
    {
      "transformType": "aggregation",
      "parameters": {
        "groupByColumns": "user_id",
        "windowColumn": "event_time",
        "windowDuration": "10 minutes",
        "slideDuration": "5 minutes",
        "aggregations": "event_count:count,total_value:sum"
      }
    }
  ],

  "load": {
    "sinkType": "postgresql",
    "table": "user_event_aggregations",
    "schemaName": "user-summary",
    "writeMode": "append",
    "connectionParams": {
      "host": "localhost",
      "port": "5432",
      "database": "analytics",
      "user": "etl_user",
      "password": "changeme",
      "table": "user_event_aggregations",
      "batchsize": "1000"
    }
  },

  "streamingConfigJson": {
    "checkpointLocation": "/tmp/checkpoints/streaming-kafka-to-postgres",
    "queryName": "user-events-aggregation",
    "outputMode": "append",
    "triggerMode": "processingtime=5 seconds",
    "enableIdempotence": true,
    "watermark": {
      "eventTimeColumn": "event_time",
      "delayThreshold": "10 minutes"
    },
    "lateDataConfig": {
      "strategy": "sendtodlq",
      "dlqTopic": "late-user-events"
    }
  },

  "errorHandlingConfig": {
    "retryConfig": {
      "strategy": "exponential",
      "maxAttempts": 3,
      "initialDelaySeconds": 5,
      "maxDelaySeconds": 60,
      "backoffMultiplier": 2.0,
      "jitter": true
    },
    "circuitBreakerConfig": {
      "enabled": true,
      "failureThreshold": 5,
      "resetTimeoutSeconds": 60,
      "halfOpenMaxAttempts": 1
    },
    "dlqConfig": {
      "dlqType": "kafka",
      "bootstrapServers": "localhost:9092",
      "topic": "failed-events-dlq",
      "bufferSize": 100
    },
    "failFast": false
  },

  "dataQualityConfig": {
    "enabled": true,
    "validateAfterExtract": false,
    "validateAfterTransform": true,
    "onFailure": "warn",
    "rules": [
      {
        "ruleType": "not_null",
        "name": "RequiredFieldsRule",
        "columns": ["user_id", "event_time"],
        "severity": "error"
      },
      {
        "ruleType": "range",
        "name": "EventValueValidation",
        "columns": ["total_value"],
        "severity": "warning",
        "parameters": {
          "min": 0,
          "max": 1000000
        }
      }
    ]
  },

  "performanceConfig": {
    "shufflePartitions": 200,
    "broadcastThreshold": 10485760
  },

  "loggingConfig": {
    "logLevel": "INFO",
    "includeMetrics": true
  }
}
"""
)

SPARK_WARNING = (
    "Spark-only keys accepted and ignored (no effect in streamproc): "
    "performanceConfig.shufflePartitions, performanceConfig.broadcastThreshold"
)


def fixed() -> dict[str, Any]:
    config = copy.deepcopy(REFERENCE)
    config["dataQualityConfig"]["rules"][1]["columns"] = ["total_value_sum"]
    return config


def test_reference_gives_exactly_the_one_real_error() -> None:
    report = validate_config(REFERENCE, env={})
    assert report.errors == [
        "dataQualityConfig.rules[1].columns: 'total_value' is not produced by any stage; "
        "available: event_count_count, event_time, total_value_sum, user_id, window_end, "
        "window_start"
    ]
    assert report.warnings == [SPARK_WARNING]
    assert report.config is None


def test_reference_with_the_rule_fixed_is_valid() -> None:
    report = validate_config(fixed(), env={})
    assert report.errors == []
    assert report.warnings == [SPARK_WARNING]


def test_reference_values_parse_to_typed_fields() -> None:
    cfg = validate_config(fixed(), env={}).config
    assert cfg is not None
    assert (cfg.pipeline_id, cfg.mode) == ("streaming-kafka-to-postgres", "streaming")
    extract = cfg.extract
    assert (extract.source_type, extract.topic) == ("kafka", "user-events")
    assert (extract.bootstrap_servers, extract.starting_offsets) == ("localhost:9092", "latest")
    assert extract.max_offsets_per_trigger == 10_000
    agg = cfg.aggregation
    assert agg is not None
    assert agg.group_by == ("user_id",)
    assert (agg.window_column, agg.window_size_ms, agg.slide_ms) == ("event_time", 600_000, 300_000)
    assert [a.output for a in agg.aggregations] == ["event_count_count", "total_value_sum"]
    load = cfg.load
    assert (load.sink_type, load.table, load.write_mode) == (
        "postgresql",
        "user_event_aggregations",
        "append",
    )
    assert load.schema_name == "user-summary"  # the record schema's name, not a SQL schema
    assert load.batchsize == 1000
    assert load.dsn() == "postgresql://etl_user:changeme@localhost:5432/analytics"
    streaming = cfg.streaming
    assert streaming is not None and streaming.watermark is not None
    assert (streaming.trigger.kind, streaming.trigger.interval_ms) == ("processingtime", 5000)
    assert streaming.watermark.delay_ms == 600_000
    assert streaming.late_data.strategy == "sendtodlq"
    assert streaming.late_data.dlq_topic == "late-user-events"
    assert cfg.error_handling.dlq.topic == "failed-events-dlq"
    assert cfg.data_quality.rules[0].rule_type == "not_null"
    assert cfg.logging.log_level == "INFO"


def test_password_is_not_shown_by_repr() -> None:
    cfg = validate_config(fixed(), env={}).config
    assert cfg is not None
    assert "changeme" not in repr(cfg)

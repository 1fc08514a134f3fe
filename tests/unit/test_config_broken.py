"""Broken configs: each case is a small mutation of one valid base config, and the test
asserts the FULL list of errors, line by line, so a message can neither change nor
multiply unnoticed."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from streamproc import cli
from streamproc.config import ConfigError, load_config, validate_config

DELETE = object()  # a change that removes the key

BASE: dict[str, Any] = {
    "pipelineId": "orders",
    "mode": "streaming",
    "extract": {
        "sourceType": "kafka",
        "topic": "orders",
        "connectionParams": {"kafka.bootstrap.servers": "localhost:9092"},
    },
    "transforms": [
        {
            "transformType": "aggregation",
            "parameters": {
                "groupByColumns": "user_id",
                "windowColumn": "event_time",
                "windowDuration": "10 minutes",
                "aggregations": "amount:sum,*:count",
            },
        }
    ],
    "load": {
        "sinkType": "postgresql",
        "table": "order_totals",
        "connectionParams": {
            "host": "localhost",
            "port": "5432",
            "database": "analytics",
            "user": "etl",
            "password": "${ORDERS_PG_PASSWORD:-}",
        },
    },
    "streamingConfigJson": {
        "checkpointLocation": ".checkpoints/orders",
        "queryName": "orders",
        "outputMode": "append",
        "triggerMode": "processingtime=5 seconds",
        "watermark": {"eventTimeColumn": "event_time", "delayThreshold": "5 minutes"},
        "lateDataConfig": {"strategy": "drop"},
    },
    "errorHandlingConfig": {
        "retryConfig": {"strategy": "exponential", "maxAttempts": 3},
        "circuitBreakerConfig": {"enabled": True, "failureThreshold": 5},
        "dlqConfig": {"dlqType": "kafka", "topic": "orders-dlq"},
    },
    "dataQualityConfig": {
        "enabled": True,
        "rules": [
            {"ruleType": "not_null", "name": "Keys", "columns": ["user_id", "event_time"]},
            {
                "ruleType": "range",
                "name": "Amounts",
                "columns": ["amount_sum"],
                "parameters": {"min": 0, "max": 1000},
            },
        ],
    },
    "loggingConfig": {"logLevel": "INFO", "includeMetrics": True},
}

P = "transforms[0].parameters"
S = "streamingConfigJson"
DURATION = "expected '<number> <unit>' with unit ms, second(s), minute(s), hour(s), day(s)"
POSITIVE = "is not positive; expected a duration greater than 0"
COLUMN_RULE = "letters, digits and '_' (not starting with a digit), at most 63 characters"
TABLE_RULE = (
    "expected name or schema.name, each of lower-case letters, digits and '_' "
    "(not starting with a digit), at most 63 characters"
)
TOPIC_RULE = "expected 1-249 characters from letters, digits, '.', '_' and '-'"
NAME_IT = "name it with '<name>=<column>:<function>'"
AVAILABLE = "available: amount_sum, count, event_time, user_id, window_end, window_start"
FUNCS = "sum, avg, count, min, max, first, last"


def mutate(changes: dict[tuple[Any, ...], Any]) -> dict[str, Any]:
    """A deep copy of BASE with each path set to its value (or removed for DELETE)."""
    config = copy.deepcopy(BASE)
    for path, value in changes.items():
        parent = config
        for part in path[:-1]:
            parent = parent[part]
        if value is DELETE:
            del parent[path[-1]]
        else:
            parent[path[-1]] = value
    return config


def case(case_id: str, changes: dict[tuple[Any, ...], Any], *errors: str) -> Any:
    return pytest.param(changes, list(errors), id=case_id)


CASES = [
    # --- durations -------------------------------------------------------------------
    case(
        "trigger-bad-unit",
        {(S, "triggerMode"): "processingtime=5 secnds"},
        f"{S}.triggerMode: 'processingtime=5 secnds' is not a duration; {DURATION}",
    ),
    case(
        "window-duration-typo",
        {("transforms", 0, "parameters", "windowDuration"): "10 minuts"},
        f"{P}.windowDuration: '10 minuts' is not a duration; {DURATION}",
    ),
    case(
        "window-duration-zero",
        {("transforms", 0, "parameters", "windowDuration"): "0 minutes"},
        f"{P}.windowDuration: '0 minutes' {POSITIVE}",
    ),
    case(
        "delay-negative",
        {(S, "watermark", "delayThreshold"): "-5 minutes"},
        f"{S}.watermark.delayThreshold: '-5 minutes' {POSITIVE}",
    ),
    case(
        "slide-fraction-of-ms",
        {("transforms", 0, "parameters", "slideDuration"): "0.5 ms"},
        f"{P}.slideDuration: '0.5 ms' is not a whole number of milliseconds",
    ),
    case(
        "trigger-zero-interval",
        {(S, "triggerMode"): "processing_time=0 seconds"},
        f"{S}.triggerMode: 'processing_time=0 seconds' {POSITIVE}",
    ),
    case(
        "trigger-unknown",
        {(S, "triggerMode"): "sometimes"},
        f"{S}.triggerMode: 'sometimes' is not a trigger; expected continuous, once, "
        "availablenow or processingtime=<duration>",
    ),
    case(
        "duration-as-number",
        {("transforms", 0, "parameters", "windowDuration"): 600},
        f"{P}.windowDuration: expected a string, got number 600",
    ),
    case(
        "idle-timeout-not-duration",
        {(S, "watermark", "idleTimeout"): "soon"},
        f"{S}.watermark.idleTimeout: 'soon' is not a duration; {DURATION}",
    ),
    # --- unknown keys, at several depths ---------------------------------------------
    case(
        "unknown-top-level",
        {("streamingConfig",): {}},
        "streamingConfig: unknown key; did you mean 'streamingConfigJson'?",
    ),
    case(
        "unknown-streaming-key",
        {(S, "outputMod"): "append"},
        f"{S}.outputMod: unknown key; did you mean 'outputMode'?",
    ),
    case(
        "unknown-watermark-key",
        {(S, "watermark", "delayThresold"): "1 minute"},
        f"{S}.watermark.delayThresold: unknown key; did you mean 'delayThreshold'?",
    ),
    case(
        "unknown-parameter-prefix",
        {("transforms", 0, "parameters", "groupBy"): "user_id"},
        f"{P}.groupBy: unknown key; did you mean 'groupByColumns'?",
    ),
    case(
        "unknown-kafka-param",
        {("extract", "connectionParams", "kafka.bootstrap.server"): "localhost:9092"},
        "extract.connectionParams.kafka.bootstrap.server: unknown key; "
        "did you mean 'kafka.bootstrap.servers'?",
    ),
    case(
        "unknown-retry-key",
        {("errorHandlingConfig", "retryConfig", "maxAttempt"): 3},
        "errorHandlingConfig.retryConfig.maxAttempt: unknown key; did you mean 'maxAttempts'?",
    ),
    case(
        "unknown-rule-key",
        {("dataQualityConfig", "rules", 0, "column"): "user_id"},
        "dataQualityConfig.rules[0].column: unknown key; did you mean 'columns'?",
    ),
    case(
        "unknown-sink-param",
        {("load", "connectionParams", "passwd"): "x"},
        "load.connectionParams.passwd: unknown key; did you mean 'password'?",
    ),
    case(
        "unknown-key-nothing-close",
        {(S, "zzz"): 1},
        f"{S}.zzz: unknown key; accepted keys: checkpointLocation, enableIdempotence, "
        "lateDataConfig, maxFilesPerTrigger, maxRecordsPerTrigger, onFileDeleted, onFileTruncated, "
        "outputMode, queryName, "
        "stateTimeout, triggerMode, watermark",
    ),
    case(
        "snake-case-key",
        {(S, "checkpoint_location"): ".cp", (S, "checkpointLocation"): DELETE},
        f"{S}.checkpointLocation: required key is missing",
        f"{S}.checkpoint_location: unknown key; did you mean 'checkpointLocation'?",
    ),
    # --- the output-mode matrix ------------------------------------------------------
    case(
        "append-non-windowed",
        {
            ("transforms", 0, "parameters", "windowColumn"): DELETE,
            ("transforms", 0, "parameters", "windowDuration"): DELETE,
            ("dataQualityConfig", "rules", 0, "columns"): ["user_id"],
        },
        f"{S}.outputMode: 'append' with a non-windowed aggregation never finishes a row; "
        "use 'update' or 'complete', or give windowColumn and windowDuration",
    ),
    case(
        "append-without-watermark",
        {(S, "watermark"): DELETE},
        f"{S}.watermark: required by outputMode 'append' with an aggregation "
        "(a row is written once, when the watermark closes its window)",
    ),
    case(
        "complete-without-aggregation",
        {("transforms",): [], (S, "outputMode"): "complete"},
        f"{S}.outputMode: 'complete' needs an aggregation transform (it rewrites its table)",
    ),
    # --- windows and the watermark ---------------------------------------------------
    case(
        "window-column-differs-from-watermark",
        {
            ("transforms", 0, "parameters", "windowColumn"): "created_at",
            ("dataQualityConfig", "rules", 0, "columns"): ["user_id"],
        },
        f"{P}.windowColumn: 'created_at' differs from {S}.watermark.eventTimeColumn "
        "'event_time'; windows are over event time, so both must name the same column",
    ),
    case(
        "slide-longer-than-window",
        {("transforms", 0, "parameters", "slideDuration"): "15 minutes"},
        f"{P}.slideDuration: 15 minutes is longer than windowDuration (10 minutes); "
        "expected a slide no longer than the window",
    ),
    case(
        "window-column-without-duration",
        {("transforms", 0, "parameters", "windowDuration"): DELETE},
        f"{P}.windowDuration: required when windowColumn is set",
    ),
    case(
        "window-duration-without-column",
        {("transforms", 0, "parameters", "windowColumn"): DELETE},
        f"{P}.windowColumn: required when windowDuration is set",
    ),
    # --- late data -------------------------------------------------------------------
    case(
        "sendtodlq-without-topic",
        {(S, "lateDataConfig", "strategy"): "sendToDLQ"},
        f"{S}.lateDataConfig.dlqTopic: required when strategy is 'sendtodlq'",
    ),
    case(
        "separatestream-without-table",
        {(S, "lateDataConfig", "strategy"): "separate_stream"},
        f"{S}.lateDataConfig.lateDataTable: required when strategy is 'separatestream'",
    ),
    case(
        "separatestream-with-kafka-sink",
        {
            (S, "lateDataConfig"): {"strategy": "separate", "lateDataTable": "late_orders"},
            ("load",): {"sinkType": "kafka", "topic": "order-totals"},
        },
        f"{S}.lateDataConfig.strategy: 'separatestream' writes lateDataTable in the sink's "
        "database; it needs sinkType 'postgresql'",
    ),
    # --- enums -----------------------------------------------------------------------
    case(
        "bad-late-strategy",
        {(S, "lateDataConfig", "strategy"): "retry"},
        f"{S}.lateDataConfig.strategy: 'retry' is not a valid late data strategy; "
        "expected one of drop, loganddrop, sendtodlq, separatestream",
    ),
    case(
        "bad-output-mode",
        {(S, "outputMode"): "upsert"},
        f"{S}.outputMode: 'upsert' is not a valid output mode; "
        "expected one of append, update, complete",
    ),
    case(
        "bad-mode",
        {("mode",): "realtime"},
        "mode: 'realtime' is not a valid mode; expected one of batch, streaming",
    ),
    case(
        "bad-starting-offsets",
        {("extract", "connectionParams", "startingOffsets"): "beginning"},
        "extract.connectionParams.startingOffsets: 'beginning' is not a valid starting offset; "
        "expected one of earliest, latest",
    ),
    case(
        "bad-write-mode",
        {("load", "writeMode"): "merge"},
        "load.writeMode: 'merge' is not a valid write mode; "
        "expected one of append, overwrite, upsert",
    ),
    case(
        "bad-retry-strategy",
        {("errorHandlingConfig", "retryConfig", "strategy"): "linear"},
        "errorHandlingConfig.retryConfig.strategy: 'linear' is not a valid retry strategy; "
        "expected one of exponential, fixed, none",
    ),
    case(
        "bad-rule-type",
        {("dataQualityConfig", "rules", 0, "ruleType"): "regex"},
        "dataQualityConfig.rules[0].ruleType: 'regex' is not a valid rule type; "
        "expected one of not_null, range, unique, pattern, allowed_values",
    ),
    case(
        "bad-severity",
        {("dataQualityConfig", "rules", 0, "severity"): "fatal"},
        "dataQualityConfig.rules[0].severity: 'fatal' is not a valid severity; "
        "expected one of error, warning, info",
    ),
    case(
        "bad-on-failure",
        {("dataQualityConfig", "onFailure"): "retry"},
        "dataQualityConfig.onFailure: 'retry' is not a valid on-failure action; "
        "expected one of abort, continue, warn",
    ),
    case(
        "bad-event-time-format",
        {(S, "watermark", "eventTimeFormat"): "unix"},
        f"{S}.watermark.eventTimeFormat: 'unix' is not a valid event time format; "
        "expected one of auto, iso8601, epoch_millis, epoch_seconds",
    ),
    case(
        "bad-log-level",
        {("loggingConfig", "logLevel"): "TRACE"},
        "loggingConfig.logLevel: 'TRACE' is not a valid log level; "
        "expected one of DEBUG, INFO, WARN, ERROR",
    ),
    # --- types the original knew but streamproc does not implement ------------------
    case(
        "source-postgresql",
        {("extract", "sourceType"): "postgresql"},
        "extract.sourceType: 'postgresql' is not a supported source type; implemented: kafka, file",
    ),
    case(
        "source-s3",
        {("extract", "sourceType"): "S3"},
        "extract.sourceType: 'S3' is not a supported source type; implemented: kafka, file",
    ),
    case(
        "transform-join",
        {("transforms", 0): {"transformType": "join", "parameters": {"rightTable": "users"}}},
        "transforms[0].transformType: 'join' is not a supported transform type; "
        "implemented: aggregation",
    ),
    case(
        "transform-windowing",
        {("transforms", 0, "transformType"): "windowing"},
        "transforms[0].transformType: 'windowing' is not a supported transform type; "
        "implemented: aggregation",
    ),
    case(
        "sink-mysql",
        {("load", "sinkType"): "mysql"},
        "load.sinkType: 'mysql' is not a supported sink type; implemented: postgresql, kafka",
    ),
    case(
        "dlq-s3",
        {("errorHandlingConfig", "dlqConfig", "dlqType"): "s3"},
        "errorHandlingConfig.dlqConfig.dlqType: 's3' is not a supported DLQ type; "
        "implemented: kafka, logging, none, postgresql",
    ),
    # --- aggregations ----------------------------------------------------------------
    case(
        "aggregation-unknown-function",
        {("transforms", 0, "parameters", "aggregations"): "amount:median"},
        f"{P}.aggregations: 'amount:median' uses unknown function 'median'; "
        f"expected one of {FUNCS}",
    ),
    case(
        "aggregation-no-function",
        {("transforms", 0, "parameters", "aggregations"): "amount:sum,amount"},
        f"{P}.aggregations: 'amount' is not '<column>:<function>' or '<name>=<column>:<function>'",
    ),
    case(
        "aggregation-empty-item",
        {("transforms", 0, "parameters", "aggregations"): "amount:sum,"},
        f"{P}.aggregations: 'amount:sum,' has an empty item; expected '<column>:<function>' "
        "or '<name>=<column>:<function>' items",
    ),
    case(
        "aggregation-duplicate-output",
        {("transforms", 0, "parameters", "aggregations"): "amount:sum,amount:sum"},
        f"{P}.aggregations: output column 'amount_sum' is produced twice; {NAME_IT}",
    ),
    case(
        "aggregation-duplicate-named-output",
        {("transforms", 0, "parameters", "aggregations"): "total=amount:sum,total=*:count"},
        f"{P}.aggregations: output column 'total' is produced twice; {NAME_IT}",
    ),
    case(
        "aggregation-star-sum",
        {("transforms", 0, "parameters", "aggregations"): "*:sum"},
        f"{P}.aggregations: '*:sum': '*' only goes with count ('*:count' counts records)",
    ),
    case(
        "aggregation-output-is-group-by",
        {("transforms", 0, "parameters", "aggregations"): "user_id=amount:sum,*:count"},
        f"{P}.aggregations: output column 'user_id' is also a group-by or window column; {NAME_IT}",
        "dataQualityConfig.rules[1].columns: 'amount_sum' is not produced by any stage; "
        "available: count, event_time, user_id, window_end, window_start",
    ),
    case(
        "group-by-empty",
        {("transforms", 0, "parameters", "groupByColumns"): ""},
        f"{P}.groupByColumns: '' names no column; expected comma-separated names",
    ),
    case(
        "two-aggregations",
        {("transforms",): [BASE["transforms"][0], BASE["transforms"][0]]},
        "transforms[1]: only one aggregation transform is supported; transforms[0] is one already",
    ),
    # --- environment -----------------------------------------------------------------
    case(
        "env-unset",
        {("load", "connectionParams", "password"): "${PG_PASSWORD}"},
        "load.connectionParams.password: environment variable 'PG_PASSWORD' is not set "
        "(and no ${PG_PASSWORD:-default} given)",
    ),
    case(
        "env-unset-typed",
        {("load", "connectionParams", "port"): "${PG_PORT}"},
        "load.connectionParams.port: environment variable 'PG_PORT' is not set "
        "(and no ${PG_PORT:-default} given)",
    ),
    case(
        "env-malformed",
        {("load", "connectionParams", "password"): "${PG PASSWORD}"},
        "load.connectionParams.password: '${PG PASSWORD}' holds a malformed reference; "
        "expected ${NAME} or ${NAME:-default} with NAME of letters, digits and '_'",
    ),
    # --- identifiers and topics --------------------------------------------------------
    case(
        "table-sql-injection",
        {("load", "table"): "users; DROP TABLE x"},
        f"load.table: 'users; DROP TABLE x' is not a valid table name; {TABLE_RULE}",
    ),
    case(
        "table-three-parts",
        {("load", "table"): "db.analytics.totals"},
        f"load.table: 'db.analytics.totals' is not a valid table name; {TABLE_RULE}",
    ),
    case(
        "table-mixed-case",
        # Created quoted ("twin_table_B"), psql's select * from twin_table_B found nothing.
        {("load", "table"): "twin_table_B"},
        "load.table: 'twin_table_B' has upper-case letters, which PostgreSQL folds to lower "
        "case in SQL written without quotes (select * from twin_table_B reads twin_table_b), "
        "and streamproc would create it quoted, case-sensitive; use 'twin_table_b'",
    ),
    case(
        "late-table-schema-mixed-case",
        {(S, "lateDataConfig"): {"strategy": "separatestream", "lateDataTable": "Analytics.late"}},
        f"{S}.lateDataConfig.lateDataTable: 'Analytics.late' has upper-case letters, which "
        "PostgreSQL folds to lower case in SQL written without quotes (select * from "
        "Analytics.late reads analytics.late), and streamproc would create it quoted, "
        "case-sensitive; use 'analytics.late'",
    ),
    case(
        "table-too-long",
        {("load", "table"): "t" * 64},
        f"load.table: '{'t' * 64}' is not a valid table name; {TABLE_RULE}",
    ),
    case(
        "group-by-sql-injection",
        {("transforms", 0, "parameters", "groupByColumns"): "user_id; DROP TABLE x"},
        f"{P}.groupByColumns: 'user_id; DROP TABLE x' is not a valid column name; "
        f"expected {COLUMN_RULE}",
    ),
    case(
        "window-column-with-space",
        {("transforms", 0, "parameters", "windowColumn"): "event time"},
        f"{P}.windowColumn: 'event time' is not a valid column name; expected {COLUMN_RULE}",
    ),
    case(
        "late-table-quote",
        {(S, "lateDataConfig"): {"strategy": "separatestream", "lateDataTable": 'late"x'}},
        f"{S}.lateDataConfig.lateDataTable: 'late\"x' is not a valid table name; {TABLE_RULE}",
    ),
    case(
        "topic-with-space",
        {("extract", "topic"): "orders topic"},
        f"extract.topic: 'orders topic' is not a valid Kafka topic name; {TOPIC_RULE}",
    ),
    case(
        "topic-with-slash",
        {("errorHandlingConfig", "dlqConfig", "topic"): "dlq/orders"},
        "errorHandlingConfig.dlqConfig.topic: 'dlq/orders' is not a valid Kafka topic name; "
        f"{TOPIC_RULE}",
    ),
    case(
        "topic-with-newline",
        {("extract", "topic"): "orders\nDROP"},
        f"extract.topic: 'orders\\nDROP' is not a valid Kafka topic name; {TOPIC_RULE}",
    ),
    case(
        "topic-dotdot",
        {("extract", "topic"): ".."},
        f"extract.topic: '..' is not a valid Kafka topic name; {TOPIC_RULE}",
    ),
    case(
        "pipeline-id-with-space",
        {("pipelineId",): "my pipeline"},
        "pipelineId: 'my pipeline' is not a valid pipeline id; expected 1-128 characters "
        "from letters, digits, '.', '_' and '-', starting with a letter or digit",
    ),
    # --- wrong JSON types ------------------------------------------------------------
    case(
        "string-for-object",
        {(S,): "yes"},
        f"{S}: expected an object, got string 'yes'",
    ),
    case(
        "string-for-parameters",
        {("transforms", 0, "parameters"): "groupByColumns=user_id"},
        f"{P}: expected an object, got string 'groupByColumns=user_id'",
    ),
    case(
        "list-for-string",
        {("extract", "topic"): ["a", "b"]},
        'extract.topic: expected a string, got list ["a", "b"]',
    ),
    case(
        "object-for-list",
        {("dataQualityConfig", "rules"): {}},
        "dataQualityConfig.rules: expected a list, got object {}",
    ),
    case(
        "string-for-columns",
        {("dataQualityConfig", "rules", 0, "columns"): "user_id"},
        "dataQualityConfig.rules[0].columns: expected a list of column names, got string 'user_id'",
    ),
    case(
        "bad-boolean",
        {("errorHandlingConfig", "failFast"): "maybe"},
        "errorHandlingConfig.failFast: 'maybe' is not a boolean; expected true or false",
    ),
    case(
        "non-numeric-max-records",
        {(S, "maxRecordsPerTrigger"): "lots"},
        f"{S}.maxRecordsPerTrigger: 'lots' is not a whole number; expected an integer >= 1 "
        "(a number or a string holding one)",
    ),
    case(
        "zero-max-records",
        {(S, "maxRecordsPerTrigger"): 0},
        f"{S}.maxRecordsPerTrigger: 0 is out of range; expected an integer >= 1",
    ),
    case(
        "port-out-of-range",
        {("load", "connectionParams", "port"): "70000"},
        "load.connectionParams.port: '70000' is out of range; expected an integer from 1 to 65535",
    ),
    # --- data quality ----------------------------------------------------------------
    case(
        "range-min-above-max",
        {("dataQualityConfig", "rules", 1, "parameters"): {"min": 2000, "max": 1000}},
        "dataQualityConfig.rules[1].parameters.min: 2000 is greater than max (1000)",
    ),
    case(
        "range-without-bounds",
        {("dataQualityConfig", "rules", 1, "parameters"): DELETE},
        "dataQualityConfig.rules[1].parameters: a range rule needs 'min' and/or 'max'",
    ),
    case(
        "pattern-without-regex",
        {("dataQualityConfig", "rules", 0, "ruleType"): "pattern"},
        "dataQualityConfig.rules[0].parameters: a pattern rule needs 'regex'",
    ),
    case(
        "pattern-regex-does-not-compile",
        {
            ("dataQualityConfig", "rules", 0, "ruleType"): "pattern",
            ("dataQualityConfig", "rules", 0, "parameters"): {"regex": "u[0-9"},
        },
        "dataQualityConfig.rules[0].parameters.regex: not a regular expression: "
        "unterminated character set at position 1",
    ),
    case(
        "allowed-values-empty",
        {
            ("dataQualityConfig", "rules", 0, "ruleType"): "allowed_values",
            ("dataQualityConfig", "rules", 0, "parameters"): {"values": []},
        },
        "dataQualityConfig.rules[0].parameters: an allowed_values rule needs a non-empty "
        "'values' list",
    ),
    case(
        "rule-empty-columns",
        {("dataQualityConfig", "rules", 0, "columns"): []},
        "dataQualityConfig.rules[0].columns: empty list; expected at least one column name",
    ),
    case(
        "rule-column-not-produced",
        {("dataQualityConfig", "rules", 1, "columns"): ["amount"]},
        f"dataQualityConfig.rules[1].columns: 'amount' is not produced by any stage; {AVAILABLE}",
    ),
    # --- retry and circuit breaker ---------------------------------------------------
    case(
        "retry-zero-attempts",
        {("errorHandlingConfig", "retryConfig", "maxAttempts"): 0},
        "errorHandlingConfig.retryConfig.maxAttempts: 0 is out of range; expected an integer >= 1",
    ),
    case(
        "retry-negative-multiplier",
        {("errorHandlingConfig", "retryConfig", "backoffMultiplier"): -1},
        "errorHandlingConfig.retryConfig.backoffMultiplier: -1 is out of range; "
        "expected a number > 0",
    ),
    case(
        "retry-max-below-initial",
        {("errorHandlingConfig", "retryConfig", "maxDelaySeconds"): 1},
        "errorHandlingConfig.retryConfig.maxDelaySeconds: 1 is less than initialDelaySeconds (5)",
    ),
    case(
        "breaker-threshold-not-number",
        {("errorHandlingConfig", "circuitBreakerConfig", "failureThreshold"): "many"},
        "errorHandlingConfig.circuitBreakerConfig.failureThreshold: 'many' is not a whole "
        "number; expected an integer >= 1 (a number or a string holding one)",
    ),
    # --- other relations -------------------------------------------------------------
    case(
        "streaming-without-section",
        {(S,): DELETE},
        f"{S}: required when mode is 'streaming'",
    ),
    case(
        "streaming-without-query-name",
        {(S, "queryName"): DELETE},
        f"{S}.queryName: required key is missing",
    ),
    case(
        "dlq-kafka-without-topic",
        {("errorHandlingConfig", "dlqConfig", "topic"): DELETE},
        "errorHandlingConfig.dlqConfig.topic: required when dlqType is 'kafka'",
    ),
    case(
        "kafka-source-without-topic",
        {("extract", "topic"): DELETE},
        "extract.topic: required when sourceType is 'kafka' "
        "(or give extract.connectionParams.subscribe)",
    ),
    case(
        "kafka-source-without-servers",
        {("extract", "connectionParams"): {}},
        "extract.connectionParams.kafka.bootstrap.servers: required when sourceType is 'kafka'",
    ),
    case(
        "subscribe-differs-from-topic",
        {("extract", "connectionParams", "subscribe"): "payments"},
        "extract.connectionParams.subscribe: 'payments' differs from extract.topic 'orders'; "
        "name one topic",
    ),
    case(
        "bootstrap-without-port",
        {("extract", "connectionParams", "kafka.bootstrap.servers"): "localhost"},
        "extract.connectionParams.kafka.bootstrap.servers: 'localhost' is not a list of "
        "host:port; expected e.g. 'localhost:9092' or 'b1:9092,b2:9092'",
    ),
    case(
        "url-and-parts",
        {("load", "connectionParams", "url"): "postgresql://etl@db/analytics"},
        "load.connectionParams.url: given together with host, port, database, user, password; "
        "give either url or the separate keys",
    ),
    case(
        "url-not-postgres",
        {("load", "connectionParams"): {"url": "mysql://etl:hunter2@db/analytics"}},
        "load.connectionParams.url: 'mysql://etl:***@db/analytics' is not a postgresql:// URL; "
        "expected postgresql://user:password@host:port/database",
    ),
    case(
        "postgres-sink-without-table",
        {("load", "table"): DELETE},
        "load.table: required when sinkType is 'postgresql'",
    ),
    case(
        "upsert-without-keys",
        {("load", "writeMode"): "upsert"},
        "load.upsertKeys: required when writeMode is 'upsert'",
    ),
    case(
        "missing-pipeline-id",
        {("pipelineId",): DELETE},
        "pipelineId: required key is missing",
    ),
    # --- several errors in one run ---------------------------------------------------
    case(
        "two-errors-duration-and-key",
        {(S, "triggerMode"): "processingtime=5 secnds", ("load", "tabel"): "x"},
        "load.tabel: unknown key; did you mean 'table'?",
        f"{S}.triggerMode: 'processingtime=5 secnds' is not a duration; {DURATION}",
    ),
    case(
        "structural-and-cross-field-together",
        {
            (S, "outputMode"): "sometimes",
            (S, "lateDataConfig", "strategy"): "dlq",
            ("transforms", 0, "parameters", "slideDuration"): "1 hour",
        },
        f"{S}.outputMode: 'sometimes' is not a valid output mode; "
        "expected one of append, update, complete",
        f"{P}.slideDuration: 1 hour is longer than windowDuration (10 minutes); "
        "expected a slide no longer than the window",
        f"{S}.lateDataConfig.dlqTopic: required when strategy is 'sendtodlq'",
    ),
]


@pytest.mark.parametrize(("changes", "errors"), CASES)
def test_broken_config_reports_exactly(
    changes: dict[tuple[Any, ...], Any], errors: list[str]
) -> None:
    report = validate_config(mutate(changes), env={})
    assert report.errors == errors
    assert report.config is None
    assert not report.ok


def test_base_config_is_valid() -> None:
    report = validate_config(BASE, env={})
    assert report.errors == []
    assert report.warnings == []


def test_load_config_raises_with_every_error() -> None:
    config = mutate({(S, "outputMod"): "append", (S, "triggerMode"): "processingtime=5 secnds"})
    with pytest.raises(ConfigError) as raised:
        load_config(config, env={})
    assert raised.value.errors == [
        f"{S}.triggerMode: 'processingtime=5 secnds' is not a duration; {DURATION}",
        f"{S}.outputMod: unknown key; did you mean 'outputMode'?",
    ]
    assert str(raised.value) == "\n".join(raised.value.errors)


def test_at_least_45_cases() -> None:
    assert len(CASES) >= 45


def test_every_message_is_one_line_without_pydantic_noise() -> None:
    for param in CASES:
        changes, _ = param.values
        for line in validate_config(mutate(changes), env={}).errors:
            assert "\n" not in line
            assert "pydantic" not in line.lower()
            assert "https://" not in line


@pytest.mark.parametrize(("changes", "errors"), CASES)
def test_cli_validate_prints_each_error_on_one_line(
    changes: dict[tuple[Any, ...], Any],
    errors: list[str],
    tmp_path: Any,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("PG_PASSWORD", "ORDERS_PG_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(mutate(changes)))
    assert cli.main(["validate", str(path)]) == 1
    stderr = capsys.readouterr().err.splitlines()
    assert stderr == [f"{path}: {line}" for line in errors]


def test_console_script_validate_exit_codes(tmp_path: Any) -> None:
    good = tmp_path / "good.json"
    good.write_text(json.dumps(BASE))
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(mutate({(S, "triggerMode"): "processingtime=5 secnds"})))
    exe = Path(sys.executable).with_name("streamproc")
    ok = subprocess.run([str(exe), "validate", str(good)], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    failed = subprocess.run(
        [str(exe), "validate", str(good), str(bad)], capture_output=True, text=True
    )
    assert failed.returncode == 1
    assert failed.stderr.splitlines() == [
        f"{bad}: {S}.triggerMode: 'processingtime=5 secnds' is not a duration; {DURATION}",
    ]


def test_pattern_and_allowed_values_rules_plan_as_written() -> None:
    # After extract the rules see the source's columns, which the config does not list.
    config = mutate(
        {
            ("dataQualityConfig", "validateAfterExtract"): True,
            ("dataQualityConfig", "validateAfterTransform"): False,
            ("dataQualityConfig", "rules"): [
                {
                    "ruleType": "Pattern",
                    "name": "ids",
                    "columns": ["user_id"],
                    "parameters": {"regex": "u[0-9]+"},
                },
                {
                    "ruleType": "allowed-values",
                    "columns": ["status"],
                    "parameters": {"values": ["new", 1, True, None]},
                },
            ],
        }
    )
    from streamproc.runtime.planner import quality_plan
    from streamproc.runtime.quality import check, json_keys

    rules = quality_plan(load_config(config, env={}), None).rules
    assert [(r.name, r.rule_type) for r in rules] == [
        ("ids", "pattern"),
        ("rule1", "allowed_values"),
    ]
    assert rules[0].regex is not None and rules[0].regex.pattern == "u[0-9]+"
    assert rules[1].allowed == json_keys(["new", 1, True, None])
    bad = [{"user_id": "u12x", "status": "new"}, {"user_id": "u1", "status": "1"}]
    assert [v.reason for v in check(bad, rules)] == [
        "rule ids (pattern): user_id = 'u12x' does not match 'u[0-9]+'",
        "rule rule1 (allowed_values): status = '1' is not one of [\"new\", 1, true, null]",
    ]


def test_a_dlq_table_without_dlq_type_postgresql_is_ignored_with_a_warning() -> None:
    dlq = ("errorHandlingConfig", "dlqConfig")
    report = validate_config(mutate({(*dlq, "table"): "dead"}), env={})
    assert report.ok
    assert (
        "errorHandlingConfig.dlqConfig.table: ignored: only dlqType 'postgresql' writes a "
        "dead-letter table (dlqType is 'kafka')"
    ) in report.warnings
    report = validate_config(mutate({dlq: {"dlqType": "postgresql", "table": "dead"}}), env={})
    assert report.ok and report.warnings == []

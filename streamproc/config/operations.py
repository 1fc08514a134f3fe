"""Error handling, data quality, logging and (Spark-only) performance settings."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

from streamproc.config.base import SPARK_ONLY, ConfigModel
from streamproc.config.fields import Flag, Number, StringMap, WholeNumber, choice
from streamproc.config.names import BootstrapServers, ColumnNames, TableName, Topic

RetryStrategy = Literal["exponential", "fixed", "none"]
DlqType = Literal["kafka", "logging", "none", "postgresql"]
OnFailure = Literal["abort", "continue", "warn"]
RuleType = Literal["not_null", "range", "unique", "pattern", "allowed_values"]
Severity = Literal["error", "warning", "info"]
LogLevel = Literal["DEBUG", "INFO", "WARN", "ERROR"]
_RetryStrategy = Annotated[
    RetryStrategy,
    choice(
        RetryStrategy,
        "retry strategy",
        aliases={"exponentialbackoff": "exponential", "fixeddelay": "fixed", "noretry": "none"},
        ignore_separators=True,
    ),
]
_DlqType = Annotated[DlqType, choice(DlqType, "DLQ type", component=True)]
_OnFailure = Annotated[OnFailure, choice(OnFailure, "on-failure action")]
_RuleType = Annotated[
    RuleType,
    choice(RuleType, "rule type", aliases={"notnull": "not_null"}, ignore_separators=True),
]
_Severity = Annotated[Severity, choice(Severity, "severity")]
_LogLevel = Annotated[LogLevel, choice(LogLevel, "log level", aliases={"WARNING": "WARN"})]


class RetryConfig(ConfigModel):
    """``retryConfig``: retries of a failed sink transaction or dead-letter write (wall time).

    Attributes:
        strategy: 'exponential' (initial delay times multiplier^n), 'fixed'
            (the initial delay each time) or 'none' (one attempt).
        max_attempts: attempts in all, the first included.
        initial_delay_seconds: the first delay.
        max_delay_seconds: no delay is longer.
        backoff_multiplier: growth of the delay per attempt ('exponential').
        jitter: draw each delay uniformly from [0, delay], so that workers that
            failed together do not retry together.
    """

    strategy: _RetryStrategy = "exponential"
    max_attempts: Annotated[int, WholeNumber()] = 3
    initial_delay_seconds: Annotated[float, Number()] = 5
    max_delay_seconds: Annotated[float, Number()] = 60
    backoff_multiplier: Annotated[float, Number()] = 2.0
    jitter: Annotated[bool, Flag()] = True


class CircuitBreakerConfig(ConfigModel):
    """``circuitBreakerConfig``: stop calling an unavailable sink for a while (wall time).

    Attributes:
        enabled: false: no breaker (retries only).
        failure_threshold: sink outages in a row (after their retries) that open
            the breaker; refused batches do not count.
        reset_timeout_seconds: how long it stays open before trial calls.
        half_open_max_attempts: trial calls let through while half-open.
    """

    enabled: Annotated[bool, Flag()] = True
    failure_threshold: Annotated[int, WholeNumber()] = 5
    reset_timeout_seconds: Annotated[float, Number()] = 60
    half_open_max_attempts: Annotated[int, WholeNumber()] = 1


class DlqConfig(ConfigModel):
    """``dlqConfig``: where bad records, quarantined records and records the sink refuses go.

    Attributes:
        dlq_type: 'kafka' (the original bytes to ``topic``, with the reason and
            the source position in headers; at-least-once), 'logging' (a rate
            limited log line), 'none' (counted only) or NEW 'postgresql' (a row of
            a dead-letter table in the sink's database, exactly-once); 's3' is
            refused.
        bootstrap_servers: the DLQ's Kafka cluster (default: the source's).
        topic: the DLQ topic of 'kafka' (required by it).
        table: NEW; the dead-letter table of 'postgresql' (default
            ``<load.table>_dlq``); ignored, with a warning, by the other types.
        buffer_size: accepted and ignored (see the table at the end).
        producer_config: accepted and ignored (see the table at the end).
    """

    dlq_type: _DlqType = "logging"
    bootstrap_servers: Annotated[str, BootstrapServers()] | None = None
    topic: Annotated[str, Topic()] | None = None
    table: Annotated[str, TableName()] | None = None
    buffer_size: Annotated[int, WholeNumber()] = 100
    producer_config: Annotated[dict[str, str], StringMap()] = Field(default_factory=dict)


class ErrorHandlingConfig(ConfigModel):
    """``errorHandlingConfig``: retry, circuit breaker, dead-letter queue, fail-fast.

    Attributes:
        retry: ``retryConfig``: how a failed sink transaction is retried.
        circuit_breaker: ``circuitBreakerConfig``: when to stop calling the sink.
        dlq: ``dlqConfig``: where bad records go.
        fail_fast: true: a batch the sink refuses (a value it cannot store) stops
            the query, exit 1, nothing of it written; false: the refused records
            are isolated and dead-lettered and the query goes on. Outages are
            retried either way.
    """

    retry: RetryConfig = Field(default_factory=RetryConfig, alias="retryConfig")
    circuit_breaker: CircuitBreakerConfig = Field(
        default_factory=CircuitBreakerConfig, alias="circuitBreakerConfig"
    )
    dlq: DlqConfig = Field(default_factory=DlqConfig, alias="dlqConfig")
    fail_fast: Annotated[bool, Flag()] = False


class RuleParameters(ConfigModel):
    """``parameters`` of a quality rule.

    Attributes:
        min: a range rule's lower bound (inclusive).
        max: a range rule's upper bound (inclusive).
        regex: NEW; a pattern rule's regular expression (Python syntax), which
            the whole value must match.
        values: NEW; an allowed_values rule's list of allowed JSON values.
    """

    min: Annotated[float, Number(positive=False)] | None = None
    max: Annotated[float, Number(positive=False)] | None = None
    regex: str | None = None
    values: tuple[Any, ...] | None = None


class QualityRule(ConfigModel):
    """One data-quality rule.

    Attributes:
        rule_type: 'not_null' (null or missing breaks it), 'range' (not a number,
            or out of ``min``/``max``), 'unique' (repeats within the batch), NEW
            'pattern' (does not fully match ``regex``) or NEW 'allowed_values'
            (not one of ``values``). Rules other than 'not_null' pass nulls.
        name: a label for reports and dead-letter reasons.
        columns: the columns checked (at least one): record fields after
            extract, result columns after transform.
        severity: 'error' (acts per ``onFailure``), 'warning' or 'info' (logged only).
        parameters: ``min``/``max`` of a range rule, ``regex`` of a pattern rule,
            ``values`` of an allowed_values rule.
    """

    rule_type: _RuleType
    name: str | None = None
    columns: Annotated[tuple[str, ...], ColumnNames()]
    severity: _Severity = "error"
    parameters: RuleParameters | None = None


class DataQualityConfig(ConfigModel):
    """``dataQualityConfig``: rules checked on each micro-batch.

    Attributes:
        enabled: false: no rule runs.
        rules: the rules, in order.
        on_failure: what a broken 'error' rule does: 'abort' (the query stops
            before the batch is written), 'continue' (after extract: the record is
            quarantined to the DLQ and counted as filtered; after transform: the
            violation is logged and the row written) or 'warn' (logged, kept).
        validate_after_extract: check each decoded source record.
        validate_after_transform: check the result rows each batch emits.
    """

    enabled: Annotated[bool, Flag()] = False
    rules: tuple[QualityRule, ...] = ()
    on_failure: _OnFailure = "abort"
    validate_after_extract: Annotated[bool, Flag()] = False
    validate_after_transform: Annotated[bool, Flag()] = True


class LoggingConfig(ConfigModel):
    """``loggingConfig``: log level, per-batch progress in the log, where metrics are served.

    Attributes:
        log_level: streamproc's own log level: 'DEBUG', 'INFO', 'WARN' or 'ERROR'.
        include_metrics: log each batch's progress line at INFO (as in the
            original format); false logs it at DEBUG.
        metrics_address: NEW; the address /metrics listens on (default
            127.0.0.1; STREAMPROC_METRICS_ADDRESS wins).
        metrics_port: NEW; serve /metrics on this port, 0 for any free one
            (default: not served; STREAMPROC_METRICS_PORT wins).
    """

    log_level: _LogLevel = "INFO"
    include_metrics: Annotated[bool, Flag()] = True
    metrics_address: str | None = None
    metrics_port: Annotated[int, WholeNumber(0, 65535)] | None = None


class PerformanceConfig(ConfigModel):
    """``performanceConfig``: Spark tuning knobs; all accepted and ignored with one warning.

    Attributes:
        shuffle_partitions: Spark-only: there is no shuffle; the group key may
            differ from the Kafka key, and partial aggregates are merged in PostgreSQL.
        broadcast_threshold: Spark-only: there are no joins to broadcast.
    """

    shuffle_partitions: Any = Field(default=None, alias="shufflePartitions", deprecated=SPARK_ONLY)
    broadcast_threshold: Any = Field(
        default=None, alias="broadcastThreshold", deprecated=SPARK_ONLY
    )

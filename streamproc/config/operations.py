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
    """``retryConfig``: retries of a failed micro-batch (wall-clock delays).

    Attributes:
        strategy: 'exponential' (default), 'fixed' or 'none'.
        max_attempts: attempts in all, the first included (default 3).
        initial_delay_seconds, max_delay_seconds: first and largest delay (5, 60).
        backoff_multiplier: growth of the delay per attempt (2.0).
        jitter: randomize each delay (true).
    """

    strategy: _RetryStrategy = "exponential"
    max_attempts: Annotated[int, WholeNumber()] = 3
    initial_delay_seconds: Annotated[float, Number()] = 5
    max_delay_seconds: Annotated[float, Number()] = 60
    backoff_multiplier: Annotated[float, Number()] = 2.0
    jitter: Annotated[bool, Flag()] = True


class CircuitBreakerConfig(ConfigModel):
    """``circuitBreakerConfig``: stop calling a failing sink for a while (wall time).

    Attributes:
        enabled: default true.
        failure_threshold: consecutive failures that open the breaker (5).
        reset_timeout_seconds: how long it stays open (60).
        half_open_max_attempts: trial calls while half-open (1).
    """

    enabled: Annotated[bool, Flag()] = True
    failure_threshold: Annotated[int, WholeNumber()] = 5
    reset_timeout_seconds: Annotated[float, Number()] = 60
    half_open_max_attempts: Annotated[int, WholeNumber()] = 1


class DlqConfig(ConfigModel):
    """``dlqConfig``: where bad records (and failed batches) go.

    Attributes:
        dlq_type: 'kafka', 'logging' (default), 'none' or 'postgresql' (a table in
            the sink's database).
        bootstrap_servers: the DLQ's Kafka cluster (default: the source's).
        topic: the DLQ topic of 'kafka'.
        table: NEW; the dead-letter table of 'postgresql', in the sink's database
            (default: ``<load.table>_dlq``).
        buffer_size: records buffered before a flush (100); ignored by the run (with a
            warning): each batch sends its own dead letters.
        producer_config: extra Kafka producer settings, as written; ignored by the run
            (with a warning).
    """

    dlq_type: _DlqType = "logging"
    bootstrap_servers: Annotated[str, BootstrapServers()] | None = None
    topic: Annotated[str, Topic()] | None = None
    table: Annotated[str, TableName()] | None = None
    buffer_size: Annotated[int, WholeNumber()] = 100
    producer_config: Annotated[dict[str, str], StringMap()] = Field(default_factory=dict)


class ErrorHandlingConfig(ConfigModel):
    """``errorHandlingConfig``: retry, circuit breaker, dead-letter queue, fail-fast."""

    retry: RetryConfig = Field(default_factory=RetryConfig, alias="retryConfig")
    circuit_breaker: CircuitBreakerConfig = Field(
        default_factory=CircuitBreakerConfig, alias="circuitBreakerConfig"
    )
    dlq: DlqConfig = Field(default_factory=DlqConfig, alias="dlqConfig")
    fail_fast: Annotated[bool, Flag()] = False


class RuleParameters(ConfigModel):
    """``parameters`` of a quality rule.

    Attributes:
        min, max: the bounds of a range rule (inclusive).
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
        rule_type: 'not_null', 'range', 'unique', NEW 'pattern' or 'allowed_values'.
        name: a label for reports.
        columns: the columns checked (at least one).
        severity: 'error' (default), 'warning' or 'info'.
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
        enabled: default false.
        rules: the rules, in order.
        on_failure: 'abort' (default), 'continue' or 'warn'.
        validate_after_extract: check the source records (default false).
        validate_after_transform: check the aggregated rows (default true).
    """

    enabled: Annotated[bool, Flag()] = False
    rules: tuple[QualityRule, ...] = ()
    on_failure: _OnFailure = "abort"
    validate_after_extract: Annotated[bool, Flag()] = False
    validate_after_transform: Annotated[bool, Flag()] = True


class LoggingConfig(ConfigModel):
    """``loggingConfig``: log level, per-batch progress in the log, where metrics are served.

    Attributes:
        log_level: 'DEBUG', 'INFO' (default), 'WARN' or 'ERROR'.
        include_metrics: log each batch's progress record at INFO (default
            true, as in the original format); false logs it at DEBUG.
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
    """``performanceConfig``: Spark tuning knobs; all accepted and ignored with one warning."""

    shuffle_partitions: Any = Field(default=None, alias="shufflePartitions", deprecated=SPARK_ONLY)
    broadcast_threshold: Any = Field(
        default=None, alias="broadcastThreshold", deprecated=SPARK_ONLY
    )

"""QueryPlan: everything the runtime needs from a config, typed and resolved.

The runtime never reads the config models directly; `plan_from_config` is
the one place that maps the (Spark-shaped) config onto the runtime's needs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from streamproc.engine import QuerySpec
from streamproc.runtime.quality import QualityPlan

TriggerKind = Literal["continuous", "processingtime", "once", "availablenow"]
LateStrategy = Literal["drop", "loganddrop", "sendtodlq", "separatestream"]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How a failed sink transaction or DLQ write is retried (wall-clock delays)."""

    strategy: Literal["exponential", "fixed", "none"] = "exponential"
    max_attempts: int = 3
    initial_delay_s: float = 5.0
    max_delay_s: float = 60.0
    multiplier: float = 2.0
    jitter: bool = True


@dataclass(frozen=True, slots=True)
class BreakerPolicy:
    """When the circuit breaker opens and how it probes again."""

    enabled: bool = True
    failure_threshold: int = 5
    reset_timeout_s: float = 60.0
    half_open_max_attempts: int = 1


@dataclass(frozen=True, slots=True)
class QueryPlan:
    """A streaming query, resolved from a pipeline config."""

    pipeline_id: str
    query_name: str
    spec: QuerySpec
    # source: a Kafka topic, or (source_type file) the directory, file or glob in `topic`
    bootstrap: str
    topic: str
    starting_offsets: Literal["earliest", "latest"]
    kafka_params: dict[str, Any] = field(default_factory=dict)
    # A member joining a group waits about half of this on the local broker.
    session_timeout_ms: int = 10_000
    # Topic metadata refresh: added partitions are read within about this long.
    metadata_max_age_ms: int = 5_000
    # event time: bad when this far ahead of the record's Kafka timestamp
    max_future_skew_ms: int | None = None
    # trigger
    trigger: TriggerKind = "continuous"
    trigger_interval_ms: int | None = None
    max_records_per_trigger: int | None = None
    source_type: Literal["kafka", "file"] = "kafka"
    # a file source starts at most this many files per micro-batch
    max_files_per_trigger: int | None = None
    # a file source's file truncated in place, or gone with bytes unread
    on_file_truncated: Literal["stop", "continue"] = "stop"
    on_file_deleted: Literal["warn", "stop"] = "warn"
    # a file source's directory: the file names it reads (None: every file)
    file_patterns: tuple[str, ...] | None = None
    # sink
    sink_type: Literal["postgresql", "kafka"] = "postgresql"
    table: str | None = None
    dsn: str | None = None
    sink_topic: str | None = None
    sink_bootstrap: str | None = None
    checkpoint_location: str = ".checkpoints"
    # late data
    late_strategy: LateStrategy = "drop"
    late_dlq_topic: str | None = None
    late_table: str | None = None
    # bad records
    dlq_type: Literal["kafka", "logging", "none", "postgresql"] = "logging"
    dlq_topic: str | None = None
    dlq_bootstrap: str | None = None
    # dlqType postgresql: the dead-letter table, in the sink's database
    dlq_table: str | None = None
    # errors
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    breaker: BreakerPolicy = field(default_factory=BreakerPolicy)
    fail_fast: bool = False
    quality: QualityPlan = field(default_factory=QualityPlan)
    # loggingConfig.logLevel, applied by `streamproc run`
    log_level: Literal["DEBUG", "INFO", "WARN", "ERROR"] = "INFO"
    # observability: progress records at INFO (else DEBUG); where /metrics listens
    include_metrics: bool = True
    metrics_address: str | None = None
    metrics_port: int | None = None

    @property
    def group_id(self) -> str:
        """The consumer group of the query's workers."""
        return f"streamproc-{self.query_name}"

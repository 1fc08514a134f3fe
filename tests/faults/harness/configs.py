"""The fault tests' pipeline: one query (every aggregate, sliding windows, a 5 min delay)
rendered as a config file a worker runs, and the model's view of it.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.reference import Query
from tests.streams import AGGS, MINUTE

AGG_TEXT = "count=*:count," + ",".join(f"value:{f}" for _, c, f in AGGS if c)
SIZE_MS, SLIDE_MS, DELAY_MS = 10 * MINUTE, 5 * MINUTE, 5 * MINUTE


def fault_query(output_mode: str = "update", group_by: tuple[str, ...] = ("user_id",)) -> Query:
    """The model's view of the query a `Pipeline` config runs.

    Args:
        output_mode: The pipeline's output mode.
        group_by: The pipeline's group-by columns.

    Returns:
        The query.
    """
    return Query(
        group_by,
        AGGS,
        delay_ms=DELAY_MS,
        size_ms=SIZE_MS,
        slide_ms=SLIDE_MS,
        output_mode=output_mode,
    )


@dataclass
class Pipeline:
    """One streaming pipeline config; `write` renders it as a config file."""

    name: str
    topic: str
    table: str
    bootstrap: str
    dsn: str
    checkpoint: Path
    trigger: str = "processingtime=500 milliseconds"
    max_records: int = 2_000
    output_mode: str = "update"
    group_by: str = "user_id"
    late: dict[str, str] = field(default_factory=lambda: {"strategy": "drop"})
    dlq: dict[str, str] = field(default_factory=lambda: {"dlqType": "logging"})
    retry: dict[str, Any] = field(
        default_factory=lambda: {
            "strategy": "fixed",
            "maxAttempts": 2,
            "initialDelaySeconds": 0.5,
            "jitter": False,
        }
    )
    breaker: dict[str, Any] = field(
        default_factory=lambda: {"failureThreshold": 3, "resetTimeoutSeconds": 3}
    )
    fail_fast: bool = False
    #: Session windows of this gap ("5 minutes") instead of the sliding windows.
    gap: str | None = None

    def document(self) -> dict[str, Any]:
        """The config as JSON."""
        windows: dict[str, str] = {"windowDuration": "10 minutes", "slideDuration": "5 minutes"}
        if self.gap is not None:
            windows = {"gapDuration": self.gap}
        return {
            "pipelineId": self.name,
            "mode": "streaming",
            "extract": {
                "sourceType": "kafka",
                "connectionParams": {
                    "kafka.bootstrap.servers": self.bootstrap,
                    "subscribe": self.topic,
                    "startingOffsets": "earliest",
                },
            },
            "transforms": [
                {
                    "transformType": "aggregation",
                    "parameters": {
                        "groupByColumns": self.group_by,
                        "windowColumn": "event_time",
                        **windows,
                        "aggregations": AGG_TEXT,
                    },
                }
            ],
            "load": {
                "sinkType": "postgresql",
                "table": self.table,
                "connectionParams": {"url": self.dsn},
            },
            "streamingConfigJson": {
                "checkpointLocation": str(self.checkpoint),
                "queryName": self.name,
                "outputMode": self.output_mode,
                "triggerMode": self.trigger,
                "maxRecordsPerTrigger": self.max_records,
                "watermark": {"eventTimeColumn": "event_time", "delayThreshold": "5 minutes"},
                "lateDataConfig": self.late,
            },
            "errorHandlingConfig": {
                "retryConfig": self.retry,
                "circuitBreakerConfig": self.breaker,
                "dlqConfig": self.dlq,
                "failFast": self.fail_fast,
            },
        }

    def write(self, directory: Path, suffix: str = "") -> Path:
        """Write the config file and return its path."""
        path = directory / f"{self.name}{suffix}.json"
        path.write_text(json.dumps(self.document(), indent=2))
        return path

    def changed(self, **changes: Any) -> Pipeline:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)


#: Makes a test's `Pipeline`: keyword arguments override its fields.
PipelineFactory = Callable[..., Pipeline]


def pipeline_factory(name: str, bootstrap: str, dsn: str, directory: Path) -> PipelineFactory:
    """Pipelines of one test: topic, table and query named `name`, checkpoints in directory.

    Args:
        name: The test's unique name (query, topic and table).
        bootstrap: Kafka bootstrap servers.
        dsn: PostgreSQL URL.
        directory: The test's temporary directory.

    Returns:
        make(**overrides) -> Pipeline.
    """

    def make(**overrides: Any) -> Pipeline:
        fields: dict[str, Any] = {
            "name": name,
            "topic": name,
            "table": name,
            "bootstrap": bootstrap,
            "dsn": dsn,
            "checkpoint": directory / "checkpoints",
        }
        return Pipeline(**{**fields, **overrides})

    return make

"""Keys of the original format that a run accepts and does not honour, and what it does instead.

One source for the warning lines (``commands/preflight.py`` prints them when a config
sets one of these keys) and for the table in CONFIG.md (``reference_doc`` renders
it), so that the two cannot say different things. Spark-only keys (models' fields
marked ``deprecated=SPARK_ONLY``) are listed from the models themselves.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

_S = "streamingConfigJson"
_DLQ = "errorHandlingConfig.dlqConfig"


@dataclass(frozen=True)
class IgnoredOption:
    """A key accepted and ignored, with one warning, in one mode.

    Attributes:
        path: the key's JSON path as the warning names it (``[...]`` for a list index).
        mode: when the run ignores it: 'streaming' (a key of streamingConfigJson, which
            batch mode ignores whole), 'batch' (batch mode only) or 'any'.
        instead: what the run does instead, as the warning says it.
    """

    path: str
    mode: Literal["streaming", "batch", "any"]
    instead: str

    def warning(self, path: str | None = None) -> str:
        """The warning line, for ``path`` (the key as found, index filled in) or the generic one."""
        ignored = "ignored in batch mode" if self.mode == "batch" else "ignored"
        return f"{path or self.path}: {ignored}; {self.instead}"


ENABLE_IDEMPOTENCE = IgnoredOption(
    f"{_S}.enableIdempotence",
    "streaming",
    "results are exactly-once through the PostgreSQL checkpoint whatever its value, and "
    "Kafka writes (dead letters, a kafka sink) are at-least-once, with the source position "
    "in headers",
)
MAX_FILES_PER_TRIGGER = IgnoredOption(
    f"{_S}.maxFilesPerTrigger",
    "streaming",
    "it limits a file source, and this one reads Kafka: a micro-batch is capped by "
    "maxRecordsPerTrigger (else extract.connectionParams.maxOffsetsPerTrigger, else a "
    "default cap)",
)
ON_FILE_TRUNCATED = IgnoredOption(
    f"{_S}.onFileTruncated",
    "streaming",
    "it applies to a file source, and this one reads Kafka: a topic whose offsets went back "
    "(re-created or truncated) stops the query with one line",
)
ON_FILE_DELETED = IgnoredOption(
    f"{_S}.onFileDeleted",
    "streaming",
    "it applies to a file source, and this one reads Kafka: records deleted (retention) "
    "before they were read stop the query with one line",
)
DLQ_BUFFER_SIZE = IgnoredOption(
    f"{_DLQ}.bufferSize",
    "any",
    "dead letters are not buffered across batches: each micro-batch sends its own and waits "
    "for the broker's acknowledgement before its checkpoint commits",
)
DLQ_PRODUCER_CONFIG = IgnoredOption(
    f"{_DLQ}.producerConfig",
    "any",
    "the dead-letter producer uses acks=all and the source's kafka.security.protocol, "
    "kafka.sasl.* and kafka.ssl.* settings",
)
BATCH_STATE_TIMEOUT = IgnoredOption(
    "transforms[...].parameters.stateTimeout",
    "batch",
    "a batch job aggregates its whole input at once and evicts nothing",
)
BATCH_METRICS = IgnoredOption(
    "loggingConfig.metricsPort",
    "batch",
    "a batch job serves no /metrics, it prints its report (rows read, written, rejected) "
    "when it ends",
)

KAFKA_PATH_GLOB_FILTER = IgnoredOption(
    "extract.pathGlobFilter",
    "any",
    "it applies to a file source's directory, and this one reads Kafka",
)

#: Every entry, in the order CONFIG.md lists them.
IGNORED_OPTIONS: tuple[IgnoredOption, ...] = (
    ENABLE_IDEMPOTENCE,
    MAX_FILES_PER_TRIGGER,
    KAFKA_PATH_GLOB_FILTER,
    ON_FILE_TRUNCATED,
    ON_FILE_DELETED,
    DLQ_BUFFER_SIZE,
    DLQ_PRODUCER_CONFIG,
    BATCH_STATE_TIMEOUT,
    BATCH_METRICS,
)

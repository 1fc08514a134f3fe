"""``PipelineConfig``: the root of a pipeline config."""

from __future__ import annotations

from typing import Annotated, Self

from pydantic import Field, model_validator

from streamproc.config.base import ConfigModel
from streamproc.config.fields import choice
from streamproc.config.names import Name
from streamproc.config.operations import (
    DataQualityConfig,
    ErrorHandlingConfig,
    LoggingConfig,
    PerformanceConfig,
)
from streamproc.config.semantic import Draft, Mode, check
from streamproc.config.sink import LoadConfig
from streamproc.config.source import ExtractConfig
from streamproc.config.streaming import StreamingConfig
from streamproc.config.transform import AggregationParams, TransformConfig, aggregation_transforms


class PipelineConfig(ConfigModel):
    """A whole pipeline: source, transforms, sink, and how to run them.

    Load it with :func:`streamproc.config.load_config`, which reports every problem
    at once in the house format; validating this model directly runs the same
    checks but reports through pydantic.

    Attributes:
        schema_ref: ``$schema``: the JSON Schema an editor completes keys from
            (``streamproc schema``); ignored by the run.
        pipeline_id: identifies the pipeline in tables, metrics and logs.
        name: a human name.
        mode: 'streaming' (a query that runs until stopped, or to the end offsets
            of a bounded trigger) or 'batch' (one job over a bounded input,
            loaded in one transaction).
        extract: the source.
        transforms: the transforms, in order (at most one aggregation).
        load: the sink.
        streaming: ``streamingConfigJson``: the streaming query; required in
            streaming mode, ignored (with a warning) in batch mode.
        error_handling: retries, circuit breaker, dead letters, fail-fast.
        data_quality: data-quality rules.
        performance: Spark tuning; ignored.
        logging: log level, progress lines, metrics.
    """

    schema_ref: str | None = Field(default=None, alias="$schema")
    pipeline_id: Annotated[str, Name("pipeline id")]
    name: str | None = None
    mode: Annotated[Mode, choice(Mode, "mode")] = "batch"
    extract: ExtractConfig
    transforms: tuple[TransformConfig, ...] = ()
    load: LoadConfig
    streaming: StreamingConfig | None = Field(default=None, alias="streamingConfigJson")
    error_handling: ErrorHandlingConfig = Field(
        default_factory=ErrorHandlingConfig, alias="errorHandlingConfig"
    )
    data_quality: DataQualityConfig = Field(
        default_factory=DataQualityConfig, alias="dataQualityConfig"
    )
    performance: PerformanceConfig = Field(
        default_factory=PerformanceConfig, alias="performanceConfig"
    )
    logging: LoggingConfig = Field(default_factory=LoggingConfig, alias="loggingConfig")

    @model_validator(mode="after")
    def _check_relations(self) -> Self:
        errors = check(self.draft()).errors
        if errors:
            raise ValueError("\n".join(str(e) for e in errors))
        return self

    def draft(self) -> Draft:
        """This config as the input of the cross-field checks."""
        return Draft.of(dict(self))

    @property
    def is_streaming(self) -> bool:
        """True in streaming mode (then :attr:`streaming` is set)."""
        return self.mode == "streaming"

    @property
    def aggregation(self) -> AggregationParams | None:
        """The parameters of the aggregation transform, or None without one."""
        found = aggregation_transforms(self.transforms)
        return found[0][1] if found else None

    @property
    def state_timeout_ms(self) -> int | None:
        """Idle-key eviction of a non-windowed aggregation (the transform's, else the query's)."""
        own = self.aggregation.state_timeout_ms if self.aggregation else None
        return own or (self.streaming.state_timeout_ms if self.streaming else None)

    @property
    def dlq_bootstrap_servers(self) -> str | None:
        """The Kafka cluster of dead letters: ``dlqConfig.bootstrapServers``, else the source's."""
        return self.error_handling.dlq.bootstrap_servers or self.extract.bootstrap_servers

    @property
    def sink_bootstrap_servers(self) -> str | None:
        """The Kafka cluster of a Kafka sink: its own, else the source's."""
        return self.load.bootstrap_servers or self.extract.bootstrap_servers

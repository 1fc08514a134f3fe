"""``extract``: where records come from (a Kafka topic, or a directory of JSON-lines files)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal

from pydantic import ConfigDict, Field
from pydantic_core import PydanticKnownError
from typing_extensions import override

from streamproc.config.base import SPARK_ONLY, ConfigModel
from streamproc.config.fields import HouseType, WholeNumber, choice
from streamproc.config.names import BootstrapServers, Topic

SourceType = Literal["kafka", "file"]
StartingOffsets = Literal["earliest", "latest"]
_SourceType = Annotated[SourceType, choice(SourceType, "source type", component=True)]
_StartingOffsets = Annotated[StartingOffsets, choice(StartingOffsets, "starting offset")]

_SECURITY_KEY = re.compile(r"kafka\.(?:security\.protocol|sasl\.[^\s]+|ssl\.[^\s]+)")


@dataclass(frozen=True)
class _SecurityKey(HouseType):
    """A Kafka client setting: ``kafka.security.protocol``, ``kafka.sasl.*``, ``kafka.ssl.*``.

    Any other extra key is reported as unknown (with a did-you-mean).
    """

    @override
    def parse(self, value: Any) -> str:
        if isinstance(value, str) and _SECURITY_KEY.fullmatch(value):
            return value
        raise PydanticKnownError("extra_forbidden")

    @override
    def schema(self) -> dict[str, Any]:  # keys are described by the model's patternProperties
        return {"type": "string"}


#: The files a directory's listing reads by default: JSON lines under their usual
#: names, plain or gzip. `a.jsonl.done`, `a.csv` or `README` are not read.
DEFAULT_FILE_PATTERNS = (
    "*.json",
    "*.jsonl",
    "*.ndjson",
    "*.json.gz",
    "*.jsonl.gz",
    "*.ndjson.gz",
)


@dataclass(frozen=True)
class _FileNamePatterns(HouseType):
    """Glob patterns of file names (``*.jsonl``): a JSON list, or one comma-separated string.

    Parsed to a tuple.
    """

    @override
    def parse(self, value: Any) -> tuple[str, ...]:
        if isinstance(value, str):
            items = [part.strip() for part in value.split(",")]
        elif isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
            items = [v.strip() for v in value]
        else:
            raise ValueError(
                f"expected a list of file-name patterns, or a comma-separated string of "
                f"them (e.g. '*.jsonl, *.jsonl.gz'), got {value!r}"
            )
        if not items or "" in items:
            raise ValueError(f"{value!r} holds an empty pattern; expected e.g. '*.jsonl'")
        for item in items:
            if "/" in item:
                raise ValueError(
                    f"'{item}' is a path; a pattern matches a file's name in the directory "
                    "(e.g. '*.jsonl'): put directories in extract.path"
                )
        return tuple(items)

    @override
    def dump(self, value: Any) -> Any:
        return list(value) if isinstance(value, tuple) else value

    @override
    def schema(self) -> dict[str, Any]:
        item = {"type": "string", "minLength": 1, "pattern": "^[^/]+$"}
        return {"anyOf": [{"type": "array", "items": item, "minItems": 1}, {"type": "string"}]}


def _security_schema(schema: dict[str, Any]) -> None:
    # Extras are restricted to the security patterns; say so instead of
    # pydantic's "any string key".
    schema.pop("additionalProperties", None)
    schema["patternProperties"] = {f"^{_SECURITY_KEY.pattern}$": {"type": "string"}}
    schema["additionalProperties"] = False


class SourceConnectionParams(ConfigModel):
    """``extract.connectionParams``: Spark's Kafka source option names.

    Attributes:
        bootstrap_servers: the Kafka cluster, ``host:port[,host:port...]``; required
            for a Kafka source.
        subscribe: the topic to read (one topic); wins over ``extract.topic``.
        starting_offsets: where a partition with no checkpoint starts: 'latest'
            (Spark's default: only records produced after the query first started)
            or 'earliest'. A checkpointed partition always resumes at its committed
            position. Batch mode reads from 'earliest' unless set, and refuses 'latest'.
        max_offsets_per_trigger: at most this many records per micro-batch, when
            ``streamingConfigJson.maxRecordsPerTrigger`` is not set (else a default
            cap of 70,000 to 100,000 records).
        metadata_max_age_ms: NEW; how often topic metadata is refreshed, in
            milliseconds: partitions added to the topic are read within about this
            long (Kafka's own default is 5 minutes).
        fail_on_data_loss: Spark-only: records deleted before they were read, or
            a re-created topic, always stop the query with one line (FAULTS.md).
        min_partitions: Spark-only: a query reads the topic's partitions, spread
            over its workers by the consumer group.
        include_headers: Spark-only: record headers are not read.
        group_id, group_id_prefix: Spark-only: the consumer group is
            ``streamproc-<queryName>``; positions live in the PostgreSQL checkpoint.
        poll_timeout_ms, fetch_offset_num_retries, fetch_offset_retry_interval_ms:
            Spark-only: fetching and its retries are the Kafka client's, and
            outages follow ``errorHandlingConfig``.
    """

    model_config = ConfigDict(extra="allow", json_schema_extra=_security_schema)
    __pydantic_extra__: dict[Annotated[str, _SecurityKey()], str] = Field(init=False)
    extra_keys: ClassVar[tuple[str, ...]] = (
        "kafka.security.protocol",
        "kafka.sasl.*",
        "kafka.ssl.*",
    )

    bootstrap_servers: Annotated[str, BootstrapServers()] | None = Field(
        default=None, alias="kafka.bootstrap.servers"
    )
    subscribe: Annotated[str, Topic()] | None = None
    starting_offsets: _StartingOffsets = "latest"
    max_offsets_per_trigger: Annotated[int, WholeNumber()] | None = None
    metadata_max_age_ms: Annotated[int, WholeNumber(100)] = Field(
        default=5_000, alias="kafka.metadata.max.age.ms"
    )

    # Spark source options with no meaning here: the consumer group, the offsets and
    # the partitioning are owned by streamproc's ledger and worker group.
    fail_on_data_loss: Any = Field(default=None, alias="failOnDataLoss", deprecated=SPARK_ONLY)
    min_partitions: Any = Field(default=None, alias="minPartitions", deprecated=SPARK_ONLY)
    group_id: Any = Field(default=None, alias="kafka.group.id", deprecated=SPARK_ONLY)
    group_id_prefix: Any = Field(default=None, alias="groupIdPrefix", deprecated=SPARK_ONLY)
    include_headers: Any = Field(default=None, alias="includeHeaders", deprecated=SPARK_ONLY)
    poll_timeout_ms: Any = Field(
        default=None, alias="kafkaConsumer.pollTimeoutMs", deprecated=SPARK_ONLY
    )
    fetch_offset_num_retries: Any = Field(
        default=None, alias="fetchOffset.numRetries", deprecated=SPARK_ONLY
    )
    fetch_offset_retry_interval_ms: Any = Field(
        default=None, alias="fetchOffset.retryIntervalMs", deprecated=SPARK_ONLY
    )


class ExtractConfig(ConfigModel):
    """``extract``: the source of the pipeline.

    Attributes:
        source_type: 'kafka' or NEW 'file' (JSON-lines files: a batch job reads them
            once, a streaming query follows them as they appear and grow), in both
            modes; the original's postgresql, mysql and s3 are refused.
        topic_name: the Kafka topic to read, when ``connectionParams.subscribe``
            does not name it.
        path: NEW; the file source's input: a directory, a file or a glob of
            JSON-lines files (``.gz`` for gzip). Required for sourceType 'file'.
        path_glob_filter: NEW (Spark's file option); which files of a directory
            ``path`` a batch job reads: file-name globs, a list or comma-separated
            (default ``*.json``, ``*.jsonl``, ``*.ndjson`` and each with ``.gz``;
            ``["*"]`` reads every file). A glob or file ``path`` names its files
            itself. A streaming query's file source reads the files it names, and
            every file of its directory when it is not given (a query that ran
            before reads what it read).
        query, schema_name, credential_id: keys of the original format, accepted
            and kept as written; nothing reads them.
        connection_params: the Kafka client settings, under Spark's option names.
    """

    source_type: _SourceType
    topic_name: Annotated[str, Topic()] | None = Field(default=None, alias="topic")
    path: str | None = None
    path_glob_filter: Annotated[tuple[str, ...], _FileNamePatterns()] | None = Field(
        default=None, alias="pathGlobFilter"
    )
    query: str | None = None
    schema_name: str | None = None
    credential_id: str | None = None
    connection_params: SourceConnectionParams = Field(default_factory=SourceConnectionParams)

    @property
    def topic(self) -> str | None:
        """The topic to read: ``connectionParams.subscribe``, else ``topic``."""
        return self.connection_params.subscribe or self.topic_name

    @property
    def bootstrap_servers(self) -> str | None:
        """``kafka.bootstrap.servers`` (``host:port,host:port``)."""
        return self.connection_params.bootstrap_servers

    @property
    def starting_offsets(self) -> StartingOffsets:
        """Where a consumer group with no committed position starts."""
        return self.connection_params.starting_offsets

    @property
    def max_offsets_per_trigger(self) -> int | None:
        """At most this many records per micro-batch, or None for no limit."""
        return self.connection_params.max_offsets_per_trigger

    @property
    def security_params(self) -> dict[str, str]:
        """``kafka.security.protocol``, ``kafka.sasl.*``, ``kafka.ssl.*`` as written."""
        return dict(self.connection_params.model_extra or {})

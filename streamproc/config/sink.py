"""``load``: where results go (a PostgreSQL table, or a Kafka topic)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal
from urllib.parse import quote

from pydantic import Field, SecretStr
from typing_extensions import override

from streamproc.config.base import SPARK_ONLY, ConfigModel
from streamproc.config.fields import Flag, WholeNumber, choice
from streamproc.config.names import (
    BootstrapServers,
    ColumnList,
    ColumnNames,
    PostgresUrl,
    TableName,
    Topic,
)

SinkType = Literal["postgresql", "kafka"]
WriteMode = Literal["append", "overwrite", "upsert"]
_SinkType = Annotated[SinkType, choice(SinkType, "sink type", component=True)]
_WriteMode = Annotated[WriteMode, choice(WriteMode, "write mode")]

DEFAULT_BATCHSIZE = 1000  # Spark's JDBC default, which configs of the original relied on
DEFAULT_PORT = 5432


@dataclass(frozen=True)
class _UpsertKeys(ColumnNames):
    """A JSON list of column names, or a comma-separated string of them (like groupByColumns)."""

    @override
    def parse(self, value: Any) -> tuple[str, ...]:
        if isinstance(value, str):
            return ColumnList().parse(value)
        return super().parse(value)

    @override
    def schema(self) -> dict[str, Any]:
        return {"anyOf": [super().schema(), ColumnList().schema()]}


class SinkConnectionParams(ConfigModel):
    """``load.connectionParams``: the PostgreSQL connection, as parts or as one ``url``.

    Attributes:
        url: NEW; a ``postgresql://`` DSN, instead of host, port, database, user
            and password. A PostgreSQL sink needs one or the other (``host`` and
            ``database`` at least); a Kafka sink without either keeps its
            checkpoint at ``STREAMPROC_PG_DSN``.
        host: the server (required without ``url``).
        port: the port (default 5432).
        database: the database (required without ``url``).
        user, password: the login (password authentication, when the server asks).
        table: the original's copy of ``load.table`` (either may be given).
        batchsize: rows per COPY chunk of a batch job's load (default 1000; the
            load is one transaction, whatever its size).
        bootstrap_servers: ``kafka.bootstrap.servers`` of a Kafka sink, when it is
            not the source's cluster.
        driver, num_partitions, isolation_level, truncate: Spark-only: JDBC writer
            options; no driver class is needed, and every batch is one PostgreSQL
            transaction (batch mode's ``writeMode: overwrite`` deletes, in it).
    """

    url: Annotated[SecretStr, PostgresUrl()] | None = None
    host: Annotated[str, Field(min_length=1)] | None = None
    port: Annotated[int, WholeNumber(1, 65535)] | None = None
    database: Annotated[str, Field(min_length=1)] | None = None
    user: str | None = None
    password: SecretStr | None = None
    table: Annotated[str, TableName()] | None = None
    batchsize: Annotated[int, WholeNumber()] | None = None
    bootstrap_servers: Annotated[str, BootstrapServers()] | None = Field(
        default=None, alias="kafka.bootstrap.servers"
    )

    # Spark JDBC writer options: asyncpg needs no driver class, and the writer's
    # partitioning and isolation are streamproc's own (one transaction per batch).
    driver: Any = Field(default=None, alias="driver", deprecated=SPARK_ONLY)
    num_partitions: Any = Field(default=None, alias="numPartitions", deprecated=SPARK_ONLY)
    isolation_level: Any = Field(default=None, alias="isolationLevel", deprecated=SPARK_ONLY)
    truncate: Any = Field(default=None, alias="truncate", deprecated=SPARK_ONLY)


class LoadConfig(ConfigModel):
    """``load``: the sink of the pipeline.

    ``schemaName`` is the original's name of the record schema (``"user-summary"``),
    not a PostgreSQL schema: to write into a PostgreSQL schema, qualify the table
    (``"analytics.user_event_aggregations"``).

    Attributes:
        sink_type: 'postgresql' (result rows in a table) or 'kafka' (result rows as
            JSON messages; the checkpoint stays in PostgreSQL).
        table_name: the result table, ``name`` or ``schema.name``, created when
            missing (else ``connectionParams.table``); lower case, as PostgreSQL
            folds names written without quotes: ``Sales`` is refused, naming ``sales``.
        topic: the topic of a Kafka sink.
        write_mode: batch mode's load: 'append', 'overwrite' (delete, then insert)
            or 'upsert' (on ``upsertKeys``). A streaming query writes per its
            ``outputMode`` instead.
        upsert_keys: key columns of an upsert (a list, or a comma-separated string).
        allow_empty_overwrite: NEW; batch mode's 'overwrite' with no row to write (an
            empty directory, a glob matching no file, an empty topic, every record
            bad) leaves the table as it is and stops with one line, unless this is
            true: then the table is emptied.
        schema_name: the original's name of the record schema (not a PostgreSQL
            schema: qualify the table for that); kept as written.
        connection_params: the PostgreSQL connection (for a Kafka sink: where the
            checkpoint is kept).
    """

    sink_type: _SinkType
    table_name: Annotated[str, TableName()] | None = Field(default=None, alias="table")
    topic: Annotated[str, Topic()] | None = None
    write_mode: _WriteMode = "append"
    upsert_keys: Annotated[tuple[str, ...], _UpsertKeys()] | None = None
    allow_empty_overwrite: Annotated[bool, Flag()] = False
    schema_name: str | None = None
    connection_params: SinkConnectionParams = Field(default_factory=SinkConnectionParams)

    @property
    def table(self) -> str | None:
        """The target table (``load.table``, else ``connectionParams.table``)."""
        return self.table_name or self.connection_params.table

    @property
    def batchsize(self) -> int:
        """Rows per COPY chunk of a batch job's load (default 1000)."""
        return self.connection_params.batchsize or DEFAULT_BATCHSIZE

    @property
    def bootstrap_servers(self) -> str | None:
        """The Kafka sink's own cluster, if given (else the runtime uses the source's)."""
        return self.connection_params.bootstrap_servers

    def dsn(self) -> str:
        """The PostgreSQL DSN: ``url`` as given, or built from the parts (URL-quoted).

        Missing parts take libpq's usual defaults: host localhost, port 5432.
        """
        params = self.connection_params
        if params.url is not None:
            return params.url.get_secret_value()
        host = params.host or "localhost"
        if ":" in host:  # an IPv6 literal must be bracketed in a URL
            host = f"[{host}]"
        auth = quote(params.user or "", safe="")
        if params.password is not None:
            auth += ":" + quote(params.password.get_secret_value(), safe="")
        auth = f"{auth}@" if auth else ""
        database = quote(params.database or "", safe="")
        return f"postgresql://{auth}{host}:{params.port or DEFAULT_PORT}/{database}"

"""BatchPlan: what a `mode: batch` pipeline does, resolved from its config (pure).

`streamproc validate`, `streamproc run` and the Faust worker build it through
`commands.preflight`, so a batch config that validates also runs. Nothing here
imports a Kafka or PostgreSQL client.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from streamproc.config import PipelineConfig
from streamproc.config.kafka_security import kafka_client_params
from streamproc.config.sink import WriteMode
from streamproc.config.source import DEFAULT_FILE_PATTERNS
from streamproc.config.transform import WINDOW_BOUNDS
from streamproc.engine import AggSpec, QuerySpec, SessionSpec, WindowSpec
from streamproc.runtime.plan import BreakerPolicy, RetryPolicy
from streamproc.runtime.planner import (
    breaker_policy,
    dlq_table,
    quality_plan,
    retry_policy,
)
from streamproc.runtime.quality import QualityPlan

_PARAMS = "extract.connectionParams"


@dataclass(frozen=True, slots=True)
class BatchPlan:
    """A batch job: a bounded input, the transforms, one load into PostgreSQL.

    Attributes:
        spec: the aggregation as the engine runs it (output mode complete, no
            watermark: all data is present, so every window, and every session of
            a `gapDuration` aggregation, is final at the end); None for a pipeline
            without aggregation, which loads the records.
        upsert_keys: the columns an upsert matches rows on (as configured).
        batchsize: rows per COPY chunk inside the load's one transaction.
    """

    pipeline_id: str
    source_type: Literal["kafka", "file"]
    table: str
    dsn: str
    spec: QuerySpec | None
    write_mode: WriteMode = "append"
    upsert_keys: tuple[str, ...] = ()
    batchsize: int = 1000
    # kafka input
    bootstrap: str = ""
    topic: str = ""
    kafka_params: dict[str, Any] = field(default_factory=dict)
    # file input: a directory's files are those whose name matches a pattern
    path: str = ""
    file_patterns: tuple[str, ...] = DEFAULT_FILE_PATTERNS
    #: writeMode overwrite with no row to write empties the table only when allowed.
    allow_empty_overwrite: bool = False
    # bad and refused records
    dlq_type: Literal["kafka", "logging", "none", "postgresql"] = "logging"
    dlq_topic: str | None = None
    dlq_bootstrap: str | None = None
    # dlqType postgresql: the dead-letter table, written in the load's transaction
    dlq_table: str | None = None
    fail_fast: bool = False
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    breaker: BreakerPolicy = field(default_factory=BreakerPolicy)
    quality: QualityPlan = field(default_factory=QualityPlan)
    log_level: Literal["DEBUG", "INFO", "WARN", "ERROR"] = "INFO"

    @property
    def source_name(self) -> str:
        """The input as reports and dead-letter headers name it."""
        return self.topic if self.source_type == "kafka" else self.path


def batch_plan_from_config(cfg: PipelineConfig) -> BatchPlan:
    """The BatchPlan of a `mode: batch` pipeline.

    Raises:
        ValueError: the pipeline is valid but cannot run as a batch job: one line
            naming the field, its value and what is accepted.
    """
    extract, load = cfg.extract, cfg.load
    if load.sink_type != "postgresql" or load.table is None:
        raise ValueError(
            f"load.sinkType: '{load.sink_type}' is not supported in batch mode; use postgresql"
        )
    given = extract.connection_params.model_fields_set
    if (
        extract.source_type == "kafka"
        and "starting_offsets" in given
        and extract.starting_offsets == "latest"
    ):
        # Spark refuses it too: the end offsets are taken at start, so a job
        # starting there reads nothing.
        raise ValueError(
            f"{_PARAMS}.startingOffsets: 'latest' reads nothing in batch mode (the end "
            "offsets are taken when the job starts); use earliest, the batch default"
        )
    eh = cfg.error_handling
    agg = cfg.aggregation
    spec = None
    if agg is not None:
        # Sessions run in SessionEngine (collect.py): without a watermark none closes
        # before the end, nothing is late, and the end's emit gives every session.
        spec = QuerySpec(
            group_by=tuple(agg.group_by),
            aggregations=tuple(AggSpec(a.output, a.column, a.func) for a in agg.aggregations),
            output_mode="complete",
            event_time_column=agg.window_column,
            event_time_format=agg.event_time_format or "auto",
            window=WindowSpec(agg.window_size_ms, agg.slide_ms or agg.window_size_ms)
            if agg.window_size_ms
            else None,
            session=SessionSpec(agg.gap_duration_ms) if agg.gap_duration_ms else None,
        )
        _check_upsert_keys(spec, load.write_mode, load.upsert_keys or ())
    return BatchPlan(
        pipeline_id=cfg.pipeline_id,
        source_type=extract.source_type,
        table=load.table,
        dsn=load.dsn(),
        spec=spec,
        write_mode=load.write_mode,
        upsert_keys=tuple(load.upsert_keys or ()),
        batchsize=load.batchsize,
        bootstrap=extract.bootstrap_servers or "",
        topic=extract.topic or "",
        kafka_params=kafka_client_params(extract.security_params),
        path=extract.path or "",
        file_patterns=extract.path_glob_filter or DEFAULT_FILE_PATTERNS,
        allow_empty_overwrite=load.allow_empty_overwrite,
        dlq_type=eh.dlq.dlq_type,
        dlq_topic=eh.dlq.topic,
        dlq_bootstrap=cfg.dlq_bootstrap_servers,
        dlq_table=dlq_table(cfg),
        fail_fast=eh.fail_fast,
        retry=retry_policy(cfg),
        breaker=breaker_policy(cfg),
        quality=quality_plan(cfg, agg.window_column if agg else None),
        log_level=cfg.logging.log_level,
    )


def result_key(spec: QuerySpec) -> tuple[str, ...]:
    """The columns that identify an aggregation's row: group-by, then the window bounds
    (a fixed window's or a session's)."""
    return spec.group_by + (WINDOW_BOUNDS if spec.windowed else ())


def _check_upsert_keys(spec: QuerySpec, mode: WriteMode, keys: tuple[str, ...]) -> None:
    # The result table's unique key is the group-by columns (with their JSON
    # types) and the window bounds: an upsert can only match rows on that key.
    if mode != "upsert":
        return
    if spec.session is not None:
        # A session's bounds are its row's key and move as the input grows: an upsert
        # over a grown input would leave the old bounds' row beside the new one (two
        # overlapping sessions of a key, counted twice), with nothing said.
        raise ValueError(
            "load.writeMode: upsert cannot keep session windows right (a session's bounds "
            "are its row's key and move when a rerun's input grows or merges sessions); "
            "use overwrite to recompute the sessions, or append"
        )
    wanted = result_key(spec)
    if sorted(keys) != sorted(wanted):
        raise ValueError(
            f"load.upsertKeys: ({', '.join(keys)}) is not the key of the aggregation's rows; "
            f"use ({', '.join(wanted)})"
        )

"""The adapters a query runs on, built from its plan: source, checkpoint, sinks.

`kafka_postgres_ports` is production: a Kafka consumer group, the PostgreSQL
checkpoint, a PostgreSQL table (or a Kafka topic) for results, and a Kafka
producer for dead letters when a router writes them. Component tests build
`QueryPorts` from the in-memory adapters of `streamproc.testing` instead.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from streamproc.config import format_duration_ms
from streamproc.runtime.failure_kinds import first_line
from streamproc.runtime.metrics import unread_counter
from streamproc.runtime.plan import QueryPlan
from streamproc.runtime.quality import describe_rule
from streamproc.runtime.routers import BadRouter, LateRouter, bad_router, late_router
from streamproc.sinks.base import Checkpoint, MessageWriter, QueryIdentity, ResultSink
from streamproc.sinks.definition import query_definition
from streamproc.sinks.kafka import KafkaProducerSink, KafkaResultSink
from streamproc.sinks.layout import result_layout
from streamproc.sinks.postgres import PostgresCheckpoint
from streamproc.sinks.postgres_records import PostgresRecordSink
from streamproc.sinks.postgres_table import PostgresTableSink
from streamproc.sources.base import Source
from streamproc.sources.file_registry import PostgresFileRegistry
from streamproc.sources.files import FileSource, FileSourceConfig
from streamproc.sources.kafka import LAGGING_WAIT_MS, KafkaSource, KafkaSourceConfig
from streamproc.sources.position import where_of

# A dead-letter producer must carry any record the source can deliver, plus
# its headers: max_partition_fetch_bytes of the source (4 MiB) and room.
_DLQ_MAX_REQUEST_BYTES = 8 * 1_048_576

log = logging.getLogger("streamproc.query")


@dataclass(frozen=True, slots=True)
class QueryPorts:
    """Everything a query does I/O through."""

    source: Source
    checkpoint: Checkpoint
    result_sink: ResultSink
    late: LateRouter
    bad: BadRouter
    #: Dead letters (late records with sendtodlq, bad records with dlqType kafka).
    dead_letter_writer: MessageWriter | None = None

    async def start_writers(self) -> None:
        """Start the writers: the dead-letter producer and the result sink."""
        for sink in (self.dead_letter_writer, self.result_sink):
            if sink is not None:
                await sink.start()

    async def stop(self) -> None:
        """Stop the source, the writers, then the checkpoint; a failure is logged, not raised."""
        closers = [self.source.stop]
        closers += [s.stop for s in (self.dead_letter_writer, self.result_sink) if s is not None]
        closers.append(self.checkpoint.close)
        for closer in closers:
            try:
                await closer()
            except Exception as exc:
                log.warning("error while stopping: %s", first_line(exc))


def plan_identity(plan: QueryPlan) -> QueryIdentity:
    """The identity a plan's checkpoint is registered under: name, definition, table."""
    sink = (
        {"topic": plan.sink_topic or ""}
        if plan.sink_type == "kafka"
        else {"table": plan.table or ""}
    )
    definition = query_definition(
        plan.spec,
        topic=plan.topic,
        sink=sink,
        source_path=os.path.abspath(plan.topic) if plan.source_type == "file" else None,
    )
    table = plan.table if plan.sink_type == "postgresql" else None
    late = plan.late_table if plan.late_strategy == "separatestream" else None
    return QueryIdentity(
        plan.query_name, plan.topic, definition, table, late, plan.dlq_table, result_settings(plan)
    )


def result_settings(plan: QueryPlan) -> dict[str, str]:
    """The options that may change between runs yet change which records are aggregated.

    Each as the config says it; a change is named at start (STREAMING.md, "What a
    change alters"): it applies to the records read from the committed offsets on.
    """
    spec = plan.spec

    def duration(ms: int | None) -> str:
        return "none" if ms is None else format_duration_ms(ms)

    quality = plan.quality
    rules = (
        "; ".join(describe_rule(r) for r in quality.rules) + f" (onFailure {quality.on_failure})"
        if quality.active
        else "none"
    )
    files = (
        {}
        if plan.source_type != "file"
        else {
            "file name patterns": ", ".join(plan.file_patterns)
            if plan.file_patterns
            else "every file"
        }
    )
    return files | {
        "watermark delay": duration(spec.delay_ms),
        "idle timeout": duration(spec.idle_timeout_ms),
        "state timeout": duration(spec.state_timeout_ms),
        "max future skew": duration(plan.max_future_skew_ms),
        "late strategy": plan.late_strategy,
        "data-quality rules": rules,
    }


def kafka_postgres_ports(plan: QueryPlan) -> QueryPorts:
    """The production adapters of a plan."""
    if plan.dsn is None or (plan.sink_type == "postgresql" and plan.table is None):
        raise ValueError("a streaming query needs a PostgreSQL checkpoint and a sink")
    if plan.sink_type == "kafka" and not plan.sink_topic:
        raise ValueError("load.topic: a kafka sink needs a topic")
    spec = plan.spec
    result_sink: ResultSink
    if plan.sink_type == "kafka":
        assert plan.sink_topic is not None
        result_sink = KafkaResultSink(
            plan.sink_bootstrap or plan.bootstrap,
            plan.sink_topic,
            spec.group_by,
            [a.output for a in spec.aggregations],
            plan.kafka_params,
            passthrough_from=plan.topic if spec.passthrough else None,
        )
    elif spec.passthrough:
        assert plan.table is not None
        result_sink = PostgresRecordSink(plan.table)
    else:
        assert plan.table is not None
        result_sink = PostgresTableSink(result_layout(spec, plan.table))
    checkpoint = PostgresCheckpoint(
        plan.dsn,
        identity=plan_identity(plan),
        spec=spec,
        sink=result_sink,
        late_table=plan.late_table if plan.late_strategy == "separatestream" else None,
        dlq_table=plan.dlq_table,
    )
    source = _source(plan, plan.dsn)
    where = where_of(source.positions)
    late, bad = late_router(plan, where), bad_router(plan, where)
    writer: MessageWriter | None = None
    if late.strategy == "sendtodlq" or bad.uses_producer:
        writer = KafkaProducerSink(
            plan.dlq_bootstrap or plan.bootstrap,
            {"max_request_size": _DLQ_MAX_REQUEST_BYTES, **plan.kafka_params},
        )
    return QueryPorts(source, checkpoint, result_sink, late, bad, writer)


def _source(plan: QueryPlan, dsn: str) -> Source:
    """The plan's source: a Kafka consumer group member, or a file source (one worker)."""
    if plan.source_type == "file":
        return FileSource(
            FileSourceConfig(
                query=plan.query_name,
                path=plan.topic,
                starting_offsets=plan.starting_offsets,
                max_files_per_trigger=plan.max_files_per_trigger,
                on_file_truncated=plan.on_file_truncated,
                on_file_deleted=plan.on_file_deleted,
                patterns=plan.file_patterns,
            ),
            PostgresFileRegistry(dsn, plan.query_name),
            on_unread=unread_counter(plan.pipeline_id, plan.query_name),
        )
    return KafkaSource(
        KafkaSourceConfig(
            bootstrap=plan.bootstrap,
            topic=plan.topic,
            group_id=plan.group_id,
            starting_offsets=plan.starting_offsets,
            client_params=plan.kafka_params,
            session_timeout_ms=plan.session_timeout_ms,
            metadata_max_age_ms=plan.metadata_max_age_ms,
            # A continuous query answers as soon as records arrive: no batch
            # waits for a partition whose next records are still in flight.
            lagging_wait_ms=0 if plan.trigger == "continuous" else LAGGING_WAIT_MS,
            fetch_max_wait_ms=10 if plan.trigger == "continuous" else 100,
        )
    )

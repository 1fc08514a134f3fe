"""Run a pipeline config over a list of records, in memory: for users' own unit tests.

    result = run_pipeline(config, [
        {"user_id": "u1", "event_time": "2025-11-26T10:00:01Z", "value": 3},
        InputRecord(b"not json", partition=0),
    ])
    result.rows      # the result table's rows, as dicts named after its columns
    result.late      # records that came too late, with their watermark and reason
    result.bad       # records that could not be read, with the reason
    result.counts    # what the run did: records, aggregated, late, bad, filtered, ...

The query is the one `streamproc run` would run from the same config (same
plan, same `StreamingQuery`), over a `MemoryTopic` and a `MemoryCheckpoint`
instead of Kafka and PostgreSQL. Only what cannot apply to a list of records
changes: the run reads the records from the first (`startingOffsets`
earliest) to the last (trigger availablenow), and serves no metrics. Windows
the watermark has not closed stay open at the end, as in a real run: an
append-mode window appears in `rows` only once a later record moved every
partition's watermark past its end.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from streamproc.config import PipelineConfig, load_config
from streamproc.config.loader import ConfigSource
from streamproc.engine import LateRecord, ResultRow
from streamproc.runtime.plan import QueryPlan
from streamproc.runtime.planner import plan_from_config
from streamproc.runtime.query import StreamingQuery
from streamproc.runtime.routers import BadRouter, LateRouter, RefusedRecord, Routed
from streamproc.sources.base import RawRecord
from streamproc.state import memory_store_factory
from streamproc.testing.database import MemoryDatabase, typed_key
from streamproc.testing.messages import MemoryMessages
from streamproc.testing.ports import memory_ports
from streamproc.testing.source import MemorySource, MemoryTopic
from streamproc.testing.table_sink import MemoryTableSink

#: The DSN a Kafka-sink pipeline plans with when STREAMPROC_PG_DSN is unset: the
#: checkpoint is in memory here, but planning insists on knowing where it would be.
_MEMORY_DSN = "memory://"


@dataclass(frozen=True, slots=True)
class InputRecord:
    """One record of the input topic, when a plain dict or bytes is not enough.

    Attributes:
        value: A JSON object (encoded as the producer would), the raw bytes of the
            message (to test undecodable input), or None (a tombstone).
        partition: The partition it is written to; None: by the record's index in
            the input, round-robin over the partitions.
        key: The Kafka message key (a str is UTF-8 encoded).
        timestamp_ms: The Kafka timestamp (wall time, epoch ms); 0: none.
    """

    value: Mapping[str, Any] | bytes | None
    partition: int | None = None
    key: bytes | str | None = None
    timestamp_ms: int = 0


#: What `run_pipeline` accepts as one record.
Record = InputRecord | Mapping[str, Any] | bytes


@dataclass(frozen=True, slots=True)
class LateOutput:
    """A record the query did not aggregate because it came too late.

    Attributes:
        partition: Its partition.
        offset: Its offset in that partition (records are numbered from 0 per partition).
        event_ts_ms: Its event time (epoch ms).
        watermark_ms: The watermark it was older than (event time).
        reason: Why, in the words of the late side table.
        record: The decoded record.
    """

    partition: int
    offset: int
    event_ts_ms: int
    watermark_ms: int
    reason: str
    record: Any


@dataclass(frozen=True, slots=True)
class BadOutput:
    """A record the query could not read (bad input), with the reason.

    Attributes:
        partition: Its partition.
        offset: Its offset in that partition.
        reason: Why it was rejected, as the dead-letter header `reason` says.
        value: The message's bytes as they were.
    """

    partition: int
    offset: int
    reason: str
    value: bytes | None


@dataclass(frozen=True, slots=True)
class RunCounts:
    """What the run did; records = aggregated + late + bad + filtered."""

    records: int
    aggregated: int
    late: int
    bad: int
    filtered: int
    result_rows: int
    batches: int


@dataclass(frozen=True, slots=True)
class PipelineResult:
    """The outcome of `run_pipeline`.

    Attributes:
        rows: The result table at the end of the run, one dict per row named after
            its columns: the group-by columns, `window_start_ms` and `window_end_ms`
            (epoch ms, event time; absent when not windowed), then each aggregate.
            Ordered by window start, then group values.
        late: The late records, in partition and offset order.
        bad: The bad records, in partition and offset order.
        counts: The run's counts.
        watermark_ms: The global watermark at the end (event time), or None.
    """

    rows: tuple[dict[str, Any], ...]
    late: tuple[LateOutput, ...]
    bad: tuple[BadOutput, ...]
    counts: RunCounts
    watermark_ms: int | None = None


def run_pipeline(
    config: PipelineConfig | ConfigSource,
    records: Iterable[Record],
    *,
    partitions: int = 1,
    env: Mapping[str, str] | None = None,
) -> PipelineResult:
    """Run a streaming pipeline over records, without a broker or a database.

    Args:
        config: A config model, a dict of the JSON format, or a path to a config file.
        records: The input topic's records in order: dicts (JSON objects), bytes
            (raw message values), or `InputRecord` for a partition, key or timestamp.
        partitions: How many partitions the input topic has.
        env: Variables for ``${NAME}`` references (default: ``os.environ``).

    Returns:
        The result rows, the late and bad records and the counts.

    Raises:
        ConfigError: the config is invalid (every problem, one line each).
        ValueError: the config cannot run as a streaming query, or a record names a
            partition the topic does not have.
        RuntimeError: called inside a running event loop (await
            `run_pipeline_async` there).
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        plan = testing_plan(config, env)
        return asyncio.run(_run(plan, records, partitions))
    raise RuntimeError("run_pipeline() inside an event loop: await run_pipeline_async() there")


async def run_pipeline_async(
    config: PipelineConfig | ConfigSource,
    records: Iterable[Record],
    *,
    partitions: int = 1,
    env: Mapping[str, str] | None = None,
) -> PipelineResult:
    """`run_pipeline` for a test that already runs an event loop (same arguments)."""
    return await _run(testing_plan(config, env), records, partitions)


async def _run(plan: QueryPlan, records: Iterable[Record], partitions: int) -> PipelineResult:
    topic = MemoryTopic(plan.topic, partitions)
    for record in records:
        _produce(topic, record)
    db = MemoryDatabase()
    ports = memory_ports(plan, MemorySource(topic), db, MemoryMessages())
    late, bad = _RecordingLate(ports.late), _RecordingBad(ports.bad)
    query = StreamingQuery(plan, memory_store_factory, ports=replace(ports, late=late, bad=bad))
    stats = await query.run()
    sink = ports.result_sink
    assert isinstance(sink, MemoryTableSink)
    registered = db.queries.get(plan.query_name)
    return PipelineResult(
        rows=tuple(named_rows(plan, db.table_rows(sink.table))),
        late=tuple(sorted(late.seen, key=lambda r: (r.partition, r.offset))),
        bad=tuple(sorted(bad.seen, key=lambda r: (r.partition, r.offset))),
        counts=RunCounts(
            records=stats.records,
            aggregated=stats.aggregated,
            late=stats.late,
            bad=stats.bad,
            filtered=stats.filtered,
            result_rows=stats.result_rows,
            batches=stats.batches,
        ),
        watermark_ms=registered.global_watermark_ms if registered else None,
    )


def testing_plan(
    config: PipelineConfig | ConfigSource, env: Mapping[str, str] | None = None
) -> QueryPlan:
    """The plan `streamproc run` makes of a config, bounded to the records given.

    Reads from the first record to the last (earliest, availablenow) and serves
    no metrics; everything that decides results is the config's.
    """
    environ = dict(os.environ if env is None else env)
    cfg = config if isinstance(config, PipelineConfig) else load_config(config, environ)
    environ.setdefault("STREAMPROC_PG_DSN", _MEMORY_DSN)
    plan = plan_from_config(cfg, environ)
    return replace(
        plan,
        starting_offsets="earliest",
        trigger="availablenow",
        trigger_interval_ms=None,
        metrics_port=None,
    )


def named_rows(plan: QueryPlan, rows: Iterable[ResultRow]) -> list[dict[str, Any]]:
    """Result rows as dicts named after the table's columns, in a stable order.

    A pass-through query's rows are its records, in (partition, offset) order.
    """
    spec = plan.spec
    if spec.passthrough:
        return [dict(row.values[0]) for row in sorted(rows, key=lambda r: tuple(r.key))]
    outputs = [a.output for a in spec.aggregations]
    out = []
    for row in sorted(rows, key=_row_order):
        named: dict[str, Any] = dict(zip(spec.group_by, row.key, strict=True))
        if spec.windowed:  # fixed windows or sessions
            named["window_start_ms"] = row.window_start_ms
            named["window_end_ms"] = row.window_end_ms
        named.update(zip(outputs, row.values, strict=True))
        out.append(named)
    return out


def _row_order(row: ResultRow) -> tuple[Any, ...]:
    # Group values of mixed JSON types (null, true, 1, "1") do not compare in
    # Python: order by type first, as the table's group_key_types tells them apart.
    rank = {"null": 0, "boolean": 1, "number": 2}
    key = tuple((rank.get(kind, 3), kind, value) for kind, value in typed_key(row.key))
    return (row.window_start_ms or 0, row.window_end_ms or 0, key)


def _produce(topic: MemoryTopic, record: Record) -> None:
    item = record if isinstance(record, InputRecord) else InputRecord(record)
    if item.partition is None:
        # Round-robin by position in the input, as a keyless producer might spread them.
        partition = sum(topic.end_offset(p) for p in range(topic.partitions)) % topic.partitions
    else:
        partition = item.partition
    if not 0 <= partition < topic.partitions:
        raise ValueError(
            f"record for partition {partition}: the topic has {topic.partitions} "
            f"partition(s) (run_pipeline(..., partitions=N))"
        )
    value = item.value
    data = json.dumps(value).encode() if isinstance(value, Mapping) else value
    key = item.key.encode() if isinstance(item.key, str) else item.key
    topic.produce(partition, data, key=key, timestamp_ms=item.timestamp_ms)


class _RecordingLate:
    """The plan's late router, keeping every late record once its batch is durable."""

    def __init__(self, inner: LateRouter) -> None:
        self._inner = inner
        self.seen: list[LateOutput] = []

    @property
    def strategy(self) -> str:
        """The inner router's strategy."""
        return self._inner.strategy

    @property
    def writes_letters(self) -> bool:
        """As the inner router."""
        return self._inner.writes_letters

    def route(self, raw: RawRecord, record: LateRecord, out: Routed) -> None:
        """As the inner router does."""
        self._inner.route(raw, record, out)

    def committed(self, records: Sequence[LateRecord]) -> None:
        """Keep them, then let the inner router say what it says."""
        self.seen += [
            LateOutput(r.partition, r.offset, r.event_ts_ms, r.watermark_ms, r.reason, r.value)
            for r in records
        ]
        self._inner.committed(records)


class _RecordingBad:
    """The plan's bad-record router, keeping every bad record once its batch is durable."""

    def __init__(self, inner: BadRouter) -> None:
        self._inner = inner
        self.seen: list[BadOutput] = []

    @property
    def uses_producer(self) -> bool:
        """As the inner router."""
        return self._inner.uses_producer

    @property
    def writes_letters(self) -> bool:
        """As the inner router."""
        return self._inner.writes_letters

    def route(self, raw: RawRecord, reason: str, out: Routed) -> None:
        """As the inner router does."""
        self._inner.route(raw, reason, out)

    def refused(self, record: RefusedRecord, out: Routed) -> None:
        """As the inner router does."""
        self._inner.refused(record, out)

    def committed(self, items: Sequence[tuple[RawRecord, str]]) -> None:
        """Keep them, then let the inner router say what it says."""
        self.seen += [
            BadOutput(raw.partition, raw.offset, reason, raw.value) for raw, reason in items
        ]
        self._inner.committed(items)

"""The progress record of a micro-batch, after Spark's StreamingQueryProgress.

One `QueryProgress` per committed batch, built from what the runtime already
has once the batch is durable: the ledger entries (`PartitionCommit`), the
commit's outcome and the seconds each phase took. No I/O and no clock here:
the caller passes wall times in, so the numbers of a scripted batch are exact.

Phases of a record (`PHASES`), folded from the runtime's finer ones (timing.py):

    fetch       fetch (waiting for records included)
    decode      decode
    engine      engine
    checkpoint  watermarks (reading other workers' W), lock_wait, states, ledger, closing
    sink        sink (result rows), dead_letters (the DLQ writes before the commit)
    commit      commit (the transaction's COMMIT)

In append mode result rows are written as their windows close, in the
checkpoint's `closing` phase: their time counts in checkpoint, not sink.

Rates, as Spark defines them: input rows per second over the wall time since
the previous batch's fetch began (how fast records arrive); processed rows
per second over the batch's own work, every phase but fetch (how fast they
are processed, not counting the wait for them).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from streamproc.sinks.base import PartitionCommit, batch_id
from streamproc.timing import PHASES, fold_phases

__all__ = [
    "PHASES",
    "PartitionSpan",
    "QueryProgress",
    "build_progress",
    "fold_phases",
    "phase_delta",
]

#: Runtime phases measured while a batch is prepared (the others while it commits).
PREPARE_PHASES = ("fetch", "decode", "engine", "watermarks")


@dataclass(frozen=True, slots=True)
class PartitionSpan:
    """One source partition's share of a batch.

    Attributes:
        partition: The source partition.
        start_offset: First offset of the span.
        end_offset: Offset after the span (exclusive; the ledger's next_offset).
        input_rows: Records read from the span.
        batch_id: The span's deterministic id, as the ledger row has it.
        max_event_ts_ms: Max event time of the partition so far (event time).
        watermark_ms: The partition watermark after the batch (event time).
    """

    partition: int
    start_offset: int
    end_offset: int
    input_rows: int
    batch_id: str
    max_event_ts_ms: int | None
    watermark_ms: int | None


@dataclass(frozen=True, slots=True)
class QueryProgress:
    """What one committed micro-batch did (Spark's StreamingQueryProgress).

    Attributes:
        pipeline_id: The config's pipelineId.
        query: The query name.
        batch_id: This worker's batch number since it started (1, 2, ...), as
            its log lines' batchId says; a batch fetched again after a stale or
            failed one gets the next number, so numbers may skip. Each
            partition's ledger id is in `partitions`.
        timestamp_ms: Wall time the batch became durable (epoch ms).
        partitions: The partitions read, in partition order.
        input_rows: Records read (= aggregated + late + bad + filtered).
        input_rows_per_second: input_rows over the wall time since the previous
            batch's fetch began; None for a worker's first batch.
        processed_rows_per_second: input_rows over the batch's work (every phase
            but fetch); None when no work time was measured.
        duration_ms: Wall milliseconds per phase (`PHASES`, every one present).
        batch_duration_ms: Wall milliseconds from the fetch's start to the
            batch being durable (overlaps the next batch's preparation).
        max_event_ts_ms: Max event time seen so far over the batch's partitions.
        watermark_ms: The global watermark W after the batch (event time).
        state_rows_updated: Partial states (key, window, partition) the batch
            wrote to the checkpoint.
        aggregated_rows, late_rows, bad_rows, filtered_rows: The outcome of
            every record read; bad includes the dead-lettered.
        sink_rows: Result rows written.
        min_event_ts_ms: Min event time of the batch's aggregated and late records.
        state_rows_total: Partial states of the query in the checkpoint after
            the batch, every partition's (None: the checkpoint did not count).
        breaker_state: The sink circuit breaker's state when the committed
            attempt was let through (closed; half_open: the probe after an outage).
        retries: Attempts at the batch's transaction before the one that committed.
        unread_files: Files the (file) source found gone or truncated with bytes
            unread since the previous batch; None for a source that cannot lose input.
        unread_bytes: Those files' bytes not read (None likewise).
        round_trips: Round trips of the batch's commit to PostgreSQL (its
            transaction, and a closing after it); None where not counted (in memory).
    """

    pipeline_id: str
    query: str
    batch_id: int
    timestamp_ms: int
    partitions: tuple[PartitionSpan, ...]
    input_rows: int
    input_rows_per_second: float | None
    processed_rows_per_second: float | None
    duration_ms: Mapping[str, float]
    batch_duration_ms: float
    max_event_ts_ms: int | None
    watermark_ms: int | None
    state_rows_updated: int
    aggregated_rows: int
    late_rows: int
    bad_rows: int
    filtered_rows: int
    sink_rows: int
    min_event_ts_ms: int | None = None
    state_rows_total: int | None = None
    breaker_state: str = "closed"
    retries: int = 0
    unread_files: int | None = None
    unread_bytes: int | None = None
    round_trips: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """The record as JSON-ready values, with Spark's camelCase names where Spark has one."""
        return {
            "pipelineId": self.pipeline_id,
            "name": self.query,
            "batchId": self.batch_id,
            "timestamp": _iso(self.timestamp_ms),
            "numInputRows": self.input_rows,
            "inputRowsPerSecond": self.input_rows_per_second,
            "processedRowsPerSecond": self.processed_rows_per_second,
            "durationMs": dict(self.duration_ms),
            "batchDurationMs": self.batch_duration_ms,
            "eventTime": {
                "min": _iso(self.min_event_ts_ms),
                "max": _iso(self.max_event_ts_ms),
                "watermark": _iso(self.watermark_ms),
            },
            "stateOperators": {
                "numRowsTotal": self.state_rows_total,
                "numRowsUpdated": self.state_rows_updated,
            },
            "rows": {
                "aggregated": self.aggregated_rows,
                "late": self.late_rows,
                "bad": self.bad_rows,
                "filtered": self.filtered_rows,
            },
            "sink": {"numOutputRows": self.sink_rows, "roundTrips": self.round_trips},
            "circuitBreaker": {"state": self.breaker_state, "retries": self.retries},
            "sources": [
                {
                    "partition": p.partition,
                    "startOffset": p.start_offset,
                    "endOffset": p.end_offset,
                    "numInputRows": p.input_rows,
                    "batchId": p.batch_id,
                    "maxEventTime": _iso(p.max_event_ts_ms),
                    "watermark": _iso(p.watermark_ms),
                    **self._source_metrics(),
                }
                for p in self.partitions
            ],
        }

    def _source_metrics(self) -> dict[str, Any]:
        """Spark's per-source `metrics`: what a file source found gone or truncated unread."""
        if self.unread_files is None:
            return {}
        return {
            "metrics": {
                "numFilesUnread": self.unread_files,
                "numBytesUnread": self.unread_bytes or 0,
            }
        }

    def json(self) -> str:
        """The record as one line of JSON."""
        return json.dumps(self.to_dict(), separators=(",", ":"))

    def log_line(self) -> str:
        """The record as one compact key=value line (offsets as partition:start-end)."""
        offsets = ",".join(
            f"{p.partition}:{p.start_offset}-{p.end_offset}" for p in self.partitions
        )
        phases = ",".join(f"{name}:{self.duration_ms[name]:.1f}" for name in PHASES)
        return (
            f"pipeline={self.pipeline_id} query={self.query} batch={self.batch_id} "
            f"rows={self.input_rows} offsets={offsets or '-'} "
            f"input_rps={_rate(self.input_rows_per_second)} "
            f"processed_rps={_rate(self.processed_rows_per_second)} "
            f"ms={self.batch_duration_ms:.1f} phases_ms={phases} "
            f"min_event_time={_iso(self.min_event_ts_ms) or '-'} "
            f"max_event_time={_iso(self.max_event_ts_ms) or '-'} "
            f"watermark={_iso(self.watermark_ms) or '-'} "
            f"state_updated={self.state_rows_updated} "
            f"state_total={'-' if self.state_rows_total is None else self.state_rows_total} "
            f"aggregated={self.aggregated_rows} "
            f"late={self.late_rows} bad={self.bad_rows} filtered={self.filtered_rows} "
            f"sink_rows={self.sink_rows} breaker={self.breaker_state} retries={self.retries}"
            + (
                ""
                if self.unread_files is None
                else f" unread_files={self.unread_files} unread_bytes={self.unread_bytes or 0}"
            )
            + ("" if self.round_trips is None else f" round_trips={self.round_trips}")
        )


def phase_delta(before: Mapping[str, float], after: Mapping[str, float]) -> dict[str, float]:
    """Seconds per runtime phase spent between two snapshots of a run's PhaseTimes."""
    return {
        name: after[name] - before.get(name, 0.0)
        for name in PREPARE_PHASES
        if after.get(name, 0.0) > before.get(name, 0.0)
    }


def build_progress(
    *,
    pipeline_id: str,
    query: str,
    topic: str,
    batch_number: int,
    timestamp_ms: int,
    partitions: Sequence[PartitionCommit],
    phase_seconds: Mapping[str, float],
    batch_seconds: float,
    since_previous_s: float | None,
    watermark_ms: int | None,
    state_rows_updated: int,
    sink_rows: int,
    state_rows_total: int | None = None,
    breaker_state: str = "closed",
    retries: int = 0,
    unread: tuple[int, int] | None = None,
    round_trips: int | None = None,
) -> QueryProgress:
    """The progress record of a committed batch.

    Args:
        pipeline_id: The config's pipelineId.
        query: The query name (also part of each span's ledger batch id).
        topic: The source topic (part of each span's ledger batch id).
        batch_number: This worker's number for the batch (its log lines' batchId).
        timestamp_ms: Wall time the batch became durable (epoch ms).
        partitions: The batch's ledger entries.
        phase_seconds: Wall seconds per runtime phase (timing.py names) of this batch.
        batch_seconds: Wall seconds from the batch's fetch to its commit.
        since_previous_s: Wall seconds from the previous batch's fetch to this
            one's (None for the first batch).
        watermark_ms: The global watermark W after the batch (event time).
        state_rows_updated: Partial states the batch wrote.
        sink_rows: Result rows written.
        state_rows_total: Partial states of the query after the batch (None: not counted).
        breaker_state: The breaker's state when the committed attempt went through.
        retries: Attempts at the transaction before the one that committed.
        unread: (files, bytes) the source found gone or truncated unread since the
            previous batch; None for a source that cannot lose input.
        round_trips: Round trips of the batch's commit (None: not counted).
    """
    spans = tuple(
        PartitionSpan(
            partition=p.partition,
            start_offset=p.start_offset,
            end_offset=p.next_offset,
            input_rows=p.records,
            batch_id=batch_id(query, topic, p.partition, p.start_offset, p.next_offset),
            max_event_ts_ms=p.max_event_ts_ms,
            watermark_ms=p.watermark_ms,
        )
        for p in sorted(partitions, key=lambda p: p.partition)
    )
    rows = sum(p.records for p in partitions)
    duration_ms = fold_phases(phase_seconds)
    work_s = sum(v for name, v in duration_ms.items() if name != "fetch") / 1000
    event_times = [p.max_event_ts_ms for p in partitions if p.max_event_ts_ms is not None]
    min_times = [p.min_event_ts_ms for p in partitions if p.min_event_ts_ms is not None]
    return QueryProgress(
        pipeline_id=pipeline_id,
        query=query,
        batch_id=batch_number,
        timestamp_ms=timestamp_ms,
        partitions=spans,
        input_rows=rows,
        input_rows_per_second=rows / since_previous_s if since_previous_s else None,
        processed_rows_per_second=rows / work_s if work_s > 0 else None,
        duration_ms=duration_ms,
        batch_duration_ms=batch_seconds * 1000,
        max_event_ts_ms=max(event_times) if event_times else None,
        watermark_ms=watermark_ms,
        state_rows_updated=state_rows_updated,
        aggregated_rows=sum(p.aggregated for p in partitions),
        late_rows=sum(p.late for p in partitions),
        bad_rows=sum(p.bad for p in partitions),
        filtered_rows=sum(p.filtered for p in partitions),
        sink_rows=sink_rows,
        min_event_ts_ms=min(min_times) if min_times else None,
        state_rows_total=state_rows_total,
        breaker_state=breaker_state,
        retries=retries,
        unread_files=None if unread is None else unread[0],
        unread_bytes=None if unread is None else unread[1],
        round_trips=round_trips,
    )


def _iso(ms: int | None) -> str | None:
    if ms is None:
        return None
    stamp = datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")
    return stamp.replace("+00:00", "Z")


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"

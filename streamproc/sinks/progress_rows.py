"""The progress table's row of a commit: pure, built inside the commit's transaction.

Every commit of a query writes one row to `streamproc_progress`, in the same
transaction as its ledger rows, so the table's counts agree with the ledger
exactly; the table keeps a query's newest `PROGRESS_KEEP` rows. The row holds
what is known before the transaction's COMMIT: its durations stop there (no
`commit` phase), so its processed rate is a little higher than the progress
log line's.

No I/O: the checkpoint (PostgreSQL or in memory) passes the outcome in.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from streamproc.sinks.base import CommitBatch, ProgressNote, batch_id
from streamproc.timing import fold_phases

#: Rows the progress table keeps per query (older ones are deleted as new ones come).
PROGRESS_KEEP = 1000


@dataclass(frozen=True, slots=True)
class ProgressRow:
    """A commit's row in the progress table (columns of `create_progress_table_sql`).

    Times: `*_ts_ms` are event time; durations are wall milliseconds.
    """

    pipeline_id: str
    batch_number: int | None
    worker: str
    partitions: int
    input_rows: int
    aggregated: int
    late: int
    bad: int
    filtered: int
    dead_lettered: int
    sink_rows: int
    state_rows_updated: int
    min_event_ts_ms: int | None
    max_event_ts_ms: int | None
    watermark_ms: int | None
    input_rows_per_second: float | None
    processed_rows_per_second: float | None
    duration_ms: Mapping[str, float]
    sources: tuple[Mapping[str, Any], ...]
    breaker_state: str
    breaker_opened: int
    retries: int

    def sources_json(self) -> str:
        """The per-partition spans as JSON (the `sources` column)."""
        return json.dumps(list(self.sources), separators=(",", ":"))

    def duration_json(self) -> str:
        """The durations as JSON (the `duration_ms` column)."""
        return json.dumps(dict(self.duration_ms), separators=(",", ":"))


def progress_row(
    query: str,
    topic: str,
    batch: CommitBatch,
    *,
    sink_rows: int,
    watermark_ms: int | None,
    timings_s: Mapping[str, float],
) -> ProgressRow:
    """The row of a commit, from its batch, what it wrote and its phases so far.

    Args:
        query: The query name (part of each span's ledger batch id).
        topic: The source topic (likewise).
        batch: The batch being committed (its `progress` note may be None).
        sink_rows: Result rows written by the transaction.
        watermark_ms: The global watermark W after it (event time).
        timings_s: The transaction's phases so far, wall seconds (timing.py names).
    """
    note = batch.progress or ProgressNote()
    parts = batch.partitions
    rows = sum(p.records for p in parts)
    duration_ms = fold_phases(timings_s)
    for phase, ms in note.duration_ms.items():
        duration_ms[phase] = duration_ms.get(phase, 0.0) + ms
    del duration_ms["commit"]  # still to come when the row is written
    work_s = sum(ms for phase, ms in duration_ms.items() if phase != "fetch") / 1000
    mins = [p.min_event_ts_ms for p in parts if p.min_event_ts_ms is not None]
    maxes = [p.max_event_ts_ms for p in parts if p.max_event_ts_ms is not None]
    return ProgressRow(
        pipeline_id=note.pipeline_id,
        batch_number=note.batch_number,
        worker=note.worker,
        partitions=len(parts),
        input_rows=rows,
        aggregated=sum(p.aggregated for p in parts),
        late=sum(p.late for p in parts),
        bad=sum(p.bad for p in parts),
        filtered=sum(p.filtered for p in parts),
        dead_lettered=sum(p.dead_lettered for p in parts),
        sink_rows=sink_rows,
        state_rows_updated=sum(len(r) for r in batch.partials.values()),
        min_event_ts_ms=min(mins) if mins else None,
        max_event_ts_ms=max(maxes) if maxes else None,
        watermark_ms=watermark_ms,
        input_rows_per_second=note.input_rows_per_second,
        processed_rows_per_second=rows / work_s if work_s > 0 and rows else None,
        duration_ms=duration_ms,
        sources=tuple(
            {
                "partition": p.partition,
                "startOffset": p.start_offset,
                "endOffset": p.next_offset,
                "numInputRows": p.records,
                "batchId": batch_id(query, topic, p.partition, p.start_offset, p.next_offset),
                **({"metrics": dict(note.source_metrics)} if note.source_metrics else {}),
            }
            for p in sorted(parts, key=lambda p: p.partition)
        ),
        breaker_state=note.breaker_state,
        breaker_opened=note.breaker_opened,
        retries=note.retries,
    )

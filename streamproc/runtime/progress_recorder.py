"""The progress record of each committed batch (Spark's `StreamingQueryProgress`).

`ProgressRecorder` holds what a record needs beyond its batch: when the
previous batches' fetches began (for the input and processing rates) and the
source's unread counts. It writes the note a batch's progress-table row
carries when its delivery starts, and the record itself once the batch
committed: counted, kept among the recent ones, and handed to `on_progress`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from streamproc.runtime import metrics
from streamproc.runtime.accounting import Accounting, UnreadTally
from streamproc.runtime.inflight import InFlight
from streamproc.runtime.partitions import PartitionTracker
from streamproc.runtime.plan import QueryPlan
from streamproc.runtime.prepare import PreparedBatch
from streamproc.runtime.query_progress import QueryProgress, build_progress, fold_phases
from streamproc.sinks.base import ProgressNote
from streamproc.sources.base import Source


class ProgressRecorder:
    """Builds each committed batch's progress record and its progress-table note."""

    def __init__(
        self,
        plan: QueryPlan,
        *,
        source: Source,
        tracker: PartitionTracker,
        accounting: Accounting,
        note: Callable[..., ProgressNote],
        clock_ms: Callable[[], int],
        on_progress: Callable[[QueryProgress], None] | None = None,
    ) -> None:
        """Args:
        plan: The query.
        source: For the partitions' end offsets (lag) and unread counts.
        tracker: For the committed offsets and the engine's state size.
        accounting: Counts each record and keeps the recent ones.
        note: Makes a progress note of this worker from a batch's fields.
        clock_ms: Wall clock in epoch milliseconds (a record's timestamp).
        on_progress: Called with each committed batch's progress record.
        """
        self._plan = plan
        self._source = source
        self._unread = UnreadTally(source)
        self._tracker = tracker
        self._accounting = accounting
        self._note = note
        self._clock_ms = clock_ms
        self._on_progress = on_progress
        #: perf_counter when the fetch of the last batch with a progress record began.
        self._last_fetch_started: float | None = None
        #: perf_counter when the fetch of the last batch sent to the checkpoint began.
        self._last_launch_fetch: float | None = None

    def note(
        self,
        prepared: PreparedBatch,
        number: int,
        fetch_started: float,
        prepare_seconds: Mapping[str, float],
    ) -> ProgressNote:
        """The note of a batch whose delivery starts now (its progress-table row's fields)."""
        last, self._last_launch_fetch = self._last_launch_fetch, fetch_started
        rows = sum(p.records for p in prepared.commit.partitions)
        since = None if last is None else fetch_started - last
        fields: dict[str, Any] = dict(self._unread.pending())
        return self._note(
            batch_number=number,
            input_rows_per_second=rows / since if since else None,
            duration_ms=fold_phases(prepare_seconds),
            **fields,
        )

    def delivered(self, inflight: InFlight) -> None:
        """The delivery of a batch ended (settled later): when, in both clocks."""
        inflight.delivered_s = time.perf_counter()
        inflight.delivered_ms = self._clock_ms()

    def committed(self, inflight: InFlight) -> QueryProgress:
        """Record the progress of a batch that committed."""
        outcome = inflight.task.result()
        commit = inflight.prepared.commit
        delivered_s = inflight.delivered_s or time.perf_counter()
        last = self._last_fetch_started
        self._last_fetch_started = inflight.fetch_started
        plan = self._plan
        progress = build_progress(
            pipeline_id=plan.pipeline_id,
            query=plan.query_name,
            topic=plan.topic,
            batch_number=inflight.number,
            timestamp_ms=inflight.delivered_ms or self._clock_ms(),
            partitions=commit.partitions,
            phase_seconds={**inflight.prepare_seconds, **outcome.timings},
            batch_seconds=delivered_s - inflight.fetch_started,
            since_previous_s=None if last is None else inflight.fetch_started - last,
            watermark_ms=(
                outcome.global_watermark_ms
                if outcome.global_watermark_ms is not None
                else commit.watermark_ms
            ),
            state_rows_updated=sum(len(rows) for rows in commit.partials.values()),
            sink_rows=outcome.result_rows,
            state_rows_total=outcome.state_rows_total,
            breaker_state=outcome.progress.breaker_state if outcome.progress else "closed",
            retries=outcome.progress.retries if outcome.progress else 0,
            unread=self._unread.committed(outcome.progress),
            round_trips=outcome.round_trips or None,
        )
        ends = self._source.seen_ends()
        committed = self._tracker.committed
        lag = {p: max(0, end - committed[p]) for p, end in ends.items() if p in committed}
        self._accounting.progressed(progress, lag)
        state_bytes = self._tracker.engine.state_bytes()
        if state_bytes is not None:
            metrics.STATE_BYTES.labels(plan.pipeline_id, plan.query_name).set(state_bytes)
        if self._on_progress is not None:
            self._on_progress(progress)
        return progress

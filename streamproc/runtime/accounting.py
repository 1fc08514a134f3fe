"""The run's accounting: counts, metrics, progress and log lines of what was committed.

Everything here happens once a batch is durable, so a retried or replayed
batch is counted once. For every partition of every batch:
records = aggregated + late + bad + filtered.

Each committed batch's `QueryProgress` is logged on one line (logger
`streamproc.progress`: INFO with loggingConfig.includeMetrics, its default,
else DEBUG), kept among the last `RECENT_PROGRESS`, and fed to the metrics.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from streamproc.engine import LateRecord
from streamproc.runtime import metrics
from streamproc.runtime.late import LateSummary
from streamproc.runtime.partitions import Restored
from streamproc.runtime.query_progress import QueryProgress
from streamproc.runtime.routers import BadRouter, LateRouter
from streamproc.sinks.base import CommitOutcome, PartitionCommit, ProgressNote
from streamproc.sources.base import RawRecord, UnreadCounting
from streamproc.timing import PhaseTimes

progress_log = logging.getLogger("streamproc.progress")

#: Progress records a query keeps in memory (Spark keeps 100 as well).
RECENT_PROGRESS = 100


@dataclass(slots=True)
class RunStats:
    """Counts of one run of a query (this worker only)."""

    records: int = 0
    aggregated: int = 0
    late: int = 0
    bad: int = 0
    filtered: int = 0
    # Of `bad`: records the sink rejected, isolated and dead-lettered.
    dead_lettered: int = 0
    batches: int = 0
    stale_batches: int = 0
    failed_commits: int = 0
    sink_outages: int = 0
    result_rows: int = 0
    late_summary: LateSummary = field(default_factory=LateSummary)
    #: Partitions this worker committed records of.
    partitions: set[int] = field(default_factory=set)
    #: Bounded runs: the run this worker was in, and whether the whole query
    #: reached its end offsets (whoever processed them).
    run_id: int | None = None
    run_partitions: int = 0
    run_complete: bool = False
    #: The signal that stopped the run (0: --max-seconds), None when it ended by itself.
    stopped_by: int | None = None
    #: Where the time went (runtime phases and the checkpoint's), wall seconds.
    times: PhaseTimes = field(default_factory=PhaseTimes)
    #: Wall seconds spent on batches (processing and committing), not waiting for records.
    batch_seconds: float = 0.0
    #: Why the last attempt that did not commit did not (stale, refused, an outage).
    last_setback: str | None = None
    #: Round trips of the committed batches' commits, and how many commits counted them.
    round_trips: int = 0
    counted_commits: int = 0

    @property
    def setbacks(self) -> int:
        """Attempts that did not commit: stale batches, failed commits, sink outages."""
        return self.stale_batches + self.failed_commits + self.sink_outages


class Accounting:
    """Counts committed batches into `RunStats` and the Prometheus metrics."""

    def __init__(
        self,
        query: str,
        late: LateRouter,
        bad: BadRouter,
        *,
        pipeline: str = "",
        include_metrics: bool = True,
    ) -> None:
        self.stats = RunStats()
        self._query = query
        self._pipeline = pipeline
        self._late = late
        self._bad = bad
        self._progress_level = logging.INFO if include_metrics else logging.DEBUG
        #: The last committed batches' progress, oldest first.
        self.recent: deque[QueryProgress] = deque(maxlen=RECENT_PROGRESS)
        # Every series there from the first scrape, not from its first increment.
        metrics.init_query_series(pipeline, query, late_strategy=late.strategy)

    def committed(
        self,
        partitions: Sequence[PartitionCommit],
        outcome: CommitOutcome,
        late: Sequence[LateRecord] = (),
        bad: Sequence[tuple[RawRecord, str]] = (),
    ) -> None:
        """A batch is durable: count it, and let the routers log what they log."""
        stats = self.stats
        labels = (self._pipeline, self._query)
        letters = 0
        for p in partitions:
            stats.partitions.add(p.partition)
            stats.records += p.records
            stats.aggregated += p.aggregated
            stats.late += p.late
            stats.bad += p.bad
            stats.filtered += p.filtered
            stats.dead_lettered += p.dead_lettered
            for outcome_name, n in (
                ("aggregated", p.aggregated),
                ("late", p.late),
                ("bad", p.bad),
                ("filtered", p.filtered),
            ):
                if n:
                    metrics.RECORDS.labels(*labels, outcome_name).inc(n)
            if p.late:
                metrics.LATE.labels(*labels, self._late.strategy).inc(p.late)
            if p.watermark_ms is not None:
                metrics.WATERMARK.labels(*labels, str(p.partition)).set(p.watermark_ms)
            letters += p.dead_lettered
        for record in late:
            stats.late_summary.add(record)
        self._late.committed(late)
        self._bad.committed(bad)
        stats.batches += 1
        stats.result_rows += outcome.result_rows
        if outcome.round_trips:
            stats.round_trips += outcome.round_trips
            stats.counted_commits += 1
            metrics.COMMIT_ROUND_TRIPS.labels(*labels).inc(outcome.round_trips)
        metrics.BATCHES.labels(*labels, "committed").inc()
        metrics.RESULT_ROWS.labels(*labels).inc(outcome.result_rows)
        self._count_dead_letters(late, bad, letters)

    def _count_dead_letters(
        self, late: Sequence[LateRecord], bad: Sequence[tuple[RawRecord, str]], refused: int
    ) -> None:
        # Only routers that write a letter (a topic or a table) count: logging
        # and none keep nothing to replay.
        labels = (self._pipeline, self._query)
        if self._bad.writes_letters:
            for kind, n in (("bad", len(bad)), ("refused", refused)):
                if n:
                    metrics.DEAD_LETTERS.labels(*labels, kind).inc(n)
        if self._late.writes_letters and late:
            metrics.DEAD_LETTERS.labels(*labels, "late").inc(len(late))

    def progressed(self, progress: QueryProgress, lag: Mapping[int, int]) -> None:
        """A committed batch's progress record: keep it, log it, export it.

        Args:
            progress: The record.
            lag: Consumer lag of every owned partition whose end is known: the
                end offset the source client last saw minus the committed one.
        """
        self.recent.append(progress)
        if progress_log.isEnabledFor(self._progress_level):
            progress_log.log(self._progress_level, "progress %s", progress.log_line())
        labels = (self._pipeline, self._query)
        for phase, ms in progress.duration_ms.items():
            metrics.PHASE_SECONDS.labels(*labels, phase).observe(ms / 1000)
        metrics.BATCH_SECONDS.labels(*labels).observe(progress.batch_duration_ms / 1000)
        metrics.LAST_COMMIT.labels(*labels).set(progress.timestamp_ms / 1000)
        metrics.STATE_ROWS_UPDATED.labels(*labels).inc(progress.state_rows_updated)
        if progress.state_rows_total is not None:
            metrics.STATE_ROWS.labels(*labels).set(progress.state_rows_total)
        if progress.watermark_ms is not None:
            metrics.GLOBAL_WATERMARK.labels(*labels).set(progress.watermark_ms / 1000)
            watermark_s = progress.watermark_ms / 1000
            # Computed at scrape time: the lag grows while no batch commits.
            metrics.EVENT_TIME_LAG.labels(*labels).set_function(lambda: time.time() - watermark_s)
        for span in progress.partitions:
            partition = str(span.partition)
            if span.watermark_ms is not None:
                metrics.PARTITION_WATERMARK.labels(*labels, partition).set(span.watermark_ms / 1000)
            if span.max_event_ts_ms is not None:
                metrics.MAX_EVENT_TIME.labels(*labels, partition).set(span.max_event_ts_ms / 1000)
        for p, records in lag.items():
            metrics.CONSUMER_LAG.labels(*labels, str(p)).set(records)

    def assigned(self, restored: Restored) -> None:
        """The consumer group gave this worker an assignment, restored from the checkpoint.

        Each owned partition's series start at the values restored (NaN where none
        is known yet: a partition never committed, a lag whose end is not seen yet).
        """
        labels = (self._pipeline, self._query)
        metrics.REBALANCES.labels(*labels).inc()
        metrics.ASSIGNED_PARTITIONS.labels(*labels).set(len(restored.partitions))
        for p, marks in restored.partitions.items():
            metrics.init_partition_series(
                *labels,
                p,
                watermark_ms=marks.watermark_ms,
                max_event_ts_ms=marks.max_event_ts_ms,
                lag=marks.lag,
            )
        if restored.global_watermark_ms is not None:
            metrics.GLOBAL_WATERMARK.labels(*labels).set(restored.global_watermark_ms / 1000)
        if restored.state_bytes is not None:
            metrics.STATE_BYTES.labels(*labels).set(restored.state_bytes)

    def revoked(self, partitions: set[int], owned: int) -> None:
        """Partitions went to another worker: their per-partition series leave this one's."""
        metrics.ASSIGNED_PARTITIONS.labels(self._pipeline, self._query).set(owned)
        for p in partitions:
            for gauge in (
                metrics.CONSUMER_LAG,
                metrics.PARTITION_WATERMARK,
                metrics.MAX_EVENT_TIME,
            ):
                # Absent when no batch of the partition was committed here.
                with contextlib.suppress(KeyError):
                    gauge.remove(self._pipeline, self._query, str(p))

    def dead_lettered(self) -> None:
        """A record the sink refused was dead-lettered (counted by `committed` too)."""
        metrics.BATCHES.labels(self._pipeline, self._query, "dead_lettered").inc()

    def stale(self, partitions: Sequence[int]) -> None:
        """A batch was found stale (these partitions moved) and discarded."""
        self.stats.stale_batches += 1
        self.stats.last_setback = (
            f"a batch was stale: partitions {list(partitions)} moved (another worker committed)"
        )
        metrics.BATCHES.labels(self._pipeline, self._query, "stale").inc()

    def failed(self, reason: str) -> None:
        """The sink refused a batch."""
        self.stats.failed_commits += 1
        self.stats.last_setback = f"the sink refused a batch: {reason}"
        metrics.BATCHES.labels(self._pipeline, self._query, "failed").inc()

    def outage(self, reason: str) -> None:
        """The sink could not be reached; the batch will be replayed."""
        self.stats.sink_outages += 1
        self.stats.last_setback = f"the sink was unavailable: {reason}"
        metrics.BATCHES.labels(self._pipeline, self._query, "unavailable").inc()


class UnreadTally:
    """What a source found gone or truncated unread, per committed batch.

    The source counts since it started; each batch's note carries what was
    found since the last committed batch, so that a batch that does not
    commit leaves its share to the next one.
    """

    def __init__(self, source: object) -> None:
        self._source = source if isinstance(source, UnreadCounting) else None
        self._reported = (0, 0)

    def pending(self) -> dict[str, dict[str, int]]:
        """The note's fields: found since the last committed batch (none for other sources)."""
        if self._source is None:
            return {}
        files, unread = self._source.unread_counts()
        metrics = {
            FILES_UNREAD: files - self._reported[0],
            BYTES_UNREAD: unread - self._reported[1],
        }
        return {"source_metrics": metrics}

    def committed(self, note: ProgressNote | None) -> tuple[int, int] | None:
        """A batch whose note is `note` committed: its counts are reported (and returned)."""
        if self._source is None:
            return None
        metrics = {} if note is None else note.source_metrics
        files, unread = metrics.get(FILES_UNREAD, 0), metrics.get(BYTES_UNREAD, 0)
        self._reported = (self._reported[0] + files, self._reported[1] + unread)
        return files, unread


#: The names of a file source's counts in its per-source metrics (as Spark names them).
FILES_UNREAD, BYTES_UNREAD = "numFilesUnread", "numBytesUnread"

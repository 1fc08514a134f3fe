"""Collecting one micro-batch per the trigger, and where a bounded run ends.

    continuous      the first records that arrive (up to the batch cap)
    processingtime  everything available, up to the cap
    availablenow    everything available up to the run's end offsets, up to the cap
    once            everything available up to the run's end offsets, no cap

A bounded run (once, availablenow) is the query's, not this worker's: its end
offsets cover every partition of the topic and are taken once, when the run
began (`Checkpoint.begin_run`); every worker of the run stops at them. This
worker's share is done when its partitions reached their ends; the run is
done when every partition did, whoever processed it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from streamproc.runtime.partitions import PartitionTracker
from streamproc.runtime.plan import QueryPlan
from streamproc.sinks.base import BoundedRun, PartitionCommit
from streamproc.sources.base import RawRecord, Source, TriggerAware

log = logging.getLogger("streamproc.query")

# Without maxRecordsPerTrigger a micro-batch is still capped, so that one
# transaction and the worker's memory stay bounded; the cap never changes
# results, only batch sizes. Up to three batches of records are alive at once
# (one committing, one being prepared, one being fetched), each with the rows
# it makes, so the cap is a budget of records plus rows: a batch whose records
# each make a row (every record its own result row) holds about 70,000
# records, one whose records fold into few rows up to 100,000, where larger
# batches rewrite fewer rows. Never below 70,000: batches that make several
# rows a record (sliding windows) rewrite each window's row once per batch it
# spans, and were twice as slow at 20,000.
DEFAULT_BATCH_CAP = 100_000
MIN_BATCH_CAP = 70_000
BATCH_BUDGET = 140_000
BOUNDED_TRIGGERS = ("once", "availablenow")


def default_cap(rows_per_record: float) -> int:
    """The batch cap without maxRecordsPerTrigger, for batches making this many rows a record."""
    cap = int(BATCH_BUDGET / (1.0 + max(0.0, rows_per_record)))
    return max(MIN_BATCH_CAP, min(DEFAULT_BATCH_CAP, cap))


class BatchCollector:
    """Fetches the records of each micro-batch; keeps a bounded run to its ends."""

    def __init__(self, plan: QueryPlan, source: Source, tracker: PartitionTracker) -> None:
        self._plan = plan
        self._source = source
        self._tracker = tracker
        self.bounded = plan.trigger in BOUNDED_TRIGGERS
        #: The bounded run this worker is in (None for continuous triggers).
        self.run: BoundedRun | None = None
        #: Rows (result rows and partial states) per record of the last batch.
        self._rows_per_record = 0.0
        #: A source with per-trigger limits (maxFilesPerTrigger) is told when a batch begins.
        self._trigger_aware = source if isinstance(source, TriggerAware) else None

    def start_run(self, run: BoundedRun) -> None:
        """Stop at this run's end offsets from now on."""
        self.run = run
        self.sync_pauses()

    def end(self, partition: int) -> int:
        """The run's end offset of a partition (0 for one the run did not know)."""
        assert self.run is not None
        return self.run.ends.get(partition, 0)

    def sync_pauses(self) -> None:
        """Fetch exactly the owned partitions below the run's end: pause the others.

        Run before every fetch, so that a partition sought back below its end (a
        batch that reached it was stale or failed, and is fetched again) is read
        again: a pause outlives a seek, as in Kafka.
        """
        if self.run is None:
            return
        owned = self._source.assignment()
        done = {p for p in owned if self._tracker.next.get(p, 0) >= self.end(p)}
        done -= self._tracker.pending
        if done:
            self._source.pause(done)
        if owned - done:
            self._source.resume(owned - done)

    # --------------------------------------------------------------- fetching
    def batch_made(self, records: int, rows: int) -> None:
        """A batch of `records` records made `rows` rows: the next cap follows."""
        if records > 0:
            self._rows_per_record = rows / records

    def _batch_cap(self) -> int | None:
        if self._plan.trigger == "once":
            return None
        return self._plan.max_records_per_trigger or default_cap(self._rows_per_record)

    async def collect(self, stop_requested: Callable[[], bool]) -> list[RawRecord]:
        """Fetch the records of one micro-batch, per the trigger, unless a stop is requested."""
        plan = self._plan
        cap = self._batch_cap()
        if self._trigger_aware is not None:
            self._trigger_aware.trigger_started()
        self.sync_pauses()
        out: list[RawRecord] = []
        reached = dict(self._tracker.next) if self.run is not None else {}
        first_timeout = 200 if plan.trigger != "processingtime" else 50
        # A bounded run knows more is there: it waits briefly for the next
        # fetch response rather than cut the batch at one response's size.
        next_timeout = 50 if self.run is not None else 0
        while True:
            want = (cap - len(out)) if cap is not None else DEFAULT_BATCH_CAP
            if want <= 0:
                break
            got = await self._source.fetch(want, first_timeout if not out else next_timeout)
            if self.run is not None and got:
                got = self._within_run(got, reached)
            out.extend(got)
            if stop_requested() or (plan.trigger == "continuous" and out):
                break
            if self.run is not None:
                if self._reached_ends(reached) or not got:
                    break
            elif not got:
                break
        return out

    def _within_run(self, got: list[RawRecord], reached: dict[int, int]) -> list[RawRecord]:
        """The fetched records below the run's ends; reached[p] moves past them."""
        last: dict[int, int] = {}
        for r in got:  # offsets rise within a partition: the last one tells
            last[r.partition] = r.offset
        if all(offset < self.end(p) for p, offset in last.items()):
            kept = got
        else:
            kept = [r for r in got if r.offset < self.end(r.partition)]
            last = {}
            for r in kept:
                last[r.partition] = r.offset
        for p, offset in last.items():
            if offset + 1 > reached.get(p, 0):
                reached[p] = offset + 1
        return kept

    def _reached_ends(self, reached: dict[int, int]) -> bool:
        owned = self._source.assignment()
        return all(reached.get(p, 0) >= self.end(p) for p in owned) and not self._tracker.pending

    # -------------------------------------------------------------- the end
    def share_done(self) -> bool:
        """True when every owned partition reached the run's end."""
        if self.run is None:
            return False
        return self._reached_ends(self._tracker.next)

    def committed(self, partitions: Sequence[PartitionCommit]) -> None:
        """Stop fetching partitions a committed batch brought to the run's end."""
        if self.run is not None and partitions:
            self.sync_pauses()

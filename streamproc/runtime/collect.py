"""Collecting one micro-batch per the trigger, and where a bounded run ends.

    continuous      the first records that arrive (up to the batch cap)
    processingtime  everything available, up to the cap
    availablenow    everything available up to the end offsets, up to the cap
    once            everything available up to the end offsets, no cap

A bounded run (once, availablenow) takes each partition's end when the
partition is assigned: the larger of the listed end offset and the high
watermark of the first fetch response after the assignment, since the local
broker's ListOffsets can undercount (DESIGN.md section 5).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from streamproc.runtime.failures import first_line
from streamproc.runtime.partitions import PartitionTracker
from streamproc.runtime.plan import QueryPlan
from streamproc.sinks.base import PartitionCommit
from streamproc.sources.base import RawRecord, Source

log = logging.getLogger("streamproc.query")

# Without maxRecordsPerTrigger a micro-batch is still capped, so one
# transaction stays small; the cap never changes results, only batch sizes.
DEFAULT_BATCH_CAP = 20_000
BOUNDED_TRIGGERS = ("once", "availablenow")


class BatchCollector:
    """Fetches the records of each micro-batch; knows the ends of a bounded run."""

    def __init__(self, plan: QueryPlan, source: Source, tracker: PartitionTracker) -> None:
        self._plan = plan
        self._source = source
        self._tracker = tracker
        self.bounded = plan.trigger in BOUNDED_TRIGGERS
        #: Bounded runs: partition -> end offset (exclusive).
        self.ends: dict[int, int] = {}
        #: Bounded runs: partitions whose end still waits for a fetch response.
        self.end_pending: set[int] = set()

    # ------------------------------------------------------------ assignment
    async def assigned(self, partitions: set[int]) -> None:
        """Take the end offsets of newly assigned partitions (bounded runs only)."""
        if not self.bounded or not partitions:
            return
        try:
            listed = await self._source.end_offsets(partitions)
        except Exception as exc:
            log.warning("cannot list end offsets yet (%s)", first_line(exc))
            listed = {}
        for p in partitions:
            self.ends[p] = listed.get(p, 0)
            # The real end comes with the first fetch response: the local
            # broker's ListOffsets can undercount (DESIGN.md 5).
            self.end_pending.add(p)

    def revoked(self, partitions: set[int]) -> None:
        """Forget the ends of partitions another worker will own."""
        for p in partitions:
            self.ends.pop(p, None)
            self.end_pending.discard(p)

    # --------------------------------------------------------------- fetching
    def _batch_cap(self) -> int | None:
        if self._plan.trigger == "once":
            return None
        return self._plan.max_records_per_trigger or DEFAULT_BATCH_CAP

    async def collect(self, stop_requested: Callable[[], bool]) -> list[RawRecord]:
        """Fetch the records of one micro-batch, per the trigger, unless a stop is requested."""
        plan = self._plan
        cap = self._batch_cap()
        out: list[RawRecord] = []
        first_timeout = 200 if plan.trigger != "processingtime" else 50
        while True:
            want = (cap - len(out)) if cap is not None else DEFAULT_BATCH_CAP
            if want <= 0:
                break
            timeout = first_timeout if not out else 0
            if self.bounded and self.end_pending:
                # A zero timeout never yields to aiokafka's fetcher task, and
                # only its responses can tell the pending end offsets.
                timeout = max(timeout, 100)
            got = await self._source.fetch(want, timeout)
            if self.bounded:
                self._learn_ends()
                ends = self.ends
                got = [r for r in got if r.offset < ends.get(r.partition, 0)]
            out.extend(got)
            if stop_requested() or (plan.trigger == "continuous" and out):
                break
            if self.bounded:
                if self.done(out) or (not got and not self.end_pending):
                    break
            elif not got:
                break
        return out

    def _learn_ends(self) -> None:
        # aiokafka forgets a partition's high watermark when the partition is
        # (re)assigned, so the first one it knows again comes from a fetch
        # response after the assignment, i.e. after this run started.
        for p in list(self.end_pending):
            hw = self._source.highwater(p)
            if hw is not None:
                self.ends[p] = max(self.ends.get(p, 0), hw)
                self.end_pending.discard(p)
                if self._tracker.next.get(p, 0) >= self.ends[p]:
                    self._source.pause({p})

    # -------------------------------------------------------------- the end
    def done(self, pending: Sequence[RawRecord] = ()) -> bool:
        """True when every owned partition reached its end (counting fetched records)."""
        if self.end_pending:
            return False
        reached = dict(self._tracker.next)
        for r in pending:
            if r.offset + 1 > reached.get(r.partition, 0):
                reached[r.partition] = r.offset + 1
        return all(reached.get(p, 0) >= end for p, end in self.ends.items())

    def committed(self, partitions: Sequence[PartitionCommit]) -> None:
        """Stop fetching partitions a committed batch brought to their end."""
        if not self.bounded:
            return
        done = {p.partition for p in partitions if p.next_offset >= self.ends.get(p.partition, 0)}
        done -= self.end_pending
        if done:
            self._source.pause(done)

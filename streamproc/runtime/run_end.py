"""When a bounded run (once, availablenow) is done, and how far it got.

A bounded run takes every partition's end offset once, when it begins
(`Checkpoint.begin_run`); every worker of the query reads up to those ends and
the run is complete when the checkpoint's committed offsets reached all of
them, whoever committed them. `RunEnd` holds what one worker knows of its run:
where it began, the query's committed offsets as last read, and whether it
still has to join the consumer group (an early start reads alone until another
worker of the query runs).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping

from streamproc.runtime.accounting import RunStats
from streamproc.runtime.collect import BatchCollector
from streamproc.runtime.failure_kinds import first_line, is_outage
from streamproc.runtime.plan import QueryPlan
from streamproc.runtime.stall import StallWatch
from streamproc.sinks.base import BoundedRun, Checkpoint
from streamproc.sources.base import Source

log = logging.getLogger("streamproc.query")

#: While a worker waits for its group's first assignment: how often a bounded run
#: asks whether it is already complete, and how often a long wait is said (seconds).
JOIN_POLL_S = 2.0
JOIN_WARN_S = 60.0
#: How often a worker whose share of a bounded run is done asks whether the run is,
#: and how often an early start asks whether another worker of the query runs.
RUN_POLL_S = 0.5


class RunEnd:
    """The end of one worker's bounded run: when it is done, and how far it got."""

    def __init__(
        self,
        plan: QueryPlan,
        *,
        source: Source,
        checkpoint: Checkpoint,
        collector: BatchCollector,
        stats: RunStats,
        stall: StallWatch,
    ) -> None:
        self._plan = plan
        self._source = source
        self._checkpoint = checkpoint
        self._collector = collector
        self._stats = stats
        self._stall = stall
        #: Each partition's committed offset when this worker began or joined.
        self._starts: dict[int, int] = {}
        #: The query's committed offsets as last read (any worker's).
        self._committed: dict[int, int] = {}
        #: When a run that fetched nothing last asked whether it is complete.
        self._idle_checked = 0.0
        #: An early start's watch for other workers, until it joins the group.
        self._join_watch: asyncio.Future[None] | None = None

    @property
    def run(self) -> BoundedRun | None:
        """The run this worker is in (None: a continuous query, or before it began)."""
        return self._collector.run

    async def begin(self) -> None:
        """Begin or join the query's bounded run: its end offsets and this worker's starts."""
        run = await self._checkpoint.begin_run(self._plan.trigger, self._take_ends)
        self._collector.start_run(run)
        self._starts = await self._start_offsets(run.ends)
        self._stats.run_id = run.run_id
        self._stats.run_partitions = len(run.ends)
        log.info(
            "%s bounded run %d of query %s: end offsets %s",
            "joined" if run.joined else "began",
            run.run_id,
            self._plan.query_name,
            dict(sorted(run.ends.items())),
        )

    def watch_for_others(self) -> None:
        """An early start: join the consumer group once another worker of the query runs."""
        self._join_watch = asyncio.ensure_future(self._join_when_others_run())

    async def close(self) -> None:
        """Stop watching for other workers."""
        if self._join_watch is not None:
            self._join_watch.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._join_watch

    def offsets(self, committed: Mapping[int, int]) -> tuple[int, int] | None:
        """(offsets done, offsets in all) since this worker began or joined the run.

        Args:
            committed: This worker's committed offset of each partition.
        """
        run = self._collector.run
        if run is None:
            return None
        total = done = 0
        for p, end in run.ends.items():
            start = min(self._starts.get(p, end), end)
            total += end - start
            done += min(max(committed.get(p, start) - start, 0), end - start)
        return (total if self._stats.run_complete else done), total

    def behind(self, committed: Mapping[int, int]) -> dict[int, tuple[int, int]] | None:
        """Each partition not at its end yet: (committed offset, end); None outside a run.

        Args:
            committed: This worker's committed offset of each partition.
        """
        run = self._collector.run
        if run is None:
            return None
        known = {**self._committed, **committed}
        return {
            p: (known.get(p, self._starts.get(p, 0)), end)
            for p, end in run.ends.items()
            if known.get(p, 0) < end
        }

    async def _start_offsets(self, ends: Mapping[int, int]) -> dict[int, int]:
        """Where each partition of a bounded run starts for this worker (for `offsets`)."""
        starts = await self._checkpoint.committed_offsets()
        missing = [p for p, end in ends.items() if p not in starts and end > 0]
        if missing:
            # Read from the log start (earliest; under latest such an end is 0).
            found = await self._source.describe(dict.fromkeys(missing))
            starts.update({p: found[p].log_start for p in missing})
        return starts

    async def _take_ends(self) -> dict[int, int]:
        """The end offsets of a new bounded run: every partition's end right now.

        A partition with no checkpoint yet starts per startingOffsets; when
        that start is already its end (latest, or an emptied log) there is
        nothing to read in this run, and its end is 0.
        """
        count = await self._source.partition_count()
        committed = await self._checkpoint.committed_offsets()
        found = await self._source.describe(dict.fromkeys(range(count)))
        ends = {}
        for p in range(count):
            info = found[p]
            end = info.end
            if p not in committed:
                start = info.log_start if self._plan.starting_offsets == "earliest" else end
                end = end if start < end else 0
            ends[p] = end
        return ends

    async def idle_done(self) -> bool:
        """A bounded run that fetched nothing: every RUN_POLL_S, whether the run is complete."""
        if self._collector.run is None:
            return False
        now = time.monotonic()
        if now - self._idle_checked < RUN_POLL_S:
            return False
        self._idle_checked = now
        return await self.done()

    async def _join_when_others_run(self) -> None:
        """An early start joins the consumer group once another worker of the query runs.

        Alone, it reads every partition and never joins: a join the broker holds
        for seconds (its initial rebalance delay) would only delay the end of the
        run, and a member that leaves with its join pending makes the group wait
        for it. With others it joins, within RUN_POLL_S, and the group shares the
        partitions out.
        """
        while True:
            try:
                others = await self._checkpoint.other_workers()
            except Exception as exc:
                if not is_outage(exc):
                    log.warning("cannot tell whether other workers run: %s", first_line(exc))
                others = 0  # asked again in a while
            if others:
                break
            await asyncio.sleep(RUN_POLL_S)
        log.info(
            "query %s: %d other worker(s) run it: joining the consumer group to share the "
            "partitions",
            self._plan.query_name,
            others,
        )
        await self._source.join_group()

    async def done(self) -> bool:
        """True when every partition of the topic reached the run's end, whoever processed it."""
        run = self._collector.run
        assert run is not None
        try:
            committed = await self._checkpoint.committed_offsets()
        except Exception as exc:
            if not is_outage(exc):
                raise
            return False  # asked again after the next batch
        self._committed = committed
        self._stall.run_offsets(time.monotonic(), committed)
        if any(committed.get(p, 0) < end for p, end in run.ends.items()):
            return False
        self._stats.run_complete = True
        try:
            await self._checkpoint.finish_run(run)
        except Exception as exc:  # the run is complete either way
            log.warning("cannot mark bounded run %d done: %s", run.run_id, first_line(exc))
        return True

    async def over(
        self, fetched: bool, settle: Callable[[], Awaitable[object]], stop: asyncio.Event
    ) -> bool:
        """After a batch: True when this worker's part in a bounded run is over.

        Args:
            fetched: The batch had records.
            settle: Settles the batch in flight (before the run is asked about).
            stop: Set when the worker is asked to stop.
        """
        if self._collector.share_done():
            await settle()
            if await self.done():
                return True
            # Others still work on the run: ask again in a while, not in a spin.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), RUN_POLL_S)
        elif not fetched and await self.idle_done():
            # Nothing to read, though this worker's share is not done by its
            # own count: its partitions may be in a rebalance whose answer never
            # comes (the other members finished the run and left).
            await settle()
            return True
        return False

    async def wait_for_assignment(self, stop: asyncio.Event, joined: asyncio.Event) -> bool:
        """Wait for the group's first assignment; False when there is nothing left to do.

        A member of a bounded run also asks the checkpoint, every `JOIN_POLL_S`,
        whether the run is complete: the other members can finish it and leave
        while this one's join is pending, and the broker may then never answer
        that join (the local one did not, and the worker waited for ever). A join
        that takes long is said every `JOIN_WARN_S`.
        """
        stopped = asyncio.ensure_future(stop.wait())
        assigned = asyncio.ensure_future(joined.wait())
        waited = said = 0.0
        try:
            while True:
                done, _ = await asyncio.wait(
                    {stopped, assigned}, timeout=JOIN_POLL_S, return_when=asyncio.FIRST_COMPLETED
                )
                if done:
                    return True
                waited += JOIN_POLL_S
                run = self._collector.run
                if run is not None and await self.done():
                    log.info(
                        "bounded run %d of query %s completed while this worker was joining "
                        "its consumer group: nothing left for it to read",
                        run.run_id,
                        self._plan.query_name,
                    )
                    return False
                if waited - said >= JOIN_WARN_S:
                    said = waited
                    log.warning(
                        "query %s: no assignment from the consumer group after %.0fs (the "
                        "broker has not answered this worker's join; the group may be "
                        "rebalancing); still waiting",
                        self._plan.query_name,
                        waited,
                    )
        finally:
            for fut in (stopped, assigned):
                fut.cancel()

"""StreamingQuery: the micro-batch loop of one worker.

A batch flows through these parts, in this order:

    BatchCollector.collect      fetch per the trigger (bounded runs: up to the ends)
    PartitionTracker            drop what a rebalance made stale, keep contiguous records
    BatchCommitter              decode, quality, engine.process/emit, prepare_commit,
                                dead letters, one Checkpoint.commit
    FailurePolicy               outage -> wait and replay; refusal -> isolate or stop
    Accounting                  counts, metrics, progress records and log lines of what committed
    Source.commit               group offsets (informational: the ledger decides)

The loop holds one lock around each batch and around rebalance callbacks, so
an assignment change never interleaves with a commit; the tracker's
generation tells a batch fetched across a change to rewind and start over.
See STREAMING.md "Exactly once" and FAULTS.md for the failure policy.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from aiokafka.errors import KafkaConnectionError

from streamproc.engine import engine_for
from streamproc.runtime import metrics
from streamproc.runtime.accounting import Accounting, RunStats, UnreadTally
from streamproc.runtime.clock import wall_clock_ms
from streamproc.runtime.collect import BatchCollector
from streamproc.runtime.committer import BatchCommitter
from streamproc.runtime.connect_errors import connect_failure_line
from streamproc.runtime.failures import (
    STOP_ERRORS,
    FailureKind,
    QueryFailedError,
    SinkOutage,
    classify_failure,
    first_line,
    is_outage,
)
from streamproc.runtime.gcpolicy import batch_pace
from streamproc.runtime.logcontext import log_context
from streamproc.runtime.partitions import PartitionTracker
from streamproc.runtime.plan import QueryPlan
from streamproc.runtime.prepare import PreparedBatch
from streamproc.runtime.progress import QueryProgress, build_progress, fold_phases, phase_delta
from streamproc.runtime.quality import QualityAbortError, QualityGate
from streamproc.runtime.resilience import BreakerState, CircuitBreaker, call_with_retry
from streamproc.runtime.routers import Position
from streamproc.runtime.stall import STOP_AFTER_S, StallWatch
from streamproc.runtime.wiring import QueryPorts, kafka_postgres_ports
from streamproc.sinks.base import CommitOutcome, PartitionCommit
from streamproc.sources.base import RawRecord
from streamproc.state.base import WindowStore

__all__ = ["QueryFailedError", "RunStats", "StreamingQuery"]

log = logging.getLogger("streamproc.query")

#: While a worker waits for its group's first assignment: how often a bounded run
#: asks whether it is already complete, and how often a long wait is said (seconds).
JOIN_POLL_S = 2.0
JOIN_WARN_S = 60.0
#: How often a worker whose share of a bounded run is done asks whether the run is,
#: and how often an early start asks whether another worker of the query runs.
RUN_POLL_S = 0.5


@dataclass(slots=True)
class _InFlight:
    """A prepared batch whose delivery is running."""

    prepared: PreparedBatch
    task: asyncio.Task[CommitOutcome]
    sent: set[Position]
    generation: int
    #: The worker's number for it (1, 2, ...): its log lines' batchId and its progress record's.
    number: int = 0
    #: perf_counter when its fetch began, and the seconds of its preparation's phases.
    fetch_started: float = 0.0
    prepare_seconds: Mapping[str, float] = field(default_factory=dict)
    #: perf_counter and wall clock (epoch ms) when its delivery ended: the loop
    #: settles it later (after the next tick, with processingtime).
    delivered_s: float | None = None
    delivered_ms: int | None = None


class StreamingQuery:
    """One worker of a streaming query: owns some partitions of the source topic."""

    def __init__(
        self,
        plan: QueryPlan,
        store_factory: Callable[[int], WindowStore],
        *,
        ports: QueryPorts | None = None,
        clock_ms: Callable[[], int] = wall_clock_ms,
        on_progress: Callable[[QueryProgress], None] | None = None,
    ) -> None:
        """Args:
        plan: The query, resolved from its config.
        store_factory: Opens the working-state store of a partition.
        ports: The adapters to run on (default: Kafka and PostgreSQL from the plan).
        clock_ms: Wall clock in epoch milliseconds, for the engine's idleness.
        on_progress: Called with each committed batch's progress record.
        """
        self.plan = plan
        ports = ports or kafka_postgres_ports(plan)
        self._ports = ports
        self._source = ports.source
        self._unread = UnreadTally(ports.source)
        self._checkpoint = ports.checkpoint
        breaker_gauge = metrics.BREAKER_OPEN.labels(plan.pipeline_id, plan.query_name)
        breaker_gauge.set(0)
        self._breaker = CircuitBreaker(
            plan.breaker,
            name=f"{plan.query_name} sink",
            # Half-open counts as open: the sink is not known to be back yet.
            on_change=lambda state: breaker_gauge.set(0 if state is BreakerState.CLOSED else 1),
        )
        self._accounting = Accounting(
            plan.query_name,
            ports.late,
            ports.bad,
            pipeline=plan.pipeline_id,
            include_metrics=plan.include_metrics,
        )
        self._clock_ms = clock_ms
        self._on_progress = on_progress
        #: Bounded runs: each partition's committed offset when this worker began or joined.
        self._run_starts: dict[int, int] = {}
        #: perf_counter when the fetch of the last batch with a progress record began.
        self._last_fetch_started: float | None = None
        #: perf_counter when the fetch of the last batch sent to the checkpoint began.
        self._last_launch_fetch: float | None = None
        self._tracker = PartitionTracker(
            plan.query_name,
            ports.source,
            ports.checkpoint,
            lambda: engine_for(plan.spec, store_factory, clock_ms),
        )
        self._collector = BatchCollector(plan, ports.source, self._tracker)
        self._committer = BatchCommitter(
            plan,
            tracker=self._tracker,
            collector=self._collector,
            checkpoint=ports.checkpoint,
            quality=QualityGate(
                plan.quality, plan.spec.group_by, [a.output for a in plan.spec.aggregations]
            ),
            late=ports.late,
            bad=ports.bad,
            dead_letter_writer=ports.dead_letter_writer,
            accounting=self._accounting,
            breaker=self._breaker,
        )
        self._lock = asyncio.Lock()
        self._stop = asyncio.Event()
        self._joined = asyncio.Event()
        #: The batch whose delivery runs while the next one is prepared.
        self._inflight: _InFlight | None = None
        #: An outage met while preparing (a checkpoint read), waited out by the loop.
        self._outage: Exception | None = None
        #: Batches fetched with records so far: the number of the last one.
        self._batch_number = 0
        #: Says when nothing moves on though there is work (streamproc/runtime/stall.py).
        self._stall = StallWatch(
            time.monotonic(), stop_after_s=STOP_AFTER_S if self.bounded else None
        )
        self._setbacks_seen = 0
        #: A bounded run: the query's committed offsets as last read (any worker's).
        self._run_committed: dict[int, int] = {}
        #: When a bounded run that fetched nothing last asked whether it is complete.
        self._idle_checked = 0.0
        #: An early start's watch for other workers, until it joins the group.
        self._join_watch: asyncio.Future[None] | None = None

    # ----------------------------------------------------------------- control
    @property
    def stats(self) -> RunStats:
        """What this worker committed so far."""
        return self._accounting.stats

    @property
    def recent_progress(self) -> tuple[QueryProgress, ...]:
        """The last committed batches' progress records, oldest first (at most 100).

        Spark's `StreamingQuery.recentProgress`. Batches the failure policy
        split up to isolate a refused record have none.
        """
        return tuple(self._accounting.recent)

    @property
    def last_progress(self) -> QueryProgress | None:
        """The last committed batch's progress record (Spark's `lastProgress`)."""
        recent = self._accounting.recent
        return recent[-1] if recent else None

    def request_stop(self) -> None:
        """Finish the batch in flight, commit it, then stop."""
        self._stop.set()

    async def wait_until_assigned(self) -> None:
        """Return once this worker has joined the consumer group (with or without partitions)."""
        await self._joined.wait()

    def run_offsets(self) -> tuple[int, int] | None:
        """A bounded run's (offsets done, offsets in all) since this worker began or joined it.

        Done counts this worker's commits (all of them once the run is
        complete); None for a continuous query, or before the run began.
        """
        run = self._collector.run
        if run is None:
            return None
        committed = self._tracker.committed
        total = done = 0
        for p, end in run.ends.items():
            start = min(self._run_starts.get(p, end), end)
            total += end - start
            done += min(max(committed.get(p, start) - start, 0), end - start)
        return (total if self.stats.run_complete else done), total

    @property
    def bounded(self) -> bool:
        """True for once/availablenow runs, which stop at the end offsets taken at start."""
        return self._collector.bounded

    # -------------------------------------------------------- rebalance hooks
    async def on_assigned(self, partitions: set[int]) -> None:
        """Restore each new partition exactly from the checkpoint and seek to its ledger offset."""
        async with self._lock:
            # Under the lock: the loop cannot send another batch meanwhile.
            await self._delivered()
            await self._tracker.assigned(partitions)
            self._collector.sync_pauses()
            owned = sorted(self._source.assignment())
            self._accounting.assigned(self._tracker.restored(self._source.seen_ends()))
            log.info("assigned partitions %s", owned)
        self._joined.set()

    async def on_revoked(self, partitions: set[int]) -> None:
        """Drop local state of partitions another worker will own."""
        async with self._lock:
            # Under the lock: a batch sent after this returned would still be the old
            # owner's while the new owner restores (its commit would then be stale).
            await self._delivered()
            await self._tracker.revoked(partitions)
            self._accounting.revoked(partitions, len(self._source.assignment()))
            log.info("revoked partitions %s", sorted(partitions))

    # ---------------------------------------------------------------- the loop
    async def run(self) -> RunStats:
        """Run until stopped (or, for bounded triggers, until the end offsets)."""
        plan = self.plan
        with batch_pace(), log_context(pipeline_id=plan.pipeline_id, query=plan.query_name):
            return await self._run()

    async def _run(self) -> RunStats:
        try:
            # Once per process; here so that every way of running a query serves it.
            metrics.start_metrics_server(self.plan.metrics_address, self.plan.metrics_port)
        except metrics.MetricsServerError as exc:
            raise QueryFailedError(str(exc)) from None
        try:
            await call_with_retry(
                self._checkpoint.open,
                self.plan.retry,
                self._breaker,
                what="opening the sink",
                is_outage=is_outage,
                retry_if=is_outage,
            )
        except STOP_ERRORS as exc:
            # A changed definition, a table another query owns, an incompatible
            # table, a missing privilege: its message says what and what to do.
            raise QueryFailedError(str(exc)) from None
        except Exception as exc:
            # A server that cannot be reached, or a login it refuses (a wrong password is
            # no outage: it is not retried), is one line naming host:port, never the DSN.
            line = connect_failure_line(self.plan.dsn or "", exc)
            if line is None and not is_outage(exc):
                raise
            raise QueryFailedError(
                f"query {self.plan.query_name}: "
                + (line or f"cannot reach the sink: {first_line(exc)}")
            ) from exc
        try:
            await self._start_kafka()
            if await self._wait_for_assignment():
                await self._loop()
        except STOP_ERRORS as exc:
            raise QueryFailedError(str(exc)) from None
        finally:
            await self._shutdown()
        return self.stats

    async def _start_kafka(self) -> None:
        """Start the Kafka clients (dead letters, a Kafka sink, the source) and a bounded run.

        A broker that cannot be reached at start is one line, as an unreachable
        PostgreSQL is, not a traceback; once running, broker outages are waited out.
        """
        try:
            for sink in (self._ports.dead_letter_writer, self._ports.result_sink):
                if sink is not None:
                    await sink.start()
            if self.bounded:
                run = await self._checkpoint.begin_run(self.plan.trigger, self._take_ends)
                self._collector.start_run(run)
                self._run_starts = await self._start_offsets(run.ends)
                self.stats.run_id = run.run_id
                self.stats.run_partitions = len(run.ends)
                log.info(
                    "%s bounded run %d of query %s: end offsets %s",
                    "joined" if run.joined else "began",
                    run.run_id,
                    self.plan.query_name,
                    dict(sorted(run.ends.items())),
                )
            # A bounded run that began alone starts reading at once, without
            # waiting seconds for the group's first assignment.
            early = self._collector.run is not None and not self._collector.run.joined
            await self._source.start(self, early=early)
            if early:
                self._join_watch = asyncio.ensure_future(self._join_when_others_run())
        except KafkaConnectionError as exc:
            raise QueryFailedError(
                f"query {self.plan.query_name}: cannot reach Kafka: {first_line(exc)} "
                "(check extract.bootstrapServers, dlqConfig.bootstrapServers and that the "
                "broker is up)"
            ) from None

    async def _loop(self) -> None:
        """Fetch, prepare and commit batches; one commit is in flight while the next is prepared.

        The engine folds batch N+1 while batch N's transaction runs in
        PostgreSQL. N+1 starts where N ends; if N does not commit (stale,
        refused, an outage), N+1 is discarded: the engine is rebuilt from the
        checkpoint and the consumer fetches again from there.
        """
        next_tick = time.monotonic()
        try:
            while not self._stop.is_set():
                if self.plan.trigger == "processingtime":
                    next_tick = await self._wait_for_tick(next_tick)
                    if self._stop.is_set():
                        break
                generation = self._tracker.generation
                fetch_started = time.perf_counter()
                before = self.stats.times.snapshot()
                with self.stats.times.phase("fetch"):
                    raws = await self._collector.collect(self._stop.is_set)
                started = time.perf_counter()
                if raws:
                    self._batch_number += 1
                with log_context(batch_id=self._batch_number if raws else None):
                    prepared = await self._prepare(raws, generation)
                # Only preparation phases count: the batch in flight adds others meanwhile.
                prepare_seconds = phase_delta(before, self.stats.times.snapshot())
                kept = await self._settle()
                if prepared is not None:
                    if kept and generation == self._tracker.generation:
                        self._launch(prepared, generation, fetch_started, prepare_seconds)
                    else:
                        async with self._lock:
                            self._tracker.discard_planned()
                            self._tracker.rewind()  # fetched again, after what committed
                self.stats.batch_seconds += time.perf_counter() - started
                if self._collector.share_done():
                    await self._settle()
                    if await self._run_done():
                        return
                    # Others still work on the run: ask again in a while, not in a spin.
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._stop.wait(), RUN_POLL_S)
                elif not raws and await self._idle_run_done():
                    # Nothing to read, though this worker's share is not done by its
                    # own count: its partitions may be in a rebalance whose answer never
                    # comes (the other members finished the run and left).
                    await self._settle()
                    return
                self._watch_progress()
        finally:
            await self._settle()

    def _watch_progress(self) -> None:
        """Say (within a minute) when nothing moves on though there is work; stop a stuck run."""
        stats = self.stats
        while self._setbacks_seen < stats.setbacks:
            self._setbacks_seen += 1
            self._stall.setback(stats.last_setback or "unknown")
        run = self._collector.run
        behind = None
        if run is not None:
            committed = {**self._run_committed, **self._tracker.committed}
            behind = {
                p: (committed.get(p, self._run_starts.get(p, 0)), end)
                for p, end in run.ends.items()
                if committed.get(p, 0) < end
            }
        stalled = self._stall.check(time.monotonic(), behind)
        if stalled is None:
            return
        where = f"query {self.plan.query_name}" + (
            f", bounded run {run.run_id}" if run is not None else ""
        )
        if stalled.stop:
            raise QueryFailedError(
                f"{where} stopped: {stalled.message}; nothing was lost (a rerun resumes from "
                "the checkpoint)"
            )
        log.warning("%s: %s", where, stalled.message)

    async def _prepare(self, raws: list[RawRecord], generation: int) -> PreparedBatch | None:
        """Fold a fetched batch into the engine and build its commit (under the lock)."""
        tracker = self._tracker
        async with self._lock:
            if generation != tracker.generation:
                # The assignment changed while fetching. Records fetched after
                # its seeks moved the consumer on, so seek back: dropping
                # fetched records without a seek would skip them for good.
                tracker.rewind()
                return None
            try:
                if tracker.pending:
                    # Partitions assigned while the sink was unreachable: restore
                    # and seek them first; what was fetched meanwhile comes again.
                    await self._settle_locked()
                    tracker.generation += 1
                    tracker.rewind()
                    await tracker.restore_pending()
                    return None
                return await self._committer.prepare_next(tracker.contiguous(raws))
            except QualityAbortError as exc:
                # Nothing of the batch was written; a restart replays it.
                raise QueryFailedError(f"query {self.plan.query_name} stopped: {exc}") from exc
            except SinkOutage as exc:
                self._outage = exc.cause
                return None
            except (asyncio.CancelledError, QueryFailedError):
                raise
            except STOP_ERRORS:
                raise
            except Exception as exc:
                # A read of the checkpoint (restore, watermarks) failed.
                if classify_failure(exc) is not FailureKind.UNAVAILABLE:
                    raise self._committer.policy.fatal(exc) from exc
                self._outage = exc
                return None

    def _launch(
        self,
        prepared: PreparedBatch,
        generation: int,
        fetch_started: float,
        prepare_seconds: Mapping[str, float],
    ) -> None:
        """Start delivering a prepared batch (dead letters, transaction) in the background."""
        sent: set[Position] = set()
        number = self._batch_number
        last, self._last_launch_fetch = self._last_launch_fetch, fetch_started
        rows = sum(p.records for p in prepared.commit.partitions)
        since = None if last is None else fetch_started - last
        note = self._committer.note(
            batch_number=number,
            input_rows_per_second=rows / since if since else None,
            duration_ms=fold_phases(prepare_seconds),
            **self._unread.pending(),
        )
        # The task starts with a copy of this context: its lines carry the batch's number.
        with log_context(batch_id=number):
            task = asyncio.ensure_future(self._committer.deliver(prepared, sent, note=note))
        inflight = _InFlight(
            prepared, task, sent, generation, number, fetch_started, prepare_seconds
        )
        task.add_done_callback(lambda _: self._delivered_at(inflight))
        self._inflight = inflight

    def _delivered_at(self, inflight: _InFlight) -> None:
        inflight.delivered_s = time.perf_counter()
        inflight.delivered_ms = self._clock_ms()

    async def _delivered(self) -> None:
        """Wait until the batch in flight is delivered (its outcome is handled later)."""
        inflight = self._inflight
        if inflight is not None:
            await asyncio.wait({inflight.task})

    async def _settle(self) -> bool:
        """Handle the outcome of the batch in flight; False when what followed it is void."""
        outage: Exception | None = None
        async with self._lock:
            try:
                kept = await self._settle_locked()
            except SinkOutage as exc:
                outage, kept = exc.cause, False
        if outage is None and self._outage is not None:
            outage, kept = self._outage, False
        self._outage = None
        if outage is not None:
            # Waiting happens outside the lock so that rebalances go on meanwhile.
            await self._committer.policy.wait_for_sink(outage, self._stop, self._lock)
            return False
        return kept

    async def _settle_locked(self) -> bool:
        inflight, self._inflight = self._inflight, None
        if inflight is None:
            return True
        await asyncio.wait({inflight.task})
        with log_context(batch_id=inflight.number):
            committed = await self._committer.settle(
                inflight.prepared,
                inflight.task,
                inflight.sent,
                assignment_changed=inflight.generation != self._tracker.generation,
            )
            if committed is None:
                return False
            self._stall.progressed(time.monotonic())
            self._progressed(inflight)
        await self._commit_offsets(committed)
        return True

    def _progressed(self, inflight: _InFlight) -> None:
        """Record the progress of a batch that committed."""
        outcome = inflight.task.result()
        commit = inflight.prepared.commit
        delivered_s = inflight.delivered_s or time.perf_counter()
        last = self._last_fetch_started
        self._last_fetch_started = inflight.fetch_started
        progress = build_progress(
            pipeline_id=self.plan.pipeline_id,
            query=self.plan.query_name,
            topic=self.plan.topic,
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
            metrics.STATE_BYTES.labels(self.plan.pipeline_id, self.plan.query_name).set(state_bytes)
        if self._on_progress is not None:
            self._on_progress(progress)

    async def _start_offsets(self, ends: Mapping[int, int]) -> dict[int, int]:
        """Where each partition of a bounded run starts for this worker (for `run_offsets`)."""
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
                start = info.log_start if self.plan.starting_offsets == "earliest" else end
                end = end if start < end else 0
            ends[p] = end
        return ends

    async def _idle_run_done(self) -> bool:
        """A bounded run that fetched nothing: every RUN_POLL_S, whether the run is complete."""
        if self._collector.run is None:
            return False
        now = time.monotonic()
        if now - self._idle_checked < RUN_POLL_S:
            return False
        self._idle_checked = now
        return await self._run_done()

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
            self.plan.query_name,
            others,
        )
        await self._source.join_group()

    async def _run_done(self) -> bool:
        """True when every partition of the topic reached the run's end, whoever processed it."""
        run = self._collector.run
        assert run is not None
        try:
            committed = await self._checkpoint.committed_offsets()
        except Exception as exc:
            if not is_outage(exc):
                raise
            return False  # asked again after the next batch
        self._run_committed = committed
        self._stall.run_offsets(time.monotonic(), committed)
        if any(committed.get(p, 0) < end for p, end in run.ends.items()):
            return False
        self.stats.run_complete = True
        try:
            await self._checkpoint.finish_run(run)
        except Exception as exc:  # the run is complete either way
            log.warning("cannot mark bounded run %d done: %s", run.run_id, first_line(exc))
        return True

    async def _wait_for_assignment(self) -> bool:
        """Wait for the group's first assignment; False when there is nothing left to do.

        A member of a bounded run also asks the checkpoint, every `JOIN_POLL_S`,
        whether the run is complete: the other members can finish it and leave
        while this one's join is pending, and the broker may then never answer
        that join (the local one did not, and the worker waited for ever). A join
        that takes long is said every `JOIN_WARN_S`.
        """
        stop = asyncio.ensure_future(self._stop.wait())
        joined = asyncio.ensure_future(self._joined.wait())
        waited = said = 0.0
        try:
            while True:
                done, _ = await asyncio.wait(
                    {stop, joined}, timeout=JOIN_POLL_S, return_when=asyncio.FIRST_COMPLETED
                )
                if done:
                    return True
                waited += JOIN_POLL_S
                run = self._collector.run
                if run is not None and await self._run_done():
                    log.info(
                        "bounded run %d of query %s completed while this worker was joining "
                        "its consumer group: nothing left for it to read",
                        run.run_id,
                        self.plan.query_name,
                    )
                    return False
                if waited - said >= JOIN_WARN_S:
                    said = waited
                    log.warning(
                        "query %s: no assignment from the consumer group after %.0fs (the "
                        "broker has not answered this worker's join; the group may be "
                        "rebalancing); still waiting",
                        self.plan.query_name,
                        waited,
                    )
        finally:
            for fut in (stop, joined):
                fut.cancel()

    async def _wait_for_tick(self, next_tick: float) -> float:
        interval = (self.plan.trigger_interval_ms or 1000) / 1000
        delay = next_tick - time.monotonic()
        if delay > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), delay)
        # A batch that overran its interval starts the next one at once.
        return max(next_tick + interval, time.monotonic())

    async def _commit_offsets(self, partitions: list[PartitionCommit]) -> None:
        try:
            await self._source.commit({p.partition: p.next_offset for p in partitions})
        except Exception as exc:  # offsets are informational; the ledger decides
            log.debug("consumer offset commit failed: %s", exc)

    async def _shutdown(self) -> None:
        if self._join_watch is not None:
            self._join_watch.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._join_watch
        ports = self._ports
        closers = [ports.source.stop]
        closers += [s.stop for s in (ports.dead_letter_writer, ports.result_sink) if s is not None]
        closers.append(ports.checkpoint.close)
        for closer in closers:
            try:
                await closer()
            except Exception as exc:
                log.warning("error while stopping: %s", first_line(exc))
        self._committer.close()
        try:
            self._tracker.engine.close()
        except Exception as exc:
            # After a failed write RocksDB refuses to close; what failed was
            # already said, and must stay the last line.
            log.debug("closing the local state: %s", first_line(exc))

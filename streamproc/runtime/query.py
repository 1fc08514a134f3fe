"""StreamingQuery: the micro-batch loop of one worker.

A batch flows through these parts, in this order:

    BatchCollector.collect      fetch per the trigger (bounded runs: up to the ends)
    PartitionTracker            drop what a rebalance made stale, keep contiguous records
    BatchCommitter              decode, quality, engine.process/emit, prepare_commit,
                                dead letters, one Checkpoint.commit
    FailurePolicy               outage -> wait and replay; refusal -> isolate or stop
    Accounting                  counts, metrics, progress records and log lines of what committed
                                (ProgressRecorder builds each batch's progress record)
    Source.commit               group offsets (informational: the ledger decides)
    RunEnd                      bounded runs: whether the run is done, how far it got

The loop holds one lock around each batch and around rebalance callbacks, so
an assignment change never interleaves with a commit; the tracker's
generation tells a batch fetched across a change to rewind and start over.
See STREAMING.md "Exactly once" and FAULTS.md for the failure policy.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping

from streamproc.engine import engine_for
from streamproc.port_errors import FailureKind, PortUnreachable
from streamproc.runtime import metrics
from streamproc.runtime.accounting import Accounting, RunStats
from streamproc.runtime.clock import wait_for_tick, wall_clock_ms
from streamproc.runtime.collect import BatchCollector
from streamproc.runtime.committer import BatchCommitter
from streamproc.runtime.connect_errors import connect_failure_line
from streamproc.runtime.failure_kinds import (
    STOP_ERRORS,
    QueryFailedError,
    SinkOutage,
    classify_failure,
    first_line,
    is_outage,
)
from streamproc.runtime.failure_policy import FailurePolicy
from streamproc.runtime.gcpolicy import batch_pace
from streamproc.runtime.inflight import InFlight
from streamproc.runtime.logcontext import log_context
from streamproc.runtime.partitions import PartitionTracker
from streamproc.runtime.plan import QueryPlan
from streamproc.runtime.prepare import Outage, Prepared, PreparedBatch, PrepareOutcome, Rewind
from streamproc.runtime.progress_recorder import ProgressRecorder
from streamproc.runtime.quality import QualityAbortError, QualityGate
from streamproc.runtime.query_progress import QueryProgress, phase_delta
from streamproc.runtime.resilience import BreakerState, CircuitBreaker, call_with_retry
from streamproc.runtime.routers import Position
from streamproc.runtime.run_end import RunEnd
from streamproc.runtime.stall import STOP_AFTER_S, StallWatch
from streamproc.runtime.wiring import QueryPorts, kafka_postgres_ports
from streamproc.sinks.base import PartitionCommit
from streamproc.sources.base import RawRecord
from streamproc.state.base import WindowStore

__all__ = ["QueryFailedError", "RunStats", "StreamingQuery"]

log = logging.getLogger("streamproc.query")


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
        clock_ms: Wall clock in epoch milliseconds, for the engine's idleness, the
            event-time guard and the progress records' timestamps.
        on_progress: Called with each committed batch's progress record.
        """
        self.plan = plan
        ports = ports or kafka_postgres_ports(plan)
        self._ports = ports
        self._source = ports.source
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
            quality=QualityGate.of(plan.quality, plan.spec, self._tracker.where),
            late=ports.late,
            bad=ports.bad,
            dead_letter_writer=ports.dead_letter_writer,
            accounting=self._accounting,
            breaker=self._breaker,
            clock_ms=clock_ms,
        )
        # The policy commits a refused batch again, in parts, through the committer.
        self._policy = FailurePolicy(
            plan,
            delivery=self._committer,
            tracker=self._tracker,
            bad=ports.bad,
            accounting=self._accounting,
            breaker=self._breaker,
        )
        self._committer.use_policy(self._policy)
        self._progress = ProgressRecorder(
            plan,
            source=ports.source,
            tracker=self._tracker,
            accounting=self._accounting,
            note=self._committer.note,
            clock_ms=clock_ms,
            on_progress=on_progress,
        )
        self._lock = asyncio.Lock()
        self._stop = asyncio.Event()
        self._joined = asyncio.Event()
        #: The batch whose delivery runs while the next one is prepared.
        self._inflight: InFlight | None = None
        #: Batches fetched with records so far: the number of the last one.
        self._batch_number = 0
        #: Says when nothing moves on though there is work (streamproc/runtime/stall.py).
        self._stall = StallWatch(
            time.monotonic(), stop_after_s=STOP_AFTER_S if self.bounded else None
        )
        self._setbacks_seen = 0
        #: Bounded runs: when the run is done, and how far it got.
        self._run_end = RunEnd(
            plan,
            source=ports.source,
            checkpoint=ports.checkpoint,
            collector=self._collector,
            stats=self.stats,
            stall=self._stall,
        )

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
        return self._run_end.offsets(self._tracker.committed)

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
            if await self._run_end.wait_for_assignment(self._stop, self._joined):
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
            await self._ports.start_writers()
            if self.bounded:
                await self._run_end.begin()
            # A bounded run that began alone starts reading at once, without
            # waiting seconds for the group's first assignment.
            early = self._collector.run is not None and not self._collector.run.joined
            await self._source.start(self, early=early)
            if early:
                self._run_end.watch_for_others()
        except PortUnreachable as exc:
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
                    interval_s = (self.plan.trigger_interval_ms or 1000) / 1000
                    next_tick = await wait_for_tick(next_tick, interval_s, self._stop)
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
                    step = await self._prepare(raws, generation)
                # Only preparation phases count: the batch in flight adds others meanwhile.
                prepare_seconds = phase_delta(before, self.stats.times.snapshot())
                kept = await self._settle_inflight(step.cause if isinstance(step, Outage) else None)
                prepared = step.batch if isinstance(step, Prepared) else None
                if prepared is not None:
                    if kept and generation == self._tracker.generation:
                        self._launch(prepared, generation, fetch_started, prepare_seconds)
                    else:
                        async with self._lock:
                            self._tracker.discard_planned()
                            self._tracker.rewind()  # fetched again, after what committed
                self.stats.batch_seconds += time.perf_counter() - started
                if await self._run_end.over(bool(raws), self._settle_timed, self._stop):
                    return
                self._watch_progress()
        finally:
            await self._settle_timed()

    async def _settle_timed(self) -> bool:
        """Settle the batch in flight outside a batch's span: its wait is batch time too."""
        started = time.perf_counter()
        kept = await self._settle_inflight()
        self.stats.batch_seconds += time.perf_counter() - started
        return kept

    def _watch_progress(self) -> None:
        """Say (within a minute) when nothing moves on though there is work; stop a stuck run."""
        stats = self.stats
        while self._setbacks_seen < stats.setbacks:
            self._setbacks_seen += 1
            self._stall.setback(stats.last_setback or "unknown")
        run = self._collector.run
        behind = self._run_end.behind(self._tracker.committed)
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

    async def _prepare(self, raws: list[RawRecord], generation: int) -> PrepareOutcome:
        """Fold a fetched batch into the engine and build its commit (under the lock).

        Returns what happened: prepared (the batch, or None when there is nothing to
        commit), rewind (fetched across an assignment change: fetched again), or
        outage (a checkpoint read could not reach the sink: the loop waits it out).
        """
        tracker = self._tracker
        async with self._lock:
            if generation != tracker.generation:
                # The assignment changed while fetching. Records fetched after
                # its seeks moved the consumer on, so seek back: dropping
                # fetched records without a seek would skip them for good.
                tracker.rewind()
                return Rewind()
            try:
                if tracker.pending:
                    # Partitions assigned while the sink was unreachable: restore
                    # and seek them first; what was fetched meanwhile comes again.
                    await self._settle_inflight_under_lock()
                    tracker.generation += 1
                    tracker.rewind()
                    await tracker.restore_pending()
                    return Rewind()
                return Prepared(await self._committer.prepare_next(tracker.contiguous(raws)))
            except QualityAbortError as exc:
                # Nothing of the batch was written; a restart replays it.
                raise QueryFailedError(f"query {self.plan.query_name} stopped: {exc}") from exc
            except SinkOutage as exc:
                return Outage(exc.cause)
            except (asyncio.CancelledError, QueryFailedError):
                raise
            except STOP_ERRORS:
                raise
            except Exception as exc:
                # A read of the checkpoint (restore, watermarks) failed.
                if classify_failure(exc) is not FailureKind.UNAVAILABLE:
                    raise self._policy.fatal(exc) from exc
                return Outage(exc)

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
        note = self._progress.note(prepared, number, fetch_started, prepare_seconds)
        # The task starts with a copy of this context: its lines carry the batch's number.
        with log_context(batch_id=number):
            task = asyncio.ensure_future(self._committer.deliver(prepared, sent, note=note))
        inflight = InFlight(
            prepared, task, sent, generation, number, fetch_started, prepare_seconds
        )
        task.add_done_callback(lambda _: self._progress.delivered(inflight))
        self._inflight = inflight

    async def _delivered(self) -> None:
        """Wait until the batch in flight is delivered (its outcome is handled later)."""
        inflight = self._inflight
        if inflight is not None:
            await asyncio.wait({inflight.task})

    async def _settle_inflight(self, met: Exception | None = None) -> bool:
        """Handle the outcome of the batch in flight; False when what followed it is void.

        Args:
            met: An outage met while preparing the next batch (waited out here).
        """
        outage: Exception | None = None
        async with self._lock:
            try:
                kept = await self._settle_inflight_under_lock()
            except SinkOutage as exc:
                outage, kept = exc.cause, False
        if outage is None and met is not None:
            outage, kept = met, False
        if outage is not None:
            # Waiting happens outside the lock so that rebalances go on meanwhile.
            await self._policy.wait_for_sink(outage, self._stop, self._lock)
            return False
        return kept

    async def _settle_inflight_under_lock(self) -> bool:
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
            self._progress.committed(inflight)
        await self._commit_offsets(committed)
        return True

    async def _commit_offsets(self, partitions: list[PartitionCommit]) -> None:
        try:
            await self._source.commit({p.partition: p.next_offset for p in partitions})
        except Exception as exc:  # offsets are informational; the ledger decides
            log.debug("consumer offset commit failed: %s", exc)

    async def _shutdown(self) -> None:
        await self._run_end.close()
        await self._ports.stop()
        self._committer.close()
        try:
            self._tracker.engine.close()
        except Exception as exc:
            # After a failed write RocksDB refuses to close; what failed was
            # already said, and must stay the last line.
            log.debug("closing the local state: %s", first_line(exc))

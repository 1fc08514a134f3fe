"""Committing a micro-batch: prepare it, flush its dead letters, one checkpoint transaction.

    process_records -> (refresh remote watermarks) -> engine.emit -> quality
    check of the rows -> prepare_commit -> dead letters flushed -> Checkpoint.commit
    -> accounting, next offsets, bounded ends

A stale outcome (another worker committed these offsets) replays every owned
partition from the ledger. A failed delivery goes to the failure policy
(FAULTS.md): wait out an outage, stop, or isolate the records the sink
refuses.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any, TypeVar

from streamproc.engine import LateRecord, StreamEngine
from streamproc.port_errors import FailureKind
from streamproc.runtime import metrics
from streamproc.runtime.accounting import Accounting
from streamproc.runtime.clock import wall_clock_ms
from streamproc.runtime.collect import BatchCollector
from streamproc.runtime.eventtime_guard import EventTimeGuard
from streamproc.runtime.failure_kinds import STOP_ERRORS, classify_failure, is_outage
from streamproc.runtime.failure_policy import FailurePolicy
from streamproc.runtime.offload import Offload
from streamproc.runtime.partitions import PartitionTracker
from streamproc.runtime.plan import QueryPlan
from streamproc.runtime.prepare import (
    BadItem,
    PreparedBatch,
    ProcessedBatch,
    closes_locally,
    prepare_commit,
    process_records,
)
from streamproc.runtime.quality import QualityGate
from streamproc.runtime.resilience import CircuitBreaker, call_with_retry
from streamproc.runtime.routers import BadRouter, DeadLetter, LateRouter, Position
from streamproc.sinks.base import (
    Checkpoint,
    CommitBatch,
    CommitOutcome,
    MessageWriter,
    PartitionCommit,
    ProgressNote,
)
from streamproc.sources.base import RawRecord

T = TypeVar("T")

#: Batches smaller than this are prepared on the event loop, not the worker thread.
INLINE_BELOW = 2_000

#: Who commits, in progress rows: several workers of a query may share a host.
WORKER = f"{socket.gethostname()}:{os.getpid()}"

log = logging.getLogger("streamproc.query")


def _worth_retrying(exc: Exception) -> bool:
    # A checkpoint conflict says the same thing on every attempt.
    return not isinstance(exc, STOP_ERRORS)


class BatchCommitter:
    """Turns fetched records into one durable commit (or applies the failure policy)."""

    def __init__(
        self,
        plan: QueryPlan,
        *,
        tracker: PartitionTracker,
        collector: BatchCollector,
        checkpoint: Checkpoint,
        quality: QualityGate,
        late: LateRouter,
        bad: BadRouter,
        dead_letter_writer: MessageWriter | None,
        accounting: Accounting,
        breaker: CircuitBreaker,
        clock_ms: Callable[[], int] = wall_clock_ms,
    ) -> None:
        """Args:
        clock_ms: Wall clock in epoch milliseconds (the event-time guard's, as the engine's).
        """
        self._plan = plan
        self._tracker = tracker
        self._collector = collector
        self._checkpoint = checkpoint
        self._quality = quality
        self._late = late
        self._bad = bad
        self._writer = dead_letter_writer
        self._accounting = accounting
        self._breaker = breaker
        self._guard = EventTimeGuard(plan, clock_ms, tracker.where)
        self._offload = Offload()
        #: What a failed delivery becomes (`use_policy`: the query builds it on this
        #: committer's delivery methods, `failure_policy.Delivery`).
        self._policy: FailurePolicy | None = None

    def use_policy(self, policy: FailurePolicy) -> None:
        """Apply this failure policy to failed deliveries (set once, before the first batch)."""
        self._policy = policy

    @property
    def policy(self) -> FailurePolicy:
        """The failure policy of failed deliveries (`use_policy`)."""
        if self._policy is None:
            raise RuntimeError("BatchCommitter.use_policy was not called")
        return self._policy

    async def process_and_commit(
        self, raws: list[RawRecord], dead_letters_sent: set[Position], *, isolating: bool = False
    ) -> list[PartitionCommit]:
        """Process records and commit them in one transaction; returns what was committed.

        Args:
            raws: Contiguous records of owned partitions (may be empty: an emit
                can still close windows).
            dead_letters_sent: Positions whose dead letters were already
                delivered while isolating this batch (not sent twice).
            isolating: Part of a batch the sink rejected (see FailurePolicy.isolate).

        Raises:
            SinkOutage: the sink could not be reached (nothing was committed).
            QueryFailedError: the sink refused the batch and failFast is set, or
                the failure is neither an outage nor a rejection.
        """
        prepared = await self._prepare(raws)
        if prepared is None:
            return []
        # The first attempt at a batch gets the retry policy for every failure;
        # while isolating, a rejection is known to be final and only outages retry.
        retry_if = is_outage if isolating else None
        try:
            outcome = await self.deliver(prepared, dead_letters_sent, retry_if)
        except asyncio.CancelledError:
            raise
        except STOP_ERRORS:
            raise
        except Exception as exc:
            return await self.policy.after_failed_commit(
                exc, raws, prepared.commit.partitions, dead_letters_sent, isolating=isolating
            )
        return await self._apply_outcome(prepared, outcome)

    async def prepare_next(self, raws: list[RawRecord]) -> PreparedBatch | None:
        """Prepare a batch whose commit may overlap the next batch's preparation.

        The next batch starts where this one ends (`PartitionTracker.next`),
        whether or not this one's commit has landed yet.
        """
        prepared = await self._prepare(raws)
        if prepared is not None:
            self._tracker.prepared({p.partition: p.next_offset for p in prepared.commit.partitions})
            commit = prepared.commit
            rows = len(commit.local_rows or ()) + sum(map(len, commit.partials.values()))
            self._collector.batch_made(len(raws), rows)
        return prepared

    async def deliver(
        self,
        prepared: PreparedBatch,
        dead_letters_sent: set[Position],
        retry_if: Callable[[Exception], bool] | None = None,
        note: ProgressNote | None = None,
    ) -> CommitOutcome:
        """The I/O of a prepared batch: its dead letters, then its checkpoint transaction.

        Touches no engine or tracker state, so it may run while the loop
        prepares the next batch.

        Args:
            note: For the batch's progress-table row (None: a part of a batch
                being isolated, with no number of its own).
        """
        started = time.perf_counter()
        await self.send_dead_letters(prepared.dead_letters, dead_letters_sent, retry_if)
        dead_letters_s = time.perf_counter() - started
        note = note or self.note()
        if dead_letters_s:
            durations = dict(note.duration_ms)
            durations["sink"] = durations.get("sink", 0.0) + dead_letters_s * 1000
            note = replace(note, duration_ms=durations)
        with metrics.COMMIT_SECONDS.labels(self._plan.pipeline_id, self._plan.query_name).time():
            outcome = await self.commit_with_retry(prepared.commit, retry_if, note)
        # The outcome carries every phase of its delivery, for the batch's progress record.
        outcome = replace(outcome, timings={**outcome.timings, "dead_letters": dead_letters_s})
        self._accounting.stats.times.add(outcome.timings)
        return outcome

    async def settle(
        self,
        prepared: PreparedBatch,
        delivery: asyncio.Task[CommitOutcome],
        dead_letters_sent: set[Position],
        *,
        assignment_changed: bool,
    ) -> list[PartitionCommit] | None:
        """What a delivered batch's outcome means; None when what was prepared after it is void.

        On a failure everything prepared after the batch is discarded: the
        engine is restored from the checkpoint, the batch goes through the
        failure policy, and the consumer is rewound to fetch the rest again.

        Raises:
            SinkOutage: the sink could not be reached (the loop waits, then replays).
            QueryFailedError: per the failure policy.
        """
        try:
            outcome = delivery.result()
        except asyncio.CancelledError:
            raise
        except STOP_ERRORS:
            raise
        except Exception as exc:
            self._tracker.discard_planned()
            if assignment_changed and classify_failure(exc) is not FailureKind.UNAVAILABLE:
                # Its records may no longer be ours: fetch again what is.
                await self._tracker.replay_from_ledger()
                return None
            raws = list(prepared.raws)
            await self.policy.after_failed_commit(
                exc, raws, prepared.commit.partitions, dead_letters_sent
            )
            self._tracker.rewind()
            return None
        committed = await self._apply_outcome(prepared, outcome)
        return committed if not outcome.stale else None

    async def _apply_outcome(
        self, prepared: PreparedBatch, outcome: CommitOutcome
    ) -> list[PartitionCommit]:
        if outcome.stale:
            self._accounting.stale(outcome.stale)
            log.warning("stale batch for partitions %s: replaying", list(outcome.stale))
            await self._tracker.replay_from_ledger()
            return []
        self.committed(prepared, outcome)
        return list(prepared.commit.partitions)

    async def _prepare(self, raws: list[RawRecord]) -> PreparedBatch | None:
        """Fold records into the engine, emit, and build the commit (None: nothing to do)."""
        tracker = self._tracker
        engine = tracker.engine
        times = self._accounting.stats.times
        # A small batch is prepared on the loop: handing it to the worker
        # thread and back costs GIL switches (up to 5 ms each) that are worth
        # paying only when preparing takes longer than the commit it overlaps.
        inline = len(raws) < INLINE_BELOW
        processed = await self._cpu(
            inline, process_records, raws, engine, self._quality, self._guard, times
        )
        if not raws and engine.global_watermark_ms is None:
            # With no records an emit can still close windows, but only once
            # there is a W; the commit is skipped when nothing changed.
            return None
        if tracker.partition_count and not tracker.owns_every_partition:
            # Other workers' partitions count in W (records were classified
            # with W as of the batch's start, as the engine's contract says).
            with times.phase("watermarks"):
                await tracker.refresh_remote_watermarks()
        with times.phase("engine"):
            return await self._cpu(
                inline,
                self._emit,
                processed,
                engine,
                dict(tracker.next),
                tracker.owns_every_partition,
                tracker.partition_count,
                tracker.expected_positions(),
            )

    async def _cpu(self, inline: bool, fn: Callable[..., T], *args: Any) -> T:
        return fn(*args) if inline else await self._offload.run(fn, *args)

    def _emit(
        self,
        processed: ProcessedBatch,
        engine: StreamEngine,
        next_offsets: dict[int, int],
        owns_every_partition: bool,
        topic_partitions: int,
        expected_positions: dict[int, int | None],
    ) -> PreparedBatch | None:
        local = closes_locally(engine.spec, owns_every_partition)
        # Idle (key, window)s are expired where the whole activity is known: here
        # when this worker closes windows itself, else in the checkpoint.
        emission = engine.emit(closed_partials=not local, expire_idle=local)
        self._quality.check_rows(emission.rows)
        prepared = prepare_commit(
            processed,
            emission,
            engine,
            next_offsets=next_offsets,
            owns_every_partition=owns_every_partition,
            topic_partitions=topic_partitions,
            late=self._late,
            bad=self._bad,
            expected_positions=expected_positions,
        )
        if prepared is None:
            return None
        # Encoding for the transaction happens here, off the loop and outside
        # the query's lock.
        return replace(prepared, commit=self._checkpoint.stage(prepared.commit))

    def close(self) -> None:
        """Stop the thread batches are prepared on."""
        self._offload.close()

    async def try_without_keeping(self, raws: list[RawRecord]) -> Exception | None:
        """Process records and commit them with dry_run: the error a commit would raise.

        The engine afterwards holds the records: restore it before going on.
        """
        prepared = await self._prepare(raws)
        if prepared is None:
            return None
        try:
            await self._checkpoint.commit(prepared.commit, dry_run=True)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            return exc
        return None

    def note(self, **fields: Any) -> ProgressNote:
        """A progress note of this worker (`fields` fill in what the loop knows of the batch)."""
        return ProgressNote(pipeline_id=self._plan.pipeline_id, worker=WORKER, **fields)

    async def commit_with_retry(
        self,
        batch: CommitBatch,
        retry_if: Callable[[Exception], bool] | None,
        note: ProgressNote | None = None,
    ) -> CommitOutcome:
        """One checkpoint transaction, retried per the retry policy through the breaker.

        Each attempt's progress row says the breaker's state as it let the
        attempt through and how many attempts came before; the outcome carries
        the committed attempt's note.
        """
        base = note or self.note()
        breaker = self._breaker
        attempts: list[ProgressNote] = []

        async def attempt() -> CommitOutcome:
            sent = replace(
                base,
                breaker_state=breaker.state.value,
                breaker_opened=breaker.opened,
                retries=len(attempts),
            )
            attempts.append(sent)
            return await self._checkpoint.commit(replace(batch, progress=sent))

        outcome = await call_with_retry(
            attempt,
            self._plan.retry,
            breaker,
            what="sink transaction",
            is_outage=is_outage,
            retry_if=retry_if or _worth_retrying,
            on_retry=self._retried,
        )
        return replace(outcome, progress=attempts[-1])

    def _retried(self) -> None:
        metrics.RETRIES.labels(self._plan.pipeline_id, self._plan.query_name).inc()

    async def send_dead_letters(
        self,
        dead_letters: Sequence[DeadLetter],
        sent: set[Position],
        retry_if: Callable[[Exception], bool] | None,
    ) -> None:
        """Deliver dead letters not sent yet; flushed before the commit: at-least-once."""
        messages = [m for pos, m in dead_letters if pos not in sent]
        if not messages or self._writer is None:
            return
        writer = self._writer
        await call_with_retry(
            lambda: writer.send_all(messages),
            self._plan.retry,
            self._breaker,
            what="dead-letter write",
            is_outage=is_outage,
            retry_if=retry_if or (lambda exc: True),
            on_retry=self._retried,
        )
        sent.update(pos for pos, _ in dead_letters)

    def committed(
        self,
        prepared: PreparedBatch,
        outcome: CommitOutcome,
    ) -> None:
        """A batch is durable: move the partitions on and count it."""
        if prepared.commit.partitions:
            self.policy.accepted()
        self.record(prepared.commit.partitions, outcome, prepared.late, prepared.bad)

    def record(
        self,
        partitions: Sequence[PartitionCommit],
        outcome: CommitOutcome,
        late: Sequence[LateRecord] = (),
        bad: Sequence[BadItem] = (),
    ) -> None:
        """Next offsets, counts and bounded ends after a durable commit."""
        for p in partitions:
            self._tracker.committed_up_to(p.partition, p.next_offset)
        self._accounting.committed(partitions, outcome, late, bad)
        self._collector.committed(partitions)

    @property
    def dead_letter_writer(self) -> MessageWriter | None:
        """The producer of dead letters, if the routers need one."""
        return self._writer

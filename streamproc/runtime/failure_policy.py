"""The failure policy of FAULTS.md: what a batch whose delivery failed becomes.

    the sink is unreachable (UNAVAILABLE)  -> SinkOutage: the loop waits (the
                                              breaker paces it), then replays
                                              every owned partition from the ledger
    anything else but a refusal (FATAL)    -> the query stops
    the sink refuses the batch (REJECTED)  -> with failFast the query stops;
                                              otherwise the batch is committed
                                              again in halves until each refused
                                              record stands alone, and that one
                                              record is dead-lettered

Only single records are dead-lettered, so which records go to the DLQ never
depends on batch boundaries: a replay after a crash, or any other split into
batches, dead-letters exactly the same records.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Protocol

from streamproc.port_errors import FailureKind, adapter_error
from streamproc.runtime.accounting import Accounting
from streamproc.runtime.failure_kinds import (
    STOP_ERRORS,
    QueryFailedError,
    SinkOutage,
    classify_failure,
    first_line,
    is_outage,
)
from streamproc.runtime.partitions import PartitionTracker
from streamproc.runtime.plan import QueryPlan
from streamproc.runtime.resilience import CircuitBreaker, CircuitOpenError, outage_delay
from streamproc.runtime.routers import BadRouter, DeadLetter, Position, RefusedRecord, Routed
from streamproc.sinks.base import (
    ClosingWindowsError,
    CommitBatch,
    CommitOutcome,
    PartitionCommit,
    ProgressNote,
    batch_id,
)
from streamproc.sources.base import RawRecord, record_digest

log = logging.getLogger("streamproc.query")

#: Records of a refused batch tried alone before it is called a sink problem.
SAMPLES = 8


def refusal_signature(exc: BaseException) -> tuple[object, ...]:
    """What a refusal is about: its SQLSTATE and the constraint, table and column it names."""
    exc = adapter_error(exc)
    names = ("sqlstate", "constraint_name", "table_name", "column_name")
    found = tuple(getattr(exc, name, None) for name in names)
    return found if any(found) else (type(exc).__name__, first_line(exc))


def _constraint(exc: BaseException) -> str:
    exc = adapter_error(exc)
    constraint, table = getattr(exc, "constraint_name", None), getattr(exc, "table_name", None)
    if constraint:
        return f" (constraint {constraint}" + (f" of table {table})" if table else ")")
    return ""


class Delivery(Protocol):
    """What the failure policy needs to commit a refused batch again, in parts.

    `BatchCommitter` is one; the query hands it to the policy it builds.
    """

    async def process_and_commit(
        self, raws: list[RawRecord], dead_letters_sent: set[Position], *, isolating: bool = False
    ) -> list[PartitionCommit]:
        """Process records and commit them in one transaction; returns what was committed."""
        ...

    async def try_without_keeping(self, raws: list[RawRecord]) -> Exception | None:
        """The error a commit of these records would raise (nothing is kept)."""
        ...

    async def send_dead_letters(
        self,
        dead_letters: Sequence[DeadLetter],
        sent: set[Position],
        retry_if: Callable[[Exception], bool] | None,
    ) -> None:
        """Deliver dead letters not sent yet."""
        ...

    async def commit_with_retry(
        self,
        batch: CommitBatch,
        retry_if: Callable[[Exception], bool] | None,
        note: ProgressNote | None = None,
    ) -> CommitOutcome:
        """One checkpoint transaction, retried per the retry policy through the breaker."""
        ...

    def record(self, partitions: Sequence[PartitionCommit], outcome: CommitOutcome) -> None:
        """Next offsets, counts and bounded ends after a durable commit."""
        ...


class FailurePolicy:
    """Applies FAULTS.md's policy to failed deliveries and waits out sink outages."""

    def __init__(
        self,
        plan: QueryPlan,
        *,
        delivery: Delivery,
        tracker: PartitionTracker,
        bad: BadRouter,
        accounting: Accounting,
        breaker: CircuitBreaker,
    ) -> None:
        """Args:
        plan: The query.
        delivery: Commits records again (in parts) and dead letters (the committer).
        tracker: The partitions, restored from the checkpoint after a failure.
        bad: Routes a refused record to the dead letters.
        accounting: Counts failures, outages and dead letters.
        breaker: The sink's circuit breaker (paces the wait for the sink).
        """
        self._plan = plan
        self._delivery = delivery
        self._tracker = tracker
        self._bad = bad
        self._accounting = accounting
        self._breaker = breaker
        # Records dead-lettered one after another for one reason, no record
        # accepted in between (small batches cannot be sampled).
        self._streak: tuple[tuple[object, ...] | None, int] = (None, 0)

    def accepted(self) -> None:
        """The sink accepted records: refusals so far were the data's, not the sink's."""
        self._streak = (None, 0)

    def fatal(self, exc: Exception) -> QueryFailedError:
        """The error that stops the query on an unexpected failure (logged with its trace).

        A failure whose message says it all (STOP_ERRORS) becomes that one line.
        """
        if isinstance(exc, STOP_ERRORS):
            return QueryFailedError(str(exc))
        log.error("query %s stops on an unexpected error", self._plan.query_name, exc_info=exc)
        return QueryFailedError(
            f"query {self._plan.query_name} stopped: "
            f"{type(adapter_error(exc)).__name__}: {first_line(exc)}"
        )

    async def after_failed_commit(
        self,
        exc: Exception,
        raws: list[RawRecord],
        partitions: tuple[PartitionCommit, ...],
        dead_letters_sent: set[Position],
        *,
        isolating: bool = False,
    ) -> list[PartitionCommit]:
        """Apply the failure policy to a batch whose delivery failed; returns what committed.

        Args:
            exc: What the delivery raised.
            raws: The batch's records.
            partitions: Its ledger entries (for the messages).
            dead_letters_sent: Dead letters already delivered for these records.
            isolating: The batch is a part of a refused batch being isolated.
        """
        if isinstance(exc, ClosingWindowsError):
            self._closing_failed(exc)
        self._only_rejections(exc)
        query = self._plan.query_name
        spans = ", ".join(f"{p.partition}:{p.start_offset}-{p.next_offset}" for p in partitions)
        if self._plan.fail_fast:
            raise QueryFailedError(
                f"query {query}: the sink rejected the batch of partition:offsets "
                f"{spans or 'none'} and failFast is set: {first_line(exc)}; "
                "nothing of it was written"
            ) from exc
        if not raws:
            raise QueryFailedError(
                f"query {query}: the sink rejected closing windows, "
                f"no record to dead-letter: {first_line(exc)}"
            ) from exc
        if not isolating and len(raws) >= SAMPLES:
            if not await self._tracker.restore_in_place():
                return []
            if await self._refuses_everything(raws, exc):
                raise QueryFailedError(
                    f"query {query}: the sink refuses every record of the batch of "
                    f"partition:offsets {spans} for the same reason: {first_line(exc)}"
                    f"{_constraint(exc)}; that is a sink problem, not bad data: nothing of the "
                    "batch was dead-lettered; fix the table (or the sink) and run again"
                ) from exc
        log.warning(
            "the sink rejected the batch of partition:offsets %s (%s): isolating the records "
            "it cannot write",
            spans,
            first_line(exc),
        )
        # Back to the last commit; the consumer stays where it is: the records
        # at hand are processed again, in parts.
        if not await self._tracker.restore_in_place():
            return []
        return await self.isolate(raws, exc, dead_letters_sent)

    def _only_rejections(self, exc: Exception) -> None:
        """Raise for an outage (wait and replay) or a fatal error; return for a rejection."""
        kind = classify_failure(exc)
        if kind is FailureKind.UNAVAILABLE:
            raise SinkOutage(exc)
        self._accounting.failed(first_line(exc))
        if kind is FailureKind.FATAL:
            raise self.fatal(exc)

    def _closing_failed(self, exc: ClosingWindowsError) -> None:
        """Rows of closing windows were not written: an outage, or a stop; never isolated."""
        cause = exc.cause
        self._only_rejections(cause)
        raise QueryFailedError(
            f"query {self._plan.query_name}: the sink refused the rows of {exc.windows} "
            f"window(s) that closed: {first_line(cause)}{_constraint(cause)}; such a row sums up "
            "many records, so no record can be dead-lettered for it: nothing of the batch was "
            "written; fix the table (or the sink) and run again"
        ) from cause

    async def _refuses_everything(self, raws: list[RawRecord], exc: Exception) -> bool:
        """True when sampled records, each alone, are refused for the batch's very reason.

        Up to SAMPLES records spread over the batch (its first and last among
        them) are committed one by one with dry_run. Data a sink cannot store
        is refused record by record, for reasons that differ; a constraint
        added to the table, or a column that no longer fits, refuses them all
        alike, and dead-lettering the whole stream then would hide a sink
        problem behind a full DLQ.
        """
        signature = refusal_signature(exc)
        step = max(1, (len(raws) - 1) // (SAMPLES - 1))
        picks = sorted({*range(0, len(raws), step), len(raws) - 1})[:SAMPLES]
        for i in picks:
            error = await self._delivery.try_without_keeping([raws[i]])
            if not await self._tracker.restore_in_place():
                return False
            if error is None or refusal_signature(error) != signature:
                return False
        return True

    async def isolate(
        self, raws: list[RawRecord], exc: Exception, dead_letters_sent: set[Position]
    ) -> list[PartitionCommit]:
        """Commit a rejected batch in halves until the records the sink refuses stand alone."""
        if len(raws) == 1:
            return await self.dead_letter(raws[0], exc, dead_letters_sent)
        partitions = sorted({r.partition for r in raws})
        if len(partitions) > 1:
            groups = [[r for r in raws if r.partition == p] for p in partitions]
        else:
            half = len(raws) // 2
            groups = [raws[:half], raws[half:]]
        generation = self._tracker.generation
        committed: list[PartitionCommit] = []
        for group in groups:
            committed += await self._delivery.process_and_commit(
                group, dead_letters_sent, isolating=True
            )
            if self._tracker.generation != generation:
                # A part was stale (another worker committed): everything was
                # replayed from the ledger, the rest of this batch is fetched again.
                break
        return committed

    async def dead_letter(
        self, raw: RawRecord, exc: Exception, dead_letters_sent: set[Position]
    ) -> list[PartitionCommit]:
        """Send one record the sink rejects to the DLQ and record it in the ledger.

        A Kafka dead letter is acknowledged before the ledger row commits
        (at-least-once); a dead-letter table row commits with it (exactly-once).
        """
        p = raw.partition
        error = first_line(exc)
        signature = refusal_signature(exc)
        streak = self._streak[1] + 1 if self._streak[0] == signature else 1
        self._streak = (signature, streak)
        if streak >= SAMPLES:
            raise QueryFailedError(
                f"query {self._plan.query_name}: the sink refused {streak} records in a row, "
                f"each alone, for the same reason: {error}{_constraint(exc)}; that is a sink "
                f"problem, not bad data: {self._tracker.where(p, raw.offset)} was not "
                "dead-lettered; fix the table (or the sink) and run again"
            ) from exc
        tracker = self._tracker
        engine = tracker.engine
        commit = PartitionCommit(
            partition=p,
            start_offset=tracker.next[p],
            next_offset=raw.offset + 1,
            records=1,
            aggregated=0,
            late=0,
            bad=1,
            filtered=0,
            max_event_ts_ms=engine.partition_max_event_ts_ms(p),
            watermark_ms=engine.partition_watermark_ms(p),
            dead_lettered=1,
            error=error,
            last_record=record_digest(raw),
        )
        plan = self._plan
        bid = batch_id(plan.query_name, plan.topic, p, commit.start_offset, commit.next_offset)
        letter = Routed()
        self._bad.refused(
            RefusedRecord(raw, bid, commit.start_offset, commit.next_offset, error), letter
        )
        if letter.dead_letters:
            try:
                await self._delivery.send_dead_letters(letter.dead_letters, set(), is_outage)
            except asyncio.CancelledError:
                raise
            except Exception as dlq_exc:
                kind = classify_failure(dlq_exc)
                if kind is FailureKind.UNAVAILABLE:
                    raise SinkOutage(dlq_exc) from dlq_exc
                if kind is FailureKind.FATAL:
                    raise self.fatal(dlq_exc) from dlq_exc
                # The DLQ refuses it too (too large): the ledger row says so and
                # where the record is, so it can be found in the source topic.
                log.error(
                    "%s: rejected by the sink and by the DLQ (%s)",
                    tracker.where(p, raw.offset),
                    first_line(dlq_exc),
                )
                commit = replace(commit, error=f"{error}; not dead-lettered: {first_line(dlq_exc)}")
        # A dead-letter row (dlqType postgresql) commits with the ledger row
        # that records the refusal: both or neither.
        batch = CommitBatch(
            partitions=(commit,),
            partials={},
            evicted={},
            local_rows=(),
            dead_letter_rows=tuple(letter.dead_letter_rows),
            topic_partitions=tracker.partition_count,
            idle_timeout_ms=plan.spec.idle_timeout_ms,
        )
        try:
            outcome = await self._delivery.commit_with_retry(batch, is_outage)
        except asyncio.CancelledError:
            raise
        except Exception as ledger_exc:
            if is_outage(ledger_exc):
                raise SinkOutage(ledger_exc) from ledger_exc
            raise QueryFailedError(
                f"query {plan.query_name}: {tracker.where(p, raw.offset)} was rejected by the "
                f"sink ({error}) and cannot be recorded as dead-lettered: {first_line(ledger_exc)}"
            ) from ledger_exc
        if outcome.stale:
            await tracker.replay_from_ledger()
            return []
        self._accounting.dead_lettered()
        log.warning("dead-lettered %s: %s", tracker.where(p, raw.offset), error)
        self._delivery.record((commit,), outcome)
        return [commit]

    async def wait_for_sink(
        self, cause: Exception, stop: asyncio.Event, lock: asyncio.Lock
    ) -> None:
        """The sink is unreachable: wait (per the breaker), then replay from the ledger.

        Nothing is dropped and nothing is skipped: every owned partition is
        restored from its last commit and fetched again from there. Tries are
        spaced by the breaker's reset timeout while it is open, and by the
        retry policy's delays (at least a second) while it is not. Waiting
        happens outside the lock, so that rebalances go on meanwhile.
        """
        self._accounting.outage(first_line(cause))
        log.error(
            "sink unavailable (%s): batch not committed, nothing dropped; waiting for the sink",
            first_line(cause),
        )
        breaker = self._breaker
        attempt = 0
        while not stop.is_set():
            delay = breaker.seconds_until_probe() or outage_delay(self._plan.retry, attempt)
            log.warning(
                "sink unavailable: circuit breaker %s, next try in %.1fs",
                breaker.state.value,
                delay,
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
            if stop.is_set():
                return
            attempt += 1
            try:
                breaker.before_call()
            except CircuitOpenError:
                continue
            try:
                async with lock:
                    await self._tracker.replay_from_ledger()
            except asyncio.CancelledError:
                breaker.record_abandoned()
                raise
            except Exception as exc:
                if not is_outage(exc):
                    breaker.record_success()
                    raise self.fatal(exc) from exc
                breaker.record_failure()
                log.warning("sink still unavailable: %s", first_line(exc))
                continue
            breaker.record_success()
            log.warning("sink reachable again: replaying from the ledger")
            return

"""StreamingQuery: the micro-batch loop of one worker.

fetch (aiokafka getmany) -> decode -> engine.process -> engine.emit ->
dead-letter writes -> one Postgres transaction (partials, results, late rows,
ledger) -> consumer offsets. The Postgres transaction is the commit point;
see STREAMING.md "Exactly once". What happens when that transaction or a
dead-letter write fails is FAULTS.md's failure policy.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from streamproc.engine import Emission, Engine, ResultRow
from streamproc.runtime import metrics
from streamproc.runtime.decode import RawRecord, UndecodableRecord, decode_records
from streamproc.runtime.failures import FailureKind, classify_failure, first_line
from streamproc.runtime.late import (
    LateSummary,
    RateLimitedLog,
    bad_dlq_message,
    failed_record_dlq_message,
    late_dlq_message,
)
from streamproc.runtime.plan import QueryPlan
from streamproc.runtime.quality import QualityAbortError, QualityGate
from streamproc.runtime.resilience import (
    BreakerState,
    CircuitBreaker,
    CircuitOpenError,
    call_with_retry,
    outage_delay,
)
from streamproc.sinks.kafka import KafkaProducerSink, OutgoingMessage, result_message
from streamproc.sinks.layout import result_layout
from streamproc.sinks.postgres import (
    CommitBatch,
    CommitOutcome,
    LateRow,
    PartitionCommit,
    PostgresCheckpoint,
    batch_id,
)
from streamproc.sources.kafka import KafkaSource, KafkaSourceConfig
from streamproc.state.base import WindowStore

log = logging.getLogger("streamproc.query")

# Without maxRecordsPerTrigger a micro-batch is still capped, so one
# transaction stays small; the cap never changes results, only batch sizes.
DEFAULT_BATCH_CAP = 20_000
_BOUNDED = ("once", "availablenow")
# A dead-letter producer must carry any record the source can deliver, plus
# its headers: max_partition_fetch_bytes of the source (4 MiB) and room.
_DLQ_MAX_REQUEST_BYTES = 8 * 1_048_576
# Where a record was read: (partition, offset).
_Position = tuple[int, int]


def _is_outage(exc: Exception) -> bool:
    return classify_failure(exc) is FailureKind.UNAVAILABLE


class _SinkOutage(Exception):
    """The sink could not be reached; the batch is replayed once it answers again."""

    def __init__(self, cause: Exception) -> None:
        super().__init__(first_line(cause))
        self.cause = cause


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


class QueryFailedError(RuntimeError):
    """The query stopped because a batch failed and failFast is set."""


class StreamingQuery:
    """One worker of a streaming query: owns some partitions of the source topic."""

    def __init__(
        self,
        plan: QueryPlan,
        store_factory: Callable[[int], WindowStore],
        *,
        clock_ms: Callable[[], int] | None = None,
    ) -> None:
        if plan.dsn is None or (plan.sink_type == "postgresql" and plan.table is None):
            raise ValueError("a streaming query needs a PostgreSQL checkpoint and a sink")
        if plan.sink_type == "kafka" and not plan.sink_topic:
            raise ValueError("load.topic: a kafka sink needs a topic")
        self.plan = plan
        self.stats = RunStats()
        self._new_engine: Callable[[], Engine] = (
            (lambda: Engine(plan.spec, store_factory, clock_ms))
            if clock_ms
            else (lambda: Engine(plan.spec, store_factory))
        )
        self._engine = self._new_engine()
        self._result_producer = (
            KafkaProducerSink(plan.sink_bootstrap or plan.bootstrap, plan.kafka_params)
            if plan.sink_type == "kafka"
            else None
        )
        self._checkpoint = PostgresCheckpoint(
            plan.dsn,
            query=plan.query_name,
            topic=plan.topic,
            spec=plan.spec,
            layout=result_layout(plan.spec, plan.table) if plan.table else None,
            late_table=plan.late_table if plan.late_strategy == "separatestream" else None,
            publish=self._publish_rows if self._result_producer is not None else None,
        )
        self._source = KafkaSource(
            KafkaSourceConfig(
                bootstrap=plan.bootstrap,
                topic=plan.topic,
                group_id=plan.group_id,
                starting_offsets=plan.starting_offsets,
                client_params=plan.kafka_params,
                session_timeout_ms=plan.session_timeout_ms,
            ),
            listener=self,
        )
        needs_producer = plan.late_strategy == "sendtodlq" or plan.dlq_type == "kafka"
        self._producer = (
            KafkaProducerSink(
                plan.dlq_bootstrap or plan.bootstrap,
                {"max_request_size": _DLQ_MAX_REQUEST_BYTES, **plan.kafka_params},
            )
            if needs_producer
            else None
        )
        breaker_gauge = metrics.BREAKER_OPEN.labels(plan.query_name)
        breaker_gauge.set(0)
        self._quality = QualityGate(
            plan.quality, plan.spec.group_by, [a.output for a in plan.spec.aggregations]
        )
        self._breaker = CircuitBreaker(
            plan.breaker,
            name=f"{plan.query_name} sink",
            # Half-open counts as open: the sink is not known to be back yet.
            on_change=lambda state: breaker_gauge.set(0 if state is BreakerState.CLOSED else 1),
        )
        self._lock = asyncio.Lock()
        self._stop = asyncio.Event()
        self._joined = asyncio.Event()
        self._generation = 0
        self._next: dict[int, int] = {}
        self._ends: dict[int, int] = {}
        self._end_pending: set[int] = set()
        # Assigned partitions not restored yet (the sink was unreachable); their
        # records are not processed until they are.
        self._pending: set[int] = set()
        self._partition_count = 0
        self._late_log = RateLimitedLog(logging.getLogger("streamproc.late"))
        self._bad_log = RateLimitedLog(logging.getLogger("streamproc.dlq"))

    # ----------------------------------------------------------------- control
    def request_stop(self) -> None:
        """Finish the batch in flight, commit it, then stop."""
        self._stop.set()

    async def wait_until_assigned(self) -> None:
        """Return once this worker has joined the consumer group (with or without partitions)."""
        await self._joined.wait()

    @property
    def bounded(self) -> bool:
        """True for once/availablenow runs, which stop at the end offsets taken at start."""
        return self.plan.trigger in _BOUNDED

    async def _publish_rows(self, rows: Sequence[ResultRow]) -> None:
        """Kafka sink: deliver result rows as JSON, keyed by group key and window."""
        assert self._result_producer is not None and self.plan.sink_topic is not None
        spec = self.plan.spec
        outputs = [a.output for a in spec.aggregations]
        topic = self.plan.sink_topic
        await self._result_producer.send_all(
            [result_message(topic, spec.group_by, outputs, row) for row in rows]
        )

    # -------------------------------------------------------- rebalance hooks
    async def on_assigned(self, partitions: set[int]) -> None:
        """Restore each new partition exactly from Postgres and seek to its ledger offset.

        A partition that cannot be restored now (the sink is unreachable) stays
        pending: none of its records is processed until the loop restores it.
        """
        async with self._lock:
            self._generation += 1
            for p in partitions:
                self._next.pop(p, None)
            self._pending |= partitions
            if self.bounded and partitions:
                try:
                    listed = await self._source.end_offsets(partitions)
                except Exception as exc:
                    log.warning("cannot list end offsets yet (%s)", first_line(exc))
                    listed = {}
                for p in partitions:
                    self._ends[p] = listed.get(p, 0)
                    # The real end comes with the first fetch response: the
                    # local broker's ListOffsets can undercount (DESIGN.md 5).
                    self._end_pending.add(p)
            try:
                await self._restore_pending()
            except Exception as exc:
                # Never let a rebalance callback fail: aiokafka would log it and
                # carry on with partitions nobody restored.
                log.warning(
                    "cannot restore partitions %s yet (%s); they wait", sorted(self._pending), exc
                )
            log.info("assigned partitions %s", sorted(self._source.assignment()))
        self._joined.set()

    async def on_revoked(self, partitions: set[int]) -> None:
        """Drop local state of partitions another worker will own."""
        async with self._lock:
            self._generation += 1
            self._engine.revoke(partitions)
            for p in partitions:
                self._next.pop(p, None)
                self._ends.pop(p, None)
                self._end_pending.discard(p)
                self._pending.discard(p)
            log.info("revoked partitions %s", sorted(partitions))

    async def _restore_pending(self) -> None:
        """Restore every pending partition from its last commit and seek it to the ledger.

        W only ever rises, so the engine must never compute it from part of the
        topic: every pending partition is first reset to empty (an empty
        partition holds W back), then the other partitions get their ledger
        watermarks, and only then does each pending partition get its state.
        """
        if not self._partition_count:
            self._partition_count = await self._source.partition_count()
        pending = sorted(self._pending)
        for p in pending:
            self._engine.restore(p, None, ())
        await self._refresh_remote_watermarks()
        for p in pending:
            await self._load_partition(p)
            self._pending.discard(p)

    async def _replay_from_ledger(self) -> None:
        """Forget everything not committed and fetch it again, as a restarted worker would.

        A fresh engine (its W and stores knew uncommitted records), every owned
        partition restored from its last commit and seeked to the ledger.
        """
        self._generation += 1  # whatever was fetched before this is stale
        self._engine.close()
        self._engine = self._new_engine()
        self._next.clear()
        self._pending = set(self._source.assignment())
        await self._restore_pending()

    async def _restore_in_place(self) -> bool:
        """Like `_replay_from_ledger`, but keep the consumer where it is (to isolate a batch).

        Returns False, after a full replay, when the ledger moved meanwhile
        (another worker committed): then the batch at hand is stale.
        """
        self._engine.close()
        self._engine = self._new_engine()
        owned = sorted(self._source.assignment())
        for p in owned:
            self._engine.restore(p, None, ())
        await self._refresh_remote_watermarks()
        for p in owned:
            if p in self._pending:
                continue
            committed = await self._restore_engine(p)
            if committed is not None and committed != self._next.get(p):
                await self._replay_from_ledger()
                return False
        return True

    async def _restore_engine(self, p: int) -> int | None:
        """Reset p's engine state to its last commit; returns the ledger's next offset."""
        checkpoint = await self._checkpoint.load_partition(p)
        self._engine.revoke([p])
        self._engine.assign([p])
        self._engine.restore(p, checkpoint.max_event_ts_ms, checkpoint.partials)
        return checkpoint.next_offset

    async def _load_partition(self, p: int) -> None:
        next_offset = await self._restore_engine(p)
        if next_offset is not None:
            self._source.seek(p, next_offset)
            self._next[p] = next_offset
        else:
            await self._source.seek_to_start(p)
            self._next[p] = await self._source.position(p)

    async def _refresh_remote_watermarks(self) -> None:
        owned = self._source.assignment()
        remote = [p for p in range(self._partition_count) if p not in owned]
        if not remote:
            return
        marks = await self._checkpoint.watermarks()
        for p in remote:
            self._engine.set_remote_watermark(p, marks.get(p))

    # ---------------------------------------------------------------- the loop
    async def run(self) -> RunStats:
        """Run until stopped (or, for bounded triggers, until the end offsets)."""
        try:
            await call_with_retry(
                self._checkpoint.open,
                self.plan.retry,
                self._breaker,
                what="opening the sink",
                is_outage=_is_outage,
                retry_if=_is_outage,
            )
        except Exception as exc:
            if not _is_outage(exc):
                raise  # e.g. IncompatibleTableError: its message says what differs
            raise QueryFailedError(
                f"query {self.plan.query_name}: cannot reach the sink: {first_line(exc)}"
            ) from exc
        try:
            for producer in (self._producer, self._result_producer):
                if producer is not None:
                    await producer.start()
            await self._source.start()
            await self._wait_for_assignment()
            next_tick = time.monotonic()
            while not self._stop.is_set():
                if self.plan.trigger == "processingtime":
                    next_tick = await self._wait_for_tick(next_tick)
                    if self._stop.is_set():
                        break
                generation = self._generation
                raws = await self._collect()
                await self._run_batch(raws, generation)
                if self.bounded and self._bounded_done():
                    break
        finally:
            await self._shutdown()
        return self.stats

    async def _wait_for_assignment(self) -> None:
        stop = asyncio.ensure_future(self._stop.wait())
        joined = asyncio.ensure_future(self._joined.wait())
        await asyncio.wait({stop, joined}, return_when=asyncio.FIRST_COMPLETED)
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

    def _batch_cap(self) -> int | None:
        if self.plan.trigger == "once":
            return None
        return self.plan.max_records_per_trigger or DEFAULT_BATCH_CAP

    async def _collect(self) -> list[RawRecord]:
        """Fetch the records of one micro-batch, per the trigger."""
        cap = self._batch_cap()
        out: list[RawRecord] = []
        first_timeout = 200 if self.plan.trigger != "processingtime" else 50
        while True:
            want = (cap - len(out)) if cap is not None else DEFAULT_BATCH_CAP
            if want <= 0:
                break
            timeout = first_timeout if not out else 0
            if self.bounded and self._end_pending:
                # A zero timeout never yields to aiokafka's fetcher task, and
                # only its responses can tell the pending end offsets.
                timeout = max(timeout, 100)
            got = await self._source.fetch(want, timeout)
            if self.bounded:
                self._learn_ends()
                ends = self._ends
                got = [r for r in got if r.offset < ends.get(r.partition, 0)]
            out.extend(got)
            if self._stop.is_set() or (self.plan.trigger == "continuous" and out):
                break
            if self.bounded:
                if self._bounded_done(out) or (not got and not self._end_pending):
                    break
            elif not got:
                break
        return out

    def _learn_ends(self) -> None:
        # aiokafka forgets a partition's high watermark when the partition is
        # (re)assigned, so the first one it knows again comes from a fetch
        # response after the assignment, i.e. after this run started.
        for p in list(self._end_pending):
            hw = self._source.highwater(p)
            if hw is not None:
                self._ends[p] = max(self._ends.get(p, 0), hw)
                self._end_pending.discard(p)
                if self._next.get(p, 0) >= self._ends[p]:
                    self._source.pause({p})

    def _bounded_done(self, pending: Sequence[RawRecord] = ()) -> bool:
        if self._end_pending:
            return False
        reached = dict(self._next)
        for r in pending:
            if r.offset + 1 > reached.get(r.partition, 0):
                reached[r.partition] = r.offset + 1
        return all(reached.get(p, 0) >= end for p, end in self._ends.items())

    # ------------------------------------------------------------- one batch
    async def _run_batch(self, raws: list[RawRecord], generation: int) -> None:
        outage: Exception | None = None
        committed: list[PartitionCommit] = []
        async with self._lock:
            if generation != self._generation:
                # The assignment changed while fetching. Records fetched after
                # its seeks moved the consumer on, so seek back: dropping
                # fetched records without a seek would skip them for good.
                self._rewind()
                return
            try:
                if self._pending:
                    # Partitions assigned while the sink was unreachable: restore
                    # and seek them first; what was fetched meanwhile comes again.
                    self._generation += 1
                    self._rewind()
                    await self._restore_pending()
                    return
                committed = await self._process_and_commit(self._contiguous(raws), set())
            except _SinkOutage as exc:
                outage = exc.cause
            except (asyncio.CancelledError, QueryFailedError):
                raise
            except QualityAbortError as exc:
                # Nothing of the batch was written; a restart replays it.
                raise QueryFailedError(f"query {self.plan.query_name} stopped: {exc}") from exc
            except Exception as exc:
                # A read of the checkpoint (restore, watermarks) failed.
                if classify_failure(exc) is not FailureKind.UNAVAILABLE:
                    raise self._fatal(exc) from exc
                outage = exc
        if outage is not None:
            # Waiting happens outside the lock so that rebalances go on meanwhile.
            await self._wait_for_sink(outage)
            return
        await self._commit_offsets(committed)

    async def _process_and_commit(
        self, raws: list[RawRecord], dead_letters_sent: set[_Position], *, isolating: bool = False
    ) -> list[PartitionCommit]:
        """Process records and commit them in one transaction; returns what was committed.

        Args:
            raws: Contiguous records of owned partitions (may be empty: an emit
                can still close windows).
            dead_letters_sent: Positions whose dead letters were already
                delivered while isolating this batch (not sent twice).
            isolating: Part of a batch the sink rejected (see `_isolate`).

        Raises:
            _SinkOutage: the sink could not be reached (nothing was committed).
            QueryFailedError: the sink refused the batch and failFast is set, or
                the failure is neither an outage nor a rejection.
        """
        good, undecodable = decode_records(raws)
        good, filtered = self._quality.filter_records(good)
        result = self._engine.process(good)
        if not raws and not self._engine_wants_emit():
            return []
        if self._partition_count and len(self._source.assignment()) < self._partition_count:
            await self._refresh_remote_watermarks()
        emission = self._engine.emit()
        self._quality.check_rows(emission.rows)
        partitions = self._partition_commits(raws, result, undecodable, filtered)
        if not partitions and not any(emission.partials.values()):
            return []
        late_rows, dead_letters = self._route(raws, result, undecodable)
        batch = CommitBatch(
            partitions=partitions,
            partials=emission.partials,
            evicted=emission.evicted,
            local_rows=self._local_rows(emission),
            late_rows=late_rows,
            topic_partitions=self._partition_count,
            idle_timeout_ms=self.plan.spec.idle_timeout_ms,
        )
        # The first attempt at a batch gets the retry policy for every failure;
        # while isolating, a rejection is known to be final and only outages retry.
        retry_if = _is_outage if isolating else None
        try:
            await self._send_dead_letters(dead_letters, dead_letters_sent, retry_if)
            with metrics.COMMIT_SECONDS.labels(self.plan.query_name).time():
                outcome = await call_with_retry(
                    lambda: self._checkpoint.commit(batch),
                    self.plan.retry,
                    self._breaker,
                    what="sink transaction",
                    is_outage=_is_outage,
                    retry_if=retry_if or (lambda exc: True),
                )
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            return await self._after_failed_commit(exc, raws, partitions, dead_letters_sent)
        if outcome.stale:
            metrics.BATCHES.labels(self.plan.query_name, "stale").inc()
            self.stats.stale_batches += 1
            log.warning("stale batch for partitions %s: replaying", list(outcome.stale))
            await self._replay_from_ledger()
            return []
        self._after_commit(
            partitions, outcome, result.late, self._bad_items(raws, result, undecodable)
        )
        return list(partitions)

    async def _send_dead_letters(
        self,
        dead_letters: Sequence[tuple[_Position, OutgoingMessage]],
        sent: set[_Position],
        retry_if: Callable[[Exception], bool] | None,
    ) -> None:
        # Flushed before the transaction commits: dead letters are at-least-once.
        messages = [m for pos, m in dead_letters if pos not in sent]
        if not messages or self._producer is None:
            return
        producer = self._producer
        await call_with_retry(
            lambda: producer.send_all(messages),
            self.plan.retry,
            self._breaker,
            what="dead-letter write",
            is_outage=_is_outage,
            retry_if=retry_if or (lambda exc: True),
        )
        sent.update(pos for pos, _ in dead_letters)

    def _rewind(self) -> None:
        """Seek every restored partition back to its next uncommitted offset (the ledger's)."""
        owned = self._source.assignment()
        for p, offset in self._next.items():
            if p in owned:
                self._source.seek(p, offset)

    def _engine_wants_emit(self) -> bool:
        # With no records, an emit can still close windows (remote or idle
        # partitions moved W); the commit below is skipped when nothing changed.
        return self._engine.global_watermark_ms is not None

    def _contiguous(self, raws: list[RawRecord]) -> list[RawRecord]:
        """Keep only records at or after each partition's expected next offset."""
        nxt = self._next
        return [r for r in raws if r.partition in nxt and r.offset >= nxt[r.partition]]

    def _partition_commits(
        self,
        raws: Sequence[RawRecord],
        result: Any,
        undecodable: Sequence[Any],
        filtered: Mapping[int, int],
    ) -> tuple[PartitionCommit, ...]:
        last: dict[int, int] = {}
        count: dict[int, int] = defaultdict(int)
        for r in raws:
            last[r.partition] = r.offset
            count[r.partition] += 1
        bad_extra: dict[int, int] = defaultdict(int)
        for u in undecodable:
            bad_extra[u.raw.partition] += 1
        commits = []
        for p in sorted(last):
            prog = result.per_partition.get(p)
            commits.append(
                PartitionCommit(
                    partition=p,
                    start_offset=self._next[p],
                    next_offset=last[p] + 1,
                    records=count[p],
                    aggregated=prog.aggregated if prog else 0,
                    late=prog.late if prog else 0,
                    bad=(prog.bad if prog else 0) + bad_extra[p],
                    filtered=filtered.get(p, 0),
                    max_event_ts_ms=self._engine.partition_max_event_ts_ms(p),
                    watermark_ms=self._engine.partition_watermark_ms(p),
                )
            )
        return tuple(commits)

    def _local_rows(self, emission: Emission) -> Sequence[ResultRow] | None:
        """Rows merged locally, valid only when this worker owns every partition."""
        if self.plan.spec.output_mode == "append":
            return None
        if len(self._source.assignment()) < self._partition_count:
            return None
        if self.plan.spec.output_mode == "update":
            return emission.rows
        touched = {(r.key, r.window_start_ms) for rows in emission.partials.values() for r in rows}
        return [r for r in emission.rows if (r.key, r.window_start_ms) in touched]

    def _route(
        self, raws: Sequence[RawRecord], result: Any, undecodable: Sequence[UndecodableRecord]
    ) -> tuple[list[LateRow], list[tuple[_Position, OutgoingMessage]]]:
        """Late side-table rows and dead letters of a batch (no side effects: it may be retried)."""
        plan = self.plan
        late_rows: list[LateRow] = []
        messages: list[tuple[_Position, OutgoingMessage]] = []
        if not result.late and not result.bad and not undecodable:
            return late_rows, messages
        by_pos = {(r.partition, r.offset): r for r in raws}
        for late in result.late:
            if plan.late_strategy == "sendtodlq" and plan.late_dlq_topic:
                raw = by_pos[(late.partition, late.offset)]
                messages.append(
                    (
                        (raw.partition, raw.offset),
                        late_dlq_message(plan.late_dlq_topic, plan.topic, raw, late),
                    )
                )
            elif plan.late_strategy == "separatestream":
                late_rows.append(
                    LateRow(
                        late.partition,
                        late.offset,
                        late.event_ts_ms,
                        late.watermark_ms,
                        late.reason,
                        late.value,
                    )
                )
        if plan.dlq_type == "kafka" and plan.dlq_topic:
            for raw, reason in self._bad_items(raws, result, undecodable):
                messages.append(
                    (
                        (raw.partition, raw.offset),
                        bad_dlq_message(plan.dlq_topic, plan.topic, raw, reason),
                    )
                )
        return late_rows, messages

    @staticmethod
    def _bad_items(
        raws: Sequence[RawRecord], result: Any, undecodable: Sequence[UndecodableRecord]
    ) -> list[tuple[RawRecord, str]]:
        items: list[tuple[RawRecord, str]] = [(u.raw, u.reason) for u in undecodable]
        if result.bad:
            by_pos = {(r.partition, r.offset): r for r in raws}
            items += [(by_pos[(b.partition, b.offset)], b.reason) for b in result.bad]
        return items

    def _after_commit(
        self,
        partitions: Sequence[PartitionCommit],
        outcome: CommitOutcome,
        late: Sequence[Any] = (),
        bad: Sequence[tuple[RawRecord, str]] = (),
    ) -> None:
        stats = self.stats
        query = self.plan.query_name
        for p in partitions:
            self._next[p.partition] = p.next_offset
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
                    metrics.RECORDS.labels(query, outcome_name).inc(n)
            if p.late:
                metrics.LATE.labels(query, self.plan.late_strategy).inc(p.late)
            if p.watermark_ms is not None:
                metrics.WATERMARK.labels(query, str(p.partition)).set(p.watermark_ms)
        # Logged and summarised once committed, so a retried batch says it once.
        for record in late:
            stats.late_summary.add(record)
            if self.plan.late_strategy == "loganddrop":
                self._late_log.warning(
                    "late record dropped: partition %d offset %d event time %s watermark %s (%s)",
                    record.partition,
                    record.offset,
                    record.event_ts_ms,
                    record.watermark_ms,
                    record.reason,
                )
        if self.plan.dlq_type == "logging":
            for raw, reason in bad:
                self._bad_log.warning(
                    "bad record: partition %d offset %d: %s", raw.partition, raw.offset, reason
                )
        stats.batches += 1
        stats.result_rows += outcome.result_rows
        metrics.BATCHES.labels(query, "committed").inc()
        metrics.RESULT_ROWS.labels(query).inc(outcome.result_rows)
        if self.bounded:
            done = {
                p.partition for p in partitions if p.next_offset >= self._ends.get(p.partition, 0)
            }
            done -= set(self._end_pending)
            if done:
                self._source.pause(done)

    # ---------------------------------------------------------------- failures
    def _fatal(self, exc: Exception) -> QueryFailedError:
        log.error("query %s stops on an unexpected error", self.plan.query_name, exc_info=exc)
        return QueryFailedError(
            f"query {self.plan.query_name} stopped: {type(exc).__name__}: {first_line(exc)}"
        )

    async def _after_failed_commit(
        self,
        exc: Exception,
        raws: list[RawRecord],
        partitions: Sequence[PartitionCommit],
        dead_letters_sent: set[_Position],
    ) -> list[PartitionCommit]:
        """Apply the failure policy (FAULTS.md) to a batch whose delivery failed."""
        kind = classify_failure(exc)
        if kind is FailureKind.UNAVAILABLE:
            raise _SinkOutage(exc)
        self.stats.failed_commits += 1
        metrics.BATCHES.labels(self.plan.query_name, "failed").inc()
        if kind is FailureKind.FATAL:
            raise self._fatal(exc)
        spans = ", ".join(f"{p.partition}:{p.start_offset}-{p.next_offset}" for p in partitions)
        if self.plan.fail_fast:
            raise QueryFailedError(
                f"query {self.plan.query_name}: the sink rejected the batch of partition:offsets "
                f"{spans or 'none'} and failFast is set: {first_line(exc)}; "
                "nothing of it was written"
            ) from exc
        if not raws:
            raise QueryFailedError(
                f"query {self.plan.query_name}: the sink rejected closing windows, "
                f"no record to dead-letter: {first_line(exc)}"
            ) from exc
        log.warning(
            "the sink rejected the batch of partition:offsets %s (%s): isolating the records "
            "it cannot write",
            spans,
            first_line(exc),
        )
        # Back to the last commit; the consumer stays where it is: the records
        # at hand are processed again, in parts.
        if not await self._restore_in_place():
            return []
        return await self._isolate(raws, exc, dead_letters_sent)

    async def _isolate(
        self, raws: list[RawRecord], exc: Exception, dead_letters_sent: set[_Position]
    ) -> list[PartitionCommit]:
        """Commit a rejected batch in halves until the records the sink refuses stand alone.

        Only a single record is dead-lettered, so which records go to the DLQ
        does not depend on batch boundaries: a replay after a crash, or any
        other split into batches, dead-letters exactly the same records.
        """
        if len(raws) == 1:
            return await self._dead_letter(raws[0], exc, dead_letters_sent)
        partitions = sorted({r.partition for r in raws})
        if len(partitions) > 1:
            groups = [[r for r in raws if r.partition == p] for p in partitions]
        else:
            half = len(raws) // 2
            groups = [raws[:half], raws[half:]]
        generation = self._generation
        committed: list[PartitionCommit] = []
        for group in groups:
            committed += await self._process_and_commit(group, dead_letters_sent, isolating=True)
            if self._generation != generation:
                # A part was stale (another worker committed): everything was
                # replayed from the ledger, the rest of this batch is fetched again.
                break
        return committed

    async def _dead_letter(
        self, raw: RawRecord, exc: Exception, dead_letters_sent: set[_Position]
    ) -> list[PartitionCommit]:
        """Send one record the sink rejects to the DLQ and record it in the ledger."""
        p = raw.partition
        error = first_line(exc)
        commit = PartitionCommit(
            partition=p,
            start_offset=self._next[p],
            next_offset=raw.offset + 1,
            records=1,
            aggregated=0,
            late=0,
            bad=1,
            filtered=0,
            max_event_ts_ms=self._engine.partition_max_event_ts_ms(p),
            watermark_ms=self._engine.partition_watermark_ms(p),
            dead_lettered=1,
            error=error,
        )
        plan = self.plan
        if plan.dlq_type == "kafka" and plan.dlq_topic and self._producer is not None:
            bid = batch_id(plan.query_name, plan.topic, p, commit.start_offset, commit.next_offset)
            message = failed_record_dlq_message(
                plan.dlq_topic, plan.topic, raw, bid, commit.start_offset, commit.next_offset, error
            )
            try:
                await self._send_dead_letters([((p, raw.offset), message)], set(), _is_outage)
            except asyncio.CancelledError:
                raise
            except Exception as dlq_exc:
                kind = classify_failure(dlq_exc)
                if kind is FailureKind.UNAVAILABLE:
                    raise _SinkOutage(dlq_exc) from dlq_exc
                if kind is FailureKind.FATAL:
                    raise self._fatal(dlq_exc) from dlq_exc
                # The DLQ refuses it too (too large): the ledger row says so and
                # where the record is, so it can be found in the source topic.
                log.error(
                    "partition %d offset %d: rejected by the sink and by the DLQ (%s)",
                    p,
                    raw.offset,
                    first_line(dlq_exc),
                )
                commit = replace(commit, error=f"{error}; not dead-lettered: {first_line(dlq_exc)}")
        elif plan.dlq_type == "logging":
            self._bad_log.warning(
                "record rejected by the sink: partition %d offset %d: %s", p, raw.offset, error
            )
        batch = CommitBatch(
            partitions=(commit,),
            partials={},
            evicted={},
            local_rows=(),
            topic_partitions=self._partition_count,
            idle_timeout_ms=plan.spec.idle_timeout_ms,
        )
        try:
            outcome = await call_with_retry(
                lambda: self._checkpoint.commit(batch),
                plan.retry,
                self._breaker,
                what="sink transaction",
                is_outage=_is_outage,
                retry_if=_is_outage,
            )
        except asyncio.CancelledError:
            raise
        except Exception as ledger_exc:
            if classify_failure(ledger_exc) is FailureKind.UNAVAILABLE:
                raise _SinkOutage(ledger_exc) from ledger_exc
            raise QueryFailedError(
                f"query {plan.query_name}: partition {p} offset {raw.offset} was rejected by the "
                f"sink ({error}) and cannot be recorded as dead-lettered: {first_line(ledger_exc)}"
            ) from ledger_exc
        if outcome.stale:
            await self._replay_from_ledger()
            return []
        metrics.BATCHES.labels(plan.query_name, "dead_lettered").inc()
        log.warning("dead-lettered partition %d offset %d: %s", p, raw.offset, error)
        self._after_commit((commit,), outcome)
        return [commit]

    async def _wait_for_sink(self, cause: Exception) -> None:
        """The sink is unreachable: wait (per the breaker), then replay from the ledger.

        Nothing is dropped and nothing is skipped: every owned partition is
        restored from its last commit and fetched again from there. Tries are
        spaced by the breaker's reset timeout while it is open, and by the
        retry policy's delays (at least a second) while it is not.
        """
        self.stats.sink_outages += 1
        metrics.BATCHES.labels(self.plan.query_name, "unavailable").inc()
        log.error(
            "sink unavailable (%s): batch not committed, nothing dropped; waiting for the sink",
            first_line(cause),
        )
        attempt = 0
        while not self._stop.is_set():
            delay = self._breaker.seconds_until_probe() or outage_delay(self.plan.retry, attempt)
            log.warning(
                "sink unavailable: circuit breaker %s, next try in %.1fs",
                self._breaker.state.value,
                delay,
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), delay)
            if self._stop.is_set():
                return
            attempt += 1
            try:
                self._breaker.before_call()
            except CircuitOpenError:
                continue
            try:
                async with self._lock:
                    await self._replay_from_ledger()
            except asyncio.CancelledError:
                self._breaker.record_abandoned()
                raise
            except Exception as exc:
                if classify_failure(exc) is not FailureKind.UNAVAILABLE:
                    self._breaker.record_success()
                    raise self._fatal(exc) from exc
                self._breaker.record_failure()
                log.warning("sink still unavailable: %s", first_line(exc))
                continue
            self._breaker.record_success()
            log.warning("sink reachable again: replaying from the ledger")
            return

    async def _commit_offsets(self, partitions: Sequence[PartitionCommit]) -> None:
        try:
            await self._source.commit({p.partition: p.next_offset for p in partitions})
        except Exception as exc:  # offsets are informational; the ledger decides
            log.debug("consumer offset commit failed: %s", exc)

    async def _shutdown(self) -> None:
        for closer in (self._source.stop, self._stop_producer, self._checkpoint.close):
            try:
                await closer()
            except Exception as exc:
                log.warning("error while stopping: %s", exc)
        self._engine.close()

    async def _stop_producer(self) -> None:
        for producer in (self._producer, self._result_producer):
            if producer is not None:
                await producer.stop()

"""StreamingQuery: the micro-batch loop of one worker.

fetch (aiokafka getmany) -> decode -> engine.process -> engine.emit ->
dead-letter writes -> one Postgres transaction (partials, results, late rows,
ledger) -> consumer offsets. The Postgres transaction is the commit point;
see STREAMING.md "Exactly once".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from streamproc.engine import Emission, Engine, PartialRow, ResultRow
from streamproc.runtime import metrics
from streamproc.runtime.decode import RawRecord, decode_records
from streamproc.runtime.late import (
    LateSummary,
    RateLimitedLog,
    bad_dlq_message,
    late_dlq_message,
)
from streamproc.runtime.plan import QueryPlan
from streamproc.runtime.resilience import (
    BreakerState,
    CircuitBreaker,
    CircuitOpenError,
    call_with_retry,
)
from streamproc.sinks.kafka import KafkaProducerSink, OutgoingMessage, result_message
from streamproc.sinks.layout import result_layout
from streamproc.sinks.postgres import (
    CommitBatch,
    CommitOutcome,
    LateRow,
    PartitionCommit,
    PostgresCheckpoint,
)
from streamproc.sources.kafka import KafkaSource, KafkaSourceConfig
from streamproc.state.base import WindowStore

log = logging.getLogger("streamproc.query")

# Without maxRecordsPerTrigger a micro-batch is still capped, so one
# transaction stays small; the cap never changes results, only batch sizes.
DEFAULT_BATCH_CAP = 20_000
_BOUNDED = ("once", "availablenow")


@dataclass(slots=True)
class RunStats:
    """Counts of one run of a query (this worker only)."""

    records: int = 0
    aggregated: int = 0
    late: int = 0
    bad: int = 0
    filtered: int = 0
    batches: int = 0
    stale_batches: int = 0
    failed_commits: int = 0
    result_rows: int = 0
    late_summary: LateSummary = field(default_factory=LateSummary)
    started_at: float = field(default_factory=time.monotonic)

    def records_per_second(self) -> float:
        """Records read per wall second since the run started."""
        elapsed = time.monotonic() - self.started_at
        return self.records / elapsed if elapsed > 0 else 0.0


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
        self._engine = (
            Engine(plan.spec, store_factory, clock_ms)
            if clock_ms
            else Engine(plan.spec, store_factory)
        )
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
            KafkaProducerSink(plan.dlq_bootstrap or plan.bootstrap, plan.kafka_params)
            if needs_producer
            else None
        )
        self._breaker = CircuitBreaker(
            plan.breaker,
            name=f"{plan.query_name} sink",
            on_change=lambda state: metrics.BREAKER_OPEN.labels(plan.query_name).set(
                1 if state is BreakerState.OPEN else 0
            ),
        )
        self._lock = asyncio.Lock()
        self._stop = asyncio.Event()
        self._joined = asyncio.Event()
        self._generation = 0
        self._next: dict[int, int] = {}
        self._ends: dict[int, int] = {}
        self._end_pending: set[int] = set()
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
        """Restore each new partition exactly from Postgres and seek to its ledger offset."""
        async with self._lock:
            self._generation += 1
            if not self._partition_count:
                self._partition_count = await self._source.partition_count()
            for p in sorted(partitions):
                await self._load_partition(p)
            if self.bounded and partitions:
                listed = await self._source.end_offsets(partitions)
                for p in partitions:
                    self._ends[p] = listed.get(p, 0)
                    # The real end comes with the first fetch response: the
                    # local broker's ListOffsets can undercount (DESIGN.md 5).
                    self._end_pending.add(p)
            await self._refresh_remote_watermarks()
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
            log.info("revoked partitions %s", sorted(partitions))

    async def _load_partition(self, p: int) -> None:
        checkpoint = await self._checkpoint.load_partition(p)
        self._engine.revoke([p])
        self._engine.assign([p])
        self._engine.restore(p, checkpoint.max_event_ts_ms, checkpoint.partials)
        if checkpoint.next_offset is not None:
            self._source.seek(p, checkpoint.next_offset)
            self._next[p] = checkpoint.next_offset
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
        await self._checkpoint.open()
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

    def _all_ends_known(self) -> bool:
        return not self._end_pending

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
        async with self._lock:
            if generation != self._generation:
                # The assignment changed while fetching; the seeks it made
                # refetch everything that still belongs to us.
                return
            raws = self._contiguous(raws)
            good, undecodable = decode_records(raws)
            result = self._engine.process(good)
            if not raws and not self._engine_wants_emit():
                return
            if self._partition_count and len(self._source.assignment()) < self._partition_count:
                await self._refresh_remote_watermarks()
            emission = self._engine.emit()
            partitions = self._partition_commits(raws, result, undecodable)
            if not partitions and not any(emission.partials.values()):
                return
            late_rows, messages = self._route(raws, result, undecodable)
            batch = CommitBatch(
                partitions=partitions,
                partials=emission.partials,
                evicted=emission.evicted,
                local_rows=self._local_rows(emission),
                late_rows=late_rows,
                topic_partitions=self._partition_count,
                idle_timeout_ms=self.plan.spec.idle_timeout_ms,
            )
            try:
                if messages and self._producer is not None:
                    producer = self._producer
                    await call_with_retry(
                        lambda: producer.send_all(messages),
                        self.plan.retry,
                        self._breaker,
                        what="dead-letter write",
                    )
                with metrics.COMMIT_SECONDS.labels(self.plan.query_name).time():
                    outcome = await call_with_retry(
                        lambda: self._checkpoint.commit(batch),
                        self.plan.retry,
                        self._breaker,
                        what="sink transaction",
                    )
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                await self._after_failed_commit(exc, partitions)
                return
            if outcome.stale:
                metrics.BATCHES.labels(self.plan.query_name, "stale").inc()
                self.stats.stale_batches += 1
                log.warning("stale batch for partitions %s: reloading them", list(outcome.stale))
                await self._reload([p.partition for p in partitions])
                return
            self._after_commit(partitions, result, outcome)
        await self._commit_offsets(partitions)

    def _engine_wants_emit(self) -> bool:
        # With no records, an emit can still close windows (remote or idle
        # partitions moved W); the commit below is skipped when nothing changed.
        return self._engine.global_watermark_ms is not None

    def _contiguous(self, raws: list[RawRecord]) -> list[RawRecord]:
        """Keep only records at or after each partition's expected next offset."""
        nxt = self._next
        return [r for r in raws if r.partition in nxt and r.offset >= nxt[r.partition]]

    def _partition_commits(
        self, raws: Sequence[RawRecord], result: Any, undecodable: Sequence[Any]
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
                    filtered=0,
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
        self, raws: Sequence[RawRecord], result: Any, undecodable: Sequence[Any]
    ) -> tuple[list[LateRow], list[OutgoingMessage]]:
        plan = self.plan
        late_rows: list[LateRow] = []
        messages: list[OutgoingMessage] = []
        if not result.late and not result.bad and not undecodable:
            return late_rows, messages
        by_pos = {(r.partition, r.offset): r for r in raws}
        for late in result.late:
            self.stats.late_summary.add(late)
            if plan.late_strategy == "loganddrop":
                self._late_log.warning(
                    "late record dropped: partition %d offset %d event time %s watermark %s (%s)",
                    late.partition,
                    late.offset,
                    late.event_ts_ms,
                    late.watermark_ms,
                    late.reason,
                )
            elif plan.late_strategy == "sendtodlq" and plan.late_dlq_topic:
                raw = by_pos[(late.partition, late.offset)]
                messages.append(late_dlq_message(plan.late_dlq_topic, plan.topic, raw, late))
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
        bad_items: list[tuple[RawRecord, str]] = [(u.raw, u.reason) for u in undecodable]
        bad_items += [(by_pos[(b.partition, b.offset)], b.reason) for b in result.bad]
        for raw, reason in bad_items:
            if plan.dlq_type == "kafka" and plan.dlq_topic:
                messages.append(bad_dlq_message(plan.dlq_topic, plan.topic, raw, reason))
            elif plan.dlq_type == "logging":
                self._bad_log.warning(
                    "bad record: partition %d offset %d: %s", raw.partition, raw.offset, reason
                )
        return late_rows, messages

    def _after_commit(
        self, partitions: Sequence[PartitionCommit], result: Any, outcome: CommitOutcome
    ) -> None:
        stats = self.stats
        query = self.plan.query_name
        for p in partitions:
            self._next[p.partition] = p.next_offset
            stats.records += p.records
            stats.aggregated += p.aggregated
            stats.late += p.late
            stats.bad += p.bad
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

    async def _after_failed_commit(
        self, exc: Exception, partitions: Sequence[PartitionCommit]
    ) -> None:
        self.stats.failed_commits += 1
        metrics.BATCHES.labels(self.plan.query_name, "failed").inc()
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if self.plan.fail_fast:
            raise QueryFailedError(
                f"query {self.plan.query_name}: batch of partitions "
                f"{[p.partition for p in partitions]} failed after retries and failFast is set: "
                f"{message}; nothing of it was written"
            ) from exc
        log.error("batch not committed (%s); it will be replayed from the ledger", message)
        if isinstance(exc, CircuitOpenError):
            await asyncio.sleep(min(self._breaker.seconds_until_probe(), 5.0) or 0.5)
        await self._reload_when_possible([p.partition for p in partitions])

    async def _reload_when_possible(self, partitions: list[int]) -> None:
        while not self._stop.is_set():
            try:
                await self._reload(partitions)
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("cannot reload partitions %s yet: %s", partitions, exc)
                await asyncio.sleep(1.0)

    async def _reload(self, partitions: list[int]) -> None:
        owned = self._source.assignment()
        for p in partitions:
            if p in owned:
                await self._load_partition(p)
        self._generation += 1

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


def default_store_dir(plan: QueryPlan) -> Path:
    """Where a query keeps its RocksDB working state."""
    return Path(plan.checkpoint_location) / "state"


__all__ = ["PartialRow", "QueryFailedError", "RunStats", "StreamingQuery", "default_store_dir"]

"""A worker owning every partition, run by hand: a `SessionEngine` committing through a
checkpoint, as the runtime does, with crashes and restores in between.

Each `step` takes the next records of some partitions (one `process` call), emits, and
commits the emission as one `CommitBatch` (`session_batch_parts`); `crash` drops the
engine and what it did since its last commit; `restore` builds a new engine from the
checkpoint alone (state rows, fences, positions, W). The phases that were committed are
what the reference model (tests/reference_sessions.py) is fed.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from streamproc.engine import AggSpec, QuerySpec, SessionEngine, SessionSpec
from streamproc.sinks.base import Checkpoint, CommitBatch, CommitOutcome, LateRow, PartitionCommit
from streamproc.sinks.session_commit import session_batch_parts
from tests.reference import Query
from tests.reference_sessions import Phase, expected_sessions

AGGS = (AggSpec("n", None, "count"), AggSpec("total", "v", "sum"))
GAP = 10


def session_spec(
    mode: str, delay_ms: int = 3, gap_ms: int = GAP, idle_timeout_ms: int | None = None
) -> QuerySpec:
    """count(*) as n and sum(v) as total per k, in sessions of `gap_ms`."""
    return QuerySpec(
        group_by=("k",),
        aggregations=AGGS,
        output_mode=mode,  # type: ignore[arg-type]
        event_time_column="t",
        event_time_format="epoch_millis",
        delay_ms=delay_ms,
        idle_timeout_ms=idle_timeout_ms,
        session=SessionSpec(gap_ms),
    )


def random_streams(seed: int, partitions: int, per_partition: int) -> dict[int, list[Any]]:
    """Records of keys a, b, c on every partition, in event-time disorder, some late."""
    rng = random.Random(seed)
    streams: dict[int, list[Any]] = {}
    for p in range(partitions):
        t = rng.randint(0, 10)
        records = []
        for _ in range(per_partition):
            t += rng.choice([0, 1, 2, 4, 6, 9, 10, 11, 15])
            ts = t - rng.choice([0, 0, 0, 1, 3, 8, 14])  # disorder, some late
            records.append({"t": ts, "k": rng.choice("abc"), "v": rng.randint(-3, 9)})
        streams[p] = records
    return streams


@dataclass
class SessionWorker:
    """One worker owning every partition of the topic, committing sessions."""

    spec: QuerySpec
    checkpoint: Checkpoint
    streams: Mapping[int, Sequence[Any]]
    #: The partitions this worker owns (None: every one; it closes sessions itself).
    owned: Sequence[int] | None = None
    engine: SessionEngine = field(init=False)
    #: Phases committed so far (each one `process` call), for the reference model;
    #: workers of one query share it.
    log: list[Phase] = field(default_factory=list)
    pending: list[Phase] = field(default_factory=list)
    late: dict[tuple[int, int], str] = field(default_factory=dict)
    pending_late: dict[tuple[int, int], str] = field(default_factory=dict)
    outcomes: list[CommitOutcome] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.engine = self._new_engine()

    @property
    def partitions(self) -> list[int]:
        """Every partition of the topic."""
        return sorted(self.streams)

    @property
    def mine(self) -> list[int]:
        """The partitions this worker owns."""
        return self.partitions if self.owned is None else sorted(self.owned)

    @property
    def local(self) -> bool:
        return self.mine == self.partitions

    def _new_engine(self) -> SessionEngine:
        engine = SessionEngine(self.spec, clock=lambda: 0)
        engine.closes_locally = self.local
        engine.assign(self.mine)
        return engine

    async def _remote_marks(self) -> None:
        """Other workers' partitions in W, and W, as the checkpoint has them."""
        marks = await self.checkpoint.watermarks()
        for p in self.partitions:
            if p not in self.mine:
                self.engine.set_remote_watermark(p, marks.partitions.get(p))
        if marks.global_ms is not None:
            self.engine.advance_global_watermark(marks.global_ms)

    async def restore(self) -> None:
        """A new engine from the checkpoint alone; what was not committed is gone."""
        self.engine = engine = self._new_engine()
        self.pending, self.pending_late = [], {}
        for p in self.mine:
            loaded = await self.checkpoint.load_partition(p)
            engine.restore(
                p,
                loaded.max_event_ts_ms,
                loaded.partials,
                next_offset=loaded.next_offset,
                closed=loaded.fences,
            )
        await self._remote_marks()

    def done(self) -> bool:
        return all(
            (self.engine.partition_next_offset(p) or 0) >= len(self.streams[p]) for p in self.mine
        )

    async def step(
        self, take: Mapping[int, int], *, commit: bool = True, stale: bool = False
    ) -> CommitOutcome | None:
        """Process up to take[p] next records of each partition; emit and commit them
        (stale: the commit must be stale; nothing of it counts, restore next)."""
        await self._remote_marks()
        engine = self.engine
        starts = {p: engine.partition_next_offset(p) or 0 for p in self.mine}
        basis = {p: engine.partition_next_offset(p) for p in self.mine}
        batch: list[tuple[int, int, Any]] = []
        for p, n in take.items():
            if p not in self.mine:
                continue
            records = self.streams[p][starts[p] : starts[p] + n]
            batch += [(p, starts[p] + i, r) for i, r in enumerate(records)]
        result = engine.process(batch)
        self.pending.append((None, [(p, r) for p, _, r in batch]))
        self.pending_late.update({(r.partition, r.offset): r.reason for r in result.late})
        emission = engine.emit()
        if not commit:
            return None
        parts = session_batch_parts(emission, self.mine)
        carried = []
        for p in sorted({p for p, _, _ in batch}):
            n = sum(1 for q, _, _ in batch if q == p)
            carried.append(
                PartitionCommit(
                    p,
                    starts[p],
                    starts[p] + n,
                    n,
                    n,
                    0,
                    0,
                    0,
                    engine.partition_max_event_ts_ms(p),
                    engine.partition_watermark_ms(p),
                )
            )
        late_rows = tuple(
            LateRow(r.partition, r.offset, r.event_ts_ms, r.watermark_ms, r.reason, r.value)
            for r in result.late
        )
        outcome = await self.checkpoint.commit(
            CommitBatch(
                tuple(carried),
                parts.partials,
                parts.evicted,
                parts.rows if self.local else None,
                late_rows,
                topic_partitions=len(self.partitions),
                idle_timeout_ms=self.spec.idle_timeout_ms,
                closes_locally=self.local,
                watermark_ms=emission.global_watermark_ms,
                basis=basis if self.local else None,
                sessions=parts.sessions,
            )
        )
        assert bool(outcome.stale) == stale, outcome
        if stale:
            return outcome
        self.outcomes.append(outcome)
        self.log += self.pending
        self.late.update(self.pending_late)
        self.pending, self.pending_late = [], {}
        return outcome

    def expected(self) -> dict[tuple[Any, ...], tuple[Any, ...]]:
        """The reference model's table for the committed phases."""
        return self.reference().table

    def reference(self) -> Any:
        assert self.spec.session is not None
        gap = self.spec.session.gap_ms
        return expected_sessions(Query.of(self.spec), gap, self.partitions, self.log)


async def run_with_restarts(*workers: SessionWorker, seed: int) -> None:
    """Feed every record in random steps of random workers, with crashes before a
    commit and restarts."""
    rng = random.Random(seed)
    while not all(w.done() for w in workers):
        worker = rng.choice([w for w in workers if not w.done()])
        take = {p: rng.randint(0, 4) for p in worker.mine if rng.random() < 0.8}
        fate = rng.random()
        if fate < 0.12:
            await worker.step(take, commit=False)  # killed before its commit
            await worker.restore()
        elif fate < 0.2:
            await worker.step(take)
            await worker.restore()  # a clean restart
        else:
            await worker.step(take)

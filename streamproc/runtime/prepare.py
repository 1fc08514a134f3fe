"""Preparing a micro-batch: raw records in, the commit and what goes with it out.

No I/O: decoding, quality filtering and the engine fold the records
(`process_records`); after the engine's emit, `prepare_commit` builds the
ledger entries, the partials and rows to write, the late side-table rows
and the dead letters. The committer makes the result durable; a retry
prepares the same records again and gets the same values.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from streamproc.engine import (
    BatchResult,
    Emission,
    LateRecord,
    QuerySpec,
    ResultRow,
    StreamEngine,
)
from streamproc.runtime.decode import UndecodableRecord, decode_records
from streamproc.runtime.eventtime_guard import EventTimeGuard
from streamproc.runtime.quality import QualityGate, Quarantined, per_partition
from streamproc.runtime.routers import BadRouter, DeadLetter, LateRouter, Routed
from streamproc.sinks.base import CommitBatch, PartitionCommit
from streamproc.sinks.session_commit import SessionCommit
from streamproc.sources.base import RawRecord, record_digest
from streamproc.timing import PhaseTimes

#: A bad record and the reason it is bad.
BadItem = tuple[RawRecord, str]


@dataclass(frozen=True, slots=True)
class ProcessedBatch:
    """Records folded into the engine, before the emit."""

    raws: Sequence[RawRecord]
    result: BatchResult
    undecodable: Sequence[UndecodableRecord]
    #: Records the quality rules took out (onFailure continue): routed like
    #: bad records, counted as filtered.
    quarantined: Sequence[Quarantined] = ()

    @property
    def filtered(self) -> Mapping[int, int]:
        """How many records the quality rules took out, per partition."""
        return per_partition(self.quarantined)

    def bad_items(self) -> list[BadItem]:
        """Every bad record of the batch with its reason: undecodable first, then the engine's."""
        items: list[BadItem] = [(u.raw, u.reason) for u in self.undecodable]
        if self.result.bad:
            raw_at = self.raw_at()
            items += [(raw_at(b.partition, b.offset), b.reason) for b in self.result.bad]
        return items

    def raw_at(self) -> Callable[[int, int], RawRecord]:
        """Finds the raw record at (partition, offset) (offsets may have gaps: compaction)."""
        per_partition: dict[int, dict[int, RawRecord]] = {}
        for r in self.raws:
            records = per_partition.get(r.partition)
            if records is None:
                records = per_partition[r.partition] = {}
            records[r.offset] = r

        def find(partition: int, offset: int) -> RawRecord:
            return per_partition[partition][offset]

        return find


@dataclass(frozen=True, slots=True)
class PreparedBatch:
    """A batch ready to commit, with what the accounting needs once it is durable."""

    commit: CommitBatch
    dead_letters: Sequence[DeadLetter]
    late: Sequence[LateRecord]
    bad: Sequence[BadItem]
    #: The records it holds (the failure policy processes them again in parts).
    raws: Sequence[RawRecord] = ()


@dataclass(frozen=True, slots=True)
class Prepared:
    """The loop prepared a fetched batch (None: nothing to commit)."""

    batch: PreparedBatch | None


@dataclass(frozen=True, slots=True)
class Rewind:
    """The assignment changed under a fetched batch: nothing prepared, the consumer rewound."""


@dataclass(frozen=True, slots=True)
class Outage:
    """The sink could not be reached while preparing (a checkpoint read): wait, then replay."""

    cause: Exception


#: What the loop's preparation of a fetched batch came to.
PrepareOutcome = Prepared | Rewind | Outage


def process_records(
    raws: Sequence[RawRecord],
    engine: StreamEngine,
    quality: QualityGate,
    guard: EventTimeGuard,
    times: PhaseTimes,
) -> ProcessedBatch:
    """Decode, set aside event-time outliers, filter by the quality rules, fold into the engine."""
    with times.phase("decode"):
        good, undecodable = decode_records(raws)
        good, too_far = guard.future(good, raws)
        good, quarantined = quality.filter_records(good)
        guard.check_seconds(good)
    with times.phase("engine"):
        result = engine.process(good)
    guard.check_jumps(result, good)
    return ProcessedBatch(raws, result, undecodable + too_far, quarantined)


def partition_commits(
    batch: ProcessedBatch, engine: StreamEngine, next_offsets: Mapping[int, int]
) -> tuple[PartitionCommit, ...]:
    """One ledger entry per partition of the batch, starting at its expected offset."""
    last: dict[int, RawRecord] = {}
    count: dict[int, int] = defaultdict(int)
    for r in batch.raws:
        last[r.partition] = r
        count[r.partition] += 1
    bad_extra: dict[int, int] = defaultdict(int)
    for u in batch.undecodable:
        bad_extra[u.raw.partition] += 1
    commits = []
    for p in sorted(last):
        prog = batch.result.per_partition.get(p)
        commits.append(
            PartitionCommit(
                partition=p,
                start_offset=next_offsets[p],
                next_offset=last[p].offset + 1,
                records=count[p],
                aggregated=prog.aggregated if prog else 0,
                late=prog.late if prog else 0,
                bad=(prog.bad if prog else 0) + bad_extra[p],
                filtered=batch.filtered.get(p, 0),
                max_event_ts_ms=engine.partition_max_event_ts_ms(p),
                watermark_ms=engine.partition_watermark_ms(p),
                last_record=record_digest(last[p]),
                min_event_ts_ms=prog.min_event_ts_ms if prog else None,
            )
        )
    return tuple(commits)


def closes_locally(spec: QuerySpec, owns_every_partition: bool) -> bool:
    """True when windows closing at this emit are written from the engine's own merge.

    A worker that owns every partition merges rows exactly; without an idle
    timeout its W is the checkpoint's W (both the monotonic minimum of the
    same partition watermarks), so the windows it closes are exactly the ones
    the checkpoint closes. Their partial states then need not be written at
    all: the checkpoint drops every stored state of a closed window by W.
    Sessions too (every output mode): else the checkpoint merges and closes them.
    """
    if spec.session is not None:
        return owns_every_partition and spec.idle_timeout_ms is None
    return (
        owns_every_partition
        and spec.idle_timeout_ms is None
        and spec.window is not None
        and spec.output_mode in ("update", "append")
    )


def local_rows(
    emission: Emission, spec: QuerySpec, owns_every_partition: bool
) -> Sequence[ResultRow] | None:
    """Rows merged locally, valid only when this worker owns every partition.

    A pass-through query's rows are its records: always written as they are.
    None means the checkpoint merges them from every partition's partials
    (append mode: when the windows close).
    """
    output_mode = spec.output_mode
    if spec.passthrough:
        return emission.rows  # one row per record: nothing to merge across partitions
    if spec.session is not None:  # valid only when the engine closed sessions itself
        return emission.rows if closes_locally(spec, owns_every_partition) else None
    if not owns_every_partition:
        return None
    if output_mode == "append":
        return emission.rows if closes_locally(spec, owns_every_partition) else None
    return _touched_rows(emission, spec)


def _touched_rows(emission: Emission, spec: QuerySpec) -> Sequence[ResultRow]:
    """The emission's rows of the (key, window)s the batch touched (update: all of them)."""
    if spec.output_mode == "update":
        return emission.rows
    touched = {(r.key, r.window_start_ms) for rows in emission.partials.values() for r in rows}
    return [r for r in emission.rows if (r.key, r.window_start_ms) in touched]


def route(batch: ProcessedBatch, late: LateRouter, bad: BadRouter) -> Routed:
    """Late side-table rows and dead letters of a batch (quarantined records go as bad ones)."""
    routed = Routed()
    result = batch.result
    if not result.late and not result.bad and not batch.undecodable and not batch.quarantined:
        return routed
    raw_at = batch.raw_at()
    for record in result.late:
        late.route(raw_at(record.partition, record.offset), record, routed)
    for raw, reason in batch.bad_items():
        bad.route(raw, reason, routed)
    for q in batch.quarantined:
        bad.route(raw_at(q.partition, q.offset), q.reason, routed)
    return routed


def prepare_commit(
    batch: ProcessedBatch,
    emission: Emission,
    engine: StreamEngine,
    *,
    next_offsets: Mapping[int, int],
    owns_every_partition: bool,
    topic_partitions: int,
    late: LateRouter,
    bad: BadRouter,
    expected_positions: Mapping[int, int | None] | None = None,
) -> PreparedBatch | None:
    """The commit of a processed batch after the engine's emit; None when it changes nothing.

    Args:
        expected_positions: Every partition's committed position as this worker
            knows it (`PartitionTracker.expected_positions`): the basis of rows
            merged from every partition's state.
    """
    spec = engine.spec
    local = closes_locally(spec, owns_every_partition)
    partitions = partition_commits(batch, engine, next_offsets)
    if (
        not partitions
        and not any(emission.partials.values())
        and not (local and emission.rows)
        and not emission.expired
        and not (spec.session and (any(emission.evicted.values()) or emission.closed))
    ):
        return None
    routed = route(batch, late, bad)
    rows = local_rows(emission, spec, owns_every_partition)
    merged_locally = local or (rows is not None and not spec.passthrough)
    own = None
    sessions = None
    if spec.session is not None:
        sessions = SessionCommit(emission.deleted_rows, emission.closed)
    elif rows is None and not spec.passthrough and spec.output_mode != "append":
        own = _touched_rows(emission, spec)
    commit = CommitBatch(
        partitions=partitions,
        partials=emission.partials,
        evicted=emission.evicted,
        local_rows=rows,
        own_rows=own,
        late_rows=routed.late_rows,
        dead_letter_rows=routed.dead_letter_rows,
        topic_partitions=topic_partitions,
        idle_timeout_ms=spec.idle_timeout_ms,
        closes_locally=local,
        watermark_ms=emission.global_watermark_ms,
        expired=emission.expired,
        basis=dict(expected_positions or {}) if merged_locally else None,
        sessions=sessions,
    )
    return PreparedBatch(
        commit, routed.dead_letters, batch.result.late, batch.bad_items(), batch.raws
    )

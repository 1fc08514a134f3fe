"""The sink ports: the exactly-once `Checkpoint` and the `ResultSink` it writes through.

A micro-batch becomes durable in one `Checkpoint.commit`: the ledger check
(is the batch still the next one of each partition?), the partial
aggregates, the result rows (through the query's `ResultSink`), the late
side-table rows, the dead-letter rows (dlqType postgresql) and the ledger
rows, all or nothing (STREAMING.md, "Exactly once").

Implementations: `PostgresCheckpoint` with `PostgresTableSink` or
`KafkaResultSink`; `streamproc.testing.MemoryCheckpoint` and
`MemoryTableSink` in memory, held to the same contract tests.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from streamproc.engine import PartialRow, ResultRow, WindowKey
from streamproc.sinks.session_commit import SessionCommit


@dataclass(frozen=True, slots=True)
class PartitionCommit:
    """The ledger entry of one partition's share of a micro-batch."""

    partition: int
    start_offset: int
    next_offset: int
    records: int
    aggregated: int
    late: int
    bad: int
    filtered: int
    max_event_ts_ms: int | None
    watermark_ms: int | None
    # Records of `bad` that the sink rejected and that went to the DLQ
    # instead, with the sink's error (FAULTS.md).
    dead_lettered: int = 0
    error: str | None = None
    # Digest of the last record of the span (`record_digest`): a restore
    # checks it against the topic, to tell a re-created topic apart.
    last_record: bytes | None = None
    # Min event time of the span's aggregated and late records (the progress
    # record's; the ledger does not keep it).
    min_event_ts_ms: int | None = None


@dataclass(frozen=True, slots=True)
class LateRow:
    """A late record bound for the separatestream side table."""

    partition: int
    offset: int
    event_ts_ms: int | None
    watermark_ms: int | None
    reason: str
    record: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class DeadLetterRow:
    """A record bound for the dead-letter table (dlqType postgresql), with why.

    The checkpoint adds the query, the source topic, the batch id (of the
    ledger row of `partition` in the same commit) and the time.
    """

    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    reason: str
    # The sink's error, for a record the sink refused (None otherwise).
    error: str | None = None
    # Where it was read when that is not the query's topic (a batch job's file:
    # its path and head digest); None: the topic.
    source: str | None = None


@dataclass(frozen=True, slots=True)
class ProgressNote:
    """What the runtime knows of a batch before its transaction, for its progress-table row.

    Attributes:
        pipeline_id: The config's pipelineId.
        batch_number: The worker's number of the batch (its log lines' batchId);
            None for a part of a batch split up to isolate a refused record.
        worker: Who committed it (host:pid).
        input_rows_per_second: Records over the wall time since the previous
            batch's fetch began (None for a worker's first batch).
        duration_ms: Wall milliseconds of the phases before the transaction
            (progress phases: fetch, decode, engine, checkpoint).
        breaker_state: The sink circuit breaker's state when this attempt was let
            through: closed, or half_open for the probe after an outage.
        breaker_opened: Times this worker's breaker opened since it started.
        retries: Attempts at this batch's transaction before this one.
        source_metrics: The source's own counts for the batch (Spark's per-source metrics).
    """

    pipeline_id: str = ""
    batch_number: int | None = None
    worker: str = ""
    input_rows_per_second: float | None = None
    duration_ms: Mapping[str, float] = field(default_factory=dict)
    breaker_state: str = "closed"
    breaker_opened: int = 0
    retries: int = 0
    source_metrics: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class CommitBatch:
    """Everything one micro-batch makes durable in one transaction."""

    partitions: tuple[PartitionCommit, ...]
    partials: Mapping[int, Sequence[PartialRow]]
    evicted: Mapping[int, Sequence[WindowKey]]
    # Merged rows computed locally (valid only when this worker owns every
    # partition); None means "merge from the stored partials".
    local_rows: Sequence[ResultRow] | None
    late_rows: Sequence[LateRow] = ()
    # Rows of the dead-letter table (dlqType postgresql): written in the same
    # transaction, so they are exactly-once like the results.
    dead_letter_rows: Sequence[DeadLetterRow] = ()
    topic_partitions: int = 1
    idle_timeout_ms: int | None = None
    # The worker owns every partition and closes windows itself: `local_rows`
    # hold the rows of windows closing now (append mode too), `partials` leave
    # closed windows out, and the checkpoint only drops their stored states,
    # after checking that its W is the engine's `watermark_ms`.
    closes_locally: bool = False
    watermark_ms: int | None = None
    # The checkpoint's own encoding of what it writes, made by `Checkpoint.stage`
    # before the transaction (None: the commit encodes).
    staged: Any = None
    # For the batch's row in the progress table (None: a row with what the
    # checkpoint knows itself).
    progress: ProgressNote | None = None
    # Windowed stateTimeout, when the worker closes windows itself: the (key,
    # window)s its engine expired (their rows, in append mode, are among
    # `local_rows`); the checkpoint replaces every partition's partial of each
    # by a tombstone. Otherwise the checkpoint finds idle ones itself.
    expired: Sequence[WindowKey] = ()
    # Update and complete mode, when the worker does not own every partition: the
    # touched (key, window)s merged over the partitions it owns. A row not in the
    # table yet has no other contribution, so this is its value (`claim_rows`);
    # None: the checkpoint merges every row from every partition's states.
    own_rows: Sequence[ResultRow] | None = None
    # What the batch's rows were merged from, when that is every partition's
    # state (`local_rows` of a worker owning every partition, or windows it closes
    # itself): the committed position of each partition of the topic as this
    # worker knew it (None: no position yet). The batch is stale when any of them
    # moved, carried by the batch or not (`stale_partitions`). None: the rows
    # depend only on the partitions the batch carries.
    basis: Mapping[int, int | None] | None = None
    # Session windows: deleted result rows and closed sessions (`session_commit`);
    # their state-row upserts are `partials`, their deletes `evicted`.
    sessions: SessionCommit | None = None


@dataclass(frozen=True, slots=True)
class CommitOutcome:
    """What a commit did: stale partitions (nothing written) or the rows written.

    `timings` are the commit's phases in wall seconds (see runtime/timing.py):
    lock_wait, states, sink, ledger, closing, commit, and lock (time held).
    """

    stale: tuple[int, ...] = ()
    result_rows: int = 0
    closed_windows: int = 0
    global_watermark_ms: int | None = None
    timings: Mapping[str, float] = field(default_factory=dict)
    #: State rows of the query in the checkpoint after the commit, every
    #: partition's (None: not counted, e.g. a stale outcome).
    state_rows_total: int | None = None
    #: The progress note the committed attempt carried (set by the runtime's retry loop).
    progress: ProgressNote | None = None
    #: Round trips to the checkpoint's server (`sinks/round_trips.py`); 0: not counted.
    round_trips: int = 0


@dataclass(frozen=True, slots=True)
class PartitionCheckpoint:
    """What the checkpoint says about one partition, to resume it exactly."""

    partition: int
    next_offset: int | None
    max_event_ts_ms: int | None
    partials: tuple[PartialRow, ...] = field(default_factory=tuple)
    last_record: bytes | None = None
    #: Session windows: (key, start, end) of closed sessions of any partition kept as
    #: fences (`SessionEngine.restore(closed=...)`); not among `partials`.
    fences: tuple[WindowKey, ...] = ()


@dataclass(frozen=True, slots=True)
class Watermarks:
    """The committed watermarks of a query (event time).

    Attributes:
        partitions: wm(p) of every partition with a position (None before any data).
        global_ms: The last committed global watermark W; it never goes back.
    """

    partitions: Mapping[int, int | None]
    global_ms: int | None


@dataclass(frozen=True, slots=True)
class QueryIdentity:
    """Who a checkpoint belongs to: the query, its definition and the tables it owns."""

    query: str
    topic: str
    definition: Mapping[str, Any]
    result_table: str | None = None
    #: Side tables the query writes rows to (separatestream, dlqType postgresql).
    late_table: str | None = None
    dlq_table: str | None = None
    #: Options that may change between runs but change which records are aggregated
    #: (name -> value as the config says it): a change is said at start.
    settings: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class BoundedRun:
    """A bounded run (once, availablenow) of a query, shared by all its workers.

    Attributes:
        run_id: Numbers the query's runs.
        ends: End offset (exclusive) of every partition, taken once when the run began.
        joined: True when this worker joined a run another worker began.
    """

    run_id: int
    ends: Mapping[int, int]
    joined: bool = False


class CheckpointError(RuntimeError):
    """The checkpoint cannot serve this run: the query stops with this one-line message.

    Never retried; the message says what was found and what to do.
    """


class CheckpointConflictError(CheckpointError):
    """The stored checkpoint does not fit this run.

    Raised for a changed query definition, a result table another query owns,
    a checkpoint of an older layout, a ledger that does not match the
    positions, or a topic whose offsets went back.
    """


class QueryRunningError(CheckpointConflictError):
    """A command that must not run beside a live worker found one (the message names it)."""


class ClosingWindowsError(Exception):
    """Writing the rows of windows that closed failed (append mode); `cause` says how.

    Such a row sums up many records of many batches, so a refusal of it is
    never one record's fault: it is not isolated record by record.
    """

    def __init__(self, cause: Exception, windows: int) -> None:
        super().__init__(str(cause))
        self.cause = cause
        self.windows = windows


def reset_under_worker(query: str) -> str:
    """The line a worker stops with when its checkpoint was reset or re-made while it ran."""
    return (
        f"query {query} was reset while this worker ran (its checkpoint is gone or was made "
        "again by another worker): nothing of the batch was written; start the worker again "
        "to run on the checkpoint as it is now"
    )


#: What a conflict message offers as the two ways on.
RESET_HINT = (
    "start it under a new queryName, or drop its checkpoint with `streamproc reset CONFIG` "
    "(add --drop-results to drop its result and late tables too)"
)


@dataclass(frozen=True, slots=True)
class OutgoingMessage:
    """One message to produce (a dead letter, or a result row on a topic)."""

    topic: str
    key: bytes | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...] = ()


def batch_id(query: str, topic: str, partition: int, start_offset: int, next_offset: int) -> str:
    """A deterministic batch id: a replay of the same span gets the same id."""
    return f"{query}/{topic}/{partition}/{start_offset}-{next_offset}"


def batch_ids(query: str, topic: str, partitions: Iterable[PartitionCommit]) -> dict[int, str]:
    """The batch id of each partition's share of a commit (its ledger row's)."""
    return {
        p.partition: batch_id(query, topic, p.partition, p.start_offset, p.next_offset)
        for p in partitions
    }


class MessageWriter(Protocol):
    """Delivers messages (dead letters) and returns once each one is acknowledged."""

    async def start(self) -> None:
        """Connect."""
        ...

    async def stop(self) -> None:
        """Flush and close."""
        ...

    async def send_all(self, messages: Sequence[OutgoingMessage]) -> None:
        """Deliver every message; raise when any one cannot be delivered."""
        ...


class ResultSink(Protocol):
    """Where result rows go: a table written inside the checkpoint's transaction, or a topic.

    `tx` is the checkpoint's open transaction (an asyncpg connection for
    PostgreSQL; None in memory); a sink outside the checkpoint's database
    ignores it and must have delivered the rows when `write` returns.
    """

    async def start(self) -> None:
        """Open connections of the sink's own (a producer); a table needs none."""
        ...

    async def stop(self) -> None:
        """Close what `start` opened."""
        ...

    async def prepare(self, tx: Any) -> None:
        """Create the table when missing, refuse an incompatible one (inside `tx`)."""
        ...

    async def prepare_connection(self, conn: Any) -> None:
        """Set up a new connection of the checkpoint's (e.g. a staging table)."""
        ...

    def check_keys(self, keys: Iterable[Sequence[Any]]) -> None:
        """Raise ValueError for a group key the sink could never store (checked per batch)."""
        ...

    def encode(self, rows: Sequence[ResultRow]) -> Any:
        """Rows as `write` sends them, encoded ahead of the transaction (None: not needed).

        Pure CPU work, done on the thread batches are prepared on.
        """
        ...

    async def write(
        self, tx: Any, rows: Sequence[ResultRow], *, insert_only: bool, encoded: Any = None
    ) -> int:
        """Write rows: upsert them, or (closing append-mode windows) insert them once.

        Args:
            encoded: What `encode(rows)` returned, if it was called.

        Returns:
            The number of rows written.
        """
        ...


class Checkpoint(Protocol):
    """The exactly-once checkpoint of one query: ledger, partials, results, side tables."""

    async def open(self) -> None:
        """Connect, create missing tables, check the result sink's table.

        Raises:
            CheckpointConflictError: the stored checkpoint belongs to another
                definition, the result table to another query, or the layout
                is an older one.
        """
        ...

    async def close(self) -> None:
        """Release connections."""
        ...

    async def load_partition(self, partition: int) -> PartitionCheckpoint:
        """A partition's last committed position and its open partials."""
        ...

    async def watermarks(self) -> Watermarks:
        """The committed watermarks: every partition's and the global one."""
        ...

    def stage(self, batch: CommitBatch) -> CommitBatch:
        """The batch with what its transaction writes already encoded (`CommitBatch.staged`).

        Pure CPU work, done on the thread batches are prepared on, so the
        transaction (and the query's lock) lasts only as long as the I/O. A
        value that cannot be encoded is left for `commit` to refuse.
        """
        ...

    async def commit(self, batch: CommitBatch, *, dry_run: bool = False) -> CommitOutcome:
        """Make one micro-batch durable in one transaction, or report it stale.

        With dry_run nothing is kept: the outcome (or the error raised) says
        what the commit would do.
        """
        ...

    async def begin_run(
        self, trigger: str, take_ends: Callable[[], Awaitable[Mapping[int, int]]]
    ) -> BoundedRun:
        """Join the query's bounded run in progress, or begin one with ends from take_ends.

        This worker stays a member of the run until `finish_run` or `close`;
        a run nobody is a member of any more is over, and the next bounded
        run of the query takes new end offsets.
        """
        ...

    async def other_workers(self) -> int:
        """How many other workers of the query run now (hold a claim on it)."""
        ...

    async def committed_offsets(self) -> dict[int, int]:
        """The next offset of every partition with a position (whoever committed it)."""
        ...

    async def finish_run(self, run: BoundedRun) -> None:
        """Mark a bounded run done (every partition reached its end)."""
        ...

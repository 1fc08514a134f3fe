"""The sink ports: the exactly-once `Checkpoint` and the `ResultSink` it writes through.

A micro-batch becomes durable in one `Checkpoint.commit`: the ledger check
(is the batch still the next one of each partition?), the partial
aggregates, the result rows (through the query's `ResultSink`), the late
side-table rows and the ledger rows, all or nothing (DESIGN.md section 3).

Implementations: `PostgresCheckpoint` with `PostgresTableSink` or
`KafkaResultSink`; `streamproc.testing.MemoryCheckpoint` and
`MemoryTableSink` in memory, held to the same contract tests.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from streamproc.engine import PartialRow, ResultRow, WindowKey


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
class CommitBatch:
    """Everything one micro-batch makes durable in one transaction."""

    partitions: tuple[PartitionCommit, ...]
    partials: Mapping[int, Sequence[PartialRow]]
    evicted: Mapping[int, Sequence[WindowKey]]
    # Merged rows computed locally (valid only when this worker owns every
    # partition); None means "merge from the stored partials".
    local_rows: Sequence[ResultRow] | None
    late_rows: Sequence[LateRow] = ()
    topic_partitions: int = 1
    idle_timeout_ms: int | None = None


@dataclass(frozen=True, slots=True)
class CommitOutcome:
    """What a commit did: stale partitions (nothing written) or the rows written."""

    stale: tuple[int, ...] = ()
    result_rows: int = 0
    closed_windows: int = 0
    global_watermark_ms: int | None = None


@dataclass(frozen=True, slots=True)
class PartitionCheckpoint:
    """What the checkpoint says about one partition, to resume it exactly."""

    partition: int
    next_offset: int | None
    max_event_ts_ms: int | None
    partials: tuple[PartialRow, ...] = field(default_factory=tuple)


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

    async def write(self, tx: Any, rows: Sequence[ResultRow], *, insert_only: bool) -> int:
        """Write rows: upsert them, or (closing append-mode windows) insert them once.

        Returns:
            The number of rows written.
        """
        ...


class Checkpoint(Protocol):
    """The exactly-once checkpoint of one query: ledger, partials, results, late rows."""

    async def open(self) -> None:
        """Connect, create missing tables, check the result sink's table."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...

    async def load_partition(self, partition: int) -> PartitionCheckpoint:
        """A partition's last committed position and its open partials."""
        ...

    async def watermarks(self) -> dict[int, int | None]:
        """The last committed watermark of every partition with a ledger row."""
        ...

    async def commit(self, batch: CommitBatch) -> CommitOutcome:
        """Make one micro-batch durable in one transaction, or report it stale."""
        ...

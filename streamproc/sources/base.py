"""The `Source` port: what the runtime needs of a partitioned, replayable input.

The runtime reads record batches (`fetch`), never one record at a time, and
positions each partition itself (`seek`): the checkpoint's ledger, not the
source, decides where a partition resumes. Partition ownership comes from a
group protocol; changes are reported to a `PartitionListener` and awaited
before any record of a newly assigned partition is fetched.

Offsets are integers; what one means is the source's (`positions`, see
`position.py`): a Kafka offset is itself, a file source's is a file and a byte.

`KafkaSource` (aiokafka, a consumer group) and `FileSource` implement it;
`streamproc.testing.MemorySource` implements it in memory with scripted
assignments, for component tests.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from streamproc.sources.position import PositionFormat


@dataclass(frozen=True, slots=True)
class RawRecord:
    """A record as fetched: where it came from and its undecoded bytes.

    `timestamp` is the record's Kafka timestamp (epoch ms, wall time when it
    was written; 0 or less when it has none). The Kafka source hands over
    aiokafka's own records, which have these attributes too (no copy per
    record); other sources build RawRecords.
    """

    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: int


class SourceTopicMissingError(RuntimeError):
    """The source topic does not exist (streamproc never creates a source topic)."""


class SourceConflictError(RuntimeError):
    """The source cannot be read as the checkpoint expects (one line saying what to do).

    A file that shrank or was replaced under a query's feet, or a second
    worker on a file source.
    """


def record_digest(record: RawRecord) -> bytes:
    """16 bytes that tell one record from another at the same offset (key, value, time).

    A checkpoint keeps the digest of the last record it committed per
    partition; when the record at that offset differs on restore, the topic
    was re-created (or rewritten) and resuming would skip or mix records.
    """
    h = hashlib.blake2b(digest_size=16)
    for part in (record.key, record.value):
        h.update(b"\x00" if part is None else b"\x01" + len(part).to_bytes(8, "big") + part)
    h.update(record.timestamp.to_bytes(8, "big", signed=True))
    return h.digest()


@dataclass(frozen=True, slots=True)
class PartitionInfo:
    """What the source holds for one partition right now.

    Attributes:
        log_start: The first offset still stored (earlier ones were deleted).
        end: The offset the next record will get (exact, not a listed estimate).
        record: The record at the offset asked about, or None when it is not stored.
    """

    log_start: int
    end: int
    record: RawRecord | None = None


class PartitionListener(Protocol):
    """Told about assignment changes; awaited before fetching resumes."""

    async def on_assigned(self, partitions: set[int]) -> None:
        """Partitions this member owns from now on (called even when empty)."""
        ...

    async def on_revoked(self, partitions: set[int]) -> None:
        """Partitions this member no longer owns."""
        ...


class Source(Protocol):
    """One member of a group reading one topic, with manual positions."""

    @property
    def topic(self) -> str:
        """The topic read."""
        ...

    async def start(self, listener: PartitionListener, *, early: bool = False) -> None:
        """Join the group; assignment changes go to listener.

        With early, read every partition at once, outside the group, and join it
        only when `join_group` is called; the group's first assignment then takes
        over (every partition revoked, its share assigned).
        """
        ...

    async def join_group(self) -> None:
        """Join the group after an early start (nothing when already in it)."""
        ...

    async def stop(self) -> None:
        """Leave the group and release the connection."""
        ...

    def assignment(self) -> set[int]:
        """The partitions this member owns now."""
        ...

    async def partition_count(self) -> int:
        """How many partitions the topic has."""
        ...

    def seek(self, partition: int, offset: int) -> None:
        """Continue fetching partition at offset.

        A paused partition stays paused, as in Kafka: whoever paused it resumes it.
        """
        ...

    async def seek_to_start(self, partition: int) -> None:
        """Position a partition that has no checkpoint (startingOffsets)."""
        ...

    async def position(self, partition: int) -> int:
        """The offset of the next record to fetch from partition."""
        ...

    def positions(self) -> PositionFormat:
        """How this source's offsets read as positions (a Kafka offset; a file and a byte).

        For what people read (status, log lines); the offsets stored and sought
        stay integers.
        """
        ...

    async def describe(self, offsets: Mapping[int, int | None]) -> dict[int, PartitionInfo]:
        """Log start, exact end, and the record at the given offset, per partition.

        Works for any partition of the topic, owned or not (it does not move
        the group member's positions). An offset of None asks for no record.
        """
        ...

    def seen_ends(self) -> dict[int, int]:
        """End offsets of owned partitions as last seen by the client, without a request.

        For consumer lag; a partition whose end is not known yet is absent.
        """
        ...

    def pause(self, partitions: set[int]) -> None:
        """Stop fetching these owned partitions (until `resume`)."""
        ...

    def resume(self, partitions: set[int]) -> None:
        """Fetch these owned partitions again (a no-op for those not paused)."""
        ...

    async def fetch(self, max_records: int, timeout_ms: int) -> list[RawRecord]:
        """Up to max_records records of owned partitions, in offset order per partition.

        Waits at most timeout_ms (wall time) when nothing is buffered.
        """
        ...

    async def commit(self, offsets: Mapping[int, int]) -> None:
        """Record group offsets (informational: the checkpoint decides)."""
        ...


@runtime_checkable
class TriggerAware(Protocol):
    """A source whose fetches are limited per micro-batch (the file source's maxFilesPerTrigger)."""

    def trigger_started(self) -> None:
        """A new micro-batch begins collecting: per-trigger limits start over."""
        ...


@runtime_checkable
class UnreadCounting(Protocol):
    """A source that can lose input it never read (a file deleted or truncated unread)."""

    def unread_counts(self) -> tuple[int, int]:
        """Files, and their bytes, found gone or truncated with bytes unread since the start."""
        ...

"""Kafka source: a consumer-group member that fetches record batches.

The pipeline's hot loop calls `fetch()` (aiokafka `getmany`), never a
per-record stream. Partition assignment changes are reported to the owner
through `PartitionListener`, awaited before any record of a newly assigned
partition is fetched, so the owner can restore state and seek first.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition

from streamproc.sources.base import PartitionListener, RawRecord

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class KafkaSourceConfig:
    """How to reach and read the source topic."""

    bootstrap: str
    topic: str
    group_id: str
    starting_offsets: str = "latest"
    client_params: Mapping[str, Any] = field(default_factory=dict)
    session_timeout_ms: int = 10_000
    heartbeat_interval_ms: int = 1_000
    fetch_max_bytes: int = 52_428_800
    max_partition_fetch_bytes: int = 4 * 1_048_576


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, listener: PartitionListener) -> None:
        self._listener = listener

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        if revoked:
            await self._listener.on_revoked({tp.partition for tp in revoked})

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        # Called even when empty: a member with no partitions has still joined.
        await self._listener.on_assigned({tp.partition for tp in assigned})


class KafkaSource:
    """A consumer-group member of one topic with manual offset control (a `Source`)."""

    def __init__(self, config: KafkaSourceConfig) -> None:
        self._config = config
        self._consumer: Any = None

    @property
    def topic(self) -> str:
        """The topic read."""
        return self._config.topic

    async def start(self, listener: PartitionListener) -> None:
        """Join the group; assignment is reported to the listener."""
        cfg = self._config
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=cfg.bootstrap,
            group_id=cfg.group_id,
            enable_auto_commit=False,
            # The ledger decides where a partition resumes; this only matters
            # for a partition with neither a ledger row nor a committed offset.
            auto_offset_reset=cfg.starting_offsets,
            session_timeout_ms=cfg.session_timeout_ms,
            heartbeat_interval_ms=cfg.heartbeat_interval_ms,
            fetch_max_bytes=cfg.fetch_max_bytes,
            max_partition_fetch_bytes=cfg.max_partition_fetch_bytes,
            isolation_level="read_uncommitted",
            # A short broker-side wait keeps continuous and processingtime
            # triggers from missing records that arrive during a long poll.
            fetch_max_wait_ms=100,
            **dict(cfg.client_params),
        )
        await self._consumer.start()
        self._consumer.subscribe([cfg.topic], listener=_Rebalance(listener))

    async def stop(self) -> None:
        """Leave the group and close the connection."""
        if self._consumer is not None:
            _leave_group_even_in_generation_zero(self._consumer)
            await self._consumer.stop()
            self._consumer = None

    def assignment(self) -> set[int]:
        """The partitions of the topic this member owns now."""
        return {tp.partition for tp in self._consumer.assignment()}

    async def partition_count(self) -> int:
        """How many partitions the topic has (from cluster metadata)."""
        parts = self._consumer.partitions_for_topic(self._config.topic)
        if not parts:
            await self._consumer._client.force_metadata_update()
            parts = self._consumer.partitions_for_topic(self._config.topic)
        return len(parts or ())

    def seek(self, partition: int, offset: int) -> None:
        """Continue fetching partition at offset."""
        self._consumer.seek(TopicPartition(self._config.topic, partition), offset)

    async def seek_to_start(self, partition: int) -> None:
        """Position a partition without a checkpoint per startingOffsets."""
        tp = TopicPartition(self._config.topic, partition)
        if self._config.starting_offsets == "earliest":
            await self._consumer.seek_to_beginning(tp)
        else:
            await self._consumer.seek_to_end(tp)

    async def position(self, partition: int) -> int:
        """The offset of the next record to fetch from partition."""
        pos: int = await self._consumer.position(TopicPartition(self._config.topic, partition))
        return pos

    async def end_offsets(self, partitions: set[int]) -> dict[int, int]:
        """Log-end offsets as ListOffsets reports them (may undercount on Tansu)."""
        tps = [TopicPartition(self._config.topic, p) for p in partitions]
        ends = await self._consumer.end_offsets(tps)
        return {tp.partition: off for tp, off in ends.items()}

    def highwater(self, partition: int) -> int | None:
        """The high watermark seen in the last fetch response of partition."""
        hw: int | None = self._consumer.highwater(TopicPartition(self._config.topic, partition))
        return hw

    def pause(self, partitions: set[int]) -> None:
        """Stop fetching these partitions (bounded runs that reached their end)."""
        self._consumer.pause(*(TopicPartition(self._config.topic, p) for p in partitions))

    async def fetch(self, max_records: int, timeout_ms: int) -> list[RawRecord]:
        """Fetch up to max_records records from the owned partitions.

        Waits at most timeout_ms when nothing is buffered.
        """
        batches = await self._consumer.getmany(timeout_ms=timeout_ms, max_records=max_records)
        out: list[RawRecord] = []
        for tp, records in batches.items():
            p = tp.partition
            out.extend(RawRecord(p, r.offset, r.key, r.value, r.timestamp) for r in records)
        return out

    async def commit(self, offsets: Mapping[int, int]) -> None:
        """Commit consumer-group offsets (informational: the ledger is the truth)."""
        if offsets:
            await self._consumer.commit(
                {TopicPartition(self._config.topic, p): o for p, o in offsets.items()}
            )


def _leave_group_even_in_generation_zero(consumer: Any) -> None:
    """Make aiokafka send LeaveGroup when the group's generation is 0.

    aiokafka only leaves a group whose generation is > 0 (Apache Kafka numbers
    generations from 1). The local broker numbers a group's first generation
    0, so without this a stopped member stays in the group until its session
    times out, and the next worker waits that long for its partitions.
    """
    coordinator = getattr(consumer, "_coordinator", None)
    if coordinator is not None and getattr(coordinator, "generation", None) == 0:
        coordinator.generation = 1

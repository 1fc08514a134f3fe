"""Kafka source: a consumer-group member that fetches record batches.

The pipeline's hot loop calls `fetch()` (aiokafka `getmany`), never a
per-record stream. Partition assignment changes are reported to the owner
through `PartitionListener`, awaited before any record of a newly assigned
partition is fetched, so the owner can restore state and seek first.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import IllegalStateError

from streamproc.sources.alignment import aligned_counts
from streamproc.sources.base import (
    PartitionInfo,
    PartitionListener,
    RawRecord,
    SourceTopicMissingError,
)
from streamproc.sources.kafka_errors import consumer_port_errors
from streamproc.sources.kafka_leave import close_abandoned, leave_group_even_in_generation_zero
from streamproc.sources.kafka_probe import describe_partitions
from streamproc.sources.position import OFFSET_POSITIONS, OffsetPositions

log = logging.getLogger(__name__)

#: Seconds `KafkaSource.stop` waits to leave the group cleanly.
STOP_TIMEOUT_S = 10.0
#: How long a fetch waits for a partition known to have records on the broker.
LAGGING_WAIT_MS = 100
#: While the group rebalances, a fetch returns nothing after at most this long.
REBALANCE_POLL_MS = 200
#: Seconds a getmany may take beyond its own timeout (a rebalance under it) before
#: the fetch gives up on it and returns what it has.
GETMANY_GRACE_S = 1.0


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
    # How often topic metadata is refreshed: partitions added to the topic are
    # picked up (the group rebalances) within about this long. Kafka's default
    # is 5 minutes; Spark's Kafka source and Flink's discovery use seconds.
    metadata_max_age_ms: int = 5_000
    # How long a fetch waits for a partition known to hold records (position
    # below the high watermark) that has none buffered yet, so that a batch
    # takes every partition level in time. 0 for latency-first triggers
    # (continuous), as Kafka Streams' max.task.idle.ms = 0.
    lagging_wait_ms: int = LAGGING_WAIT_MS
    # The longest the broker holds a fetch request open when it has no records.
    fetch_max_wait_ms: int = 100


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, source: KafkaSource, listener: PartitionListener) -> None:
        self._source = source
        self._listener = listener

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        if self._source.stopping:
            return  # leaving: nothing more is processed or committed
        self._source.forget({tp.partition for tp in revoked})
        if revoked:
            await self._listener.on_revoked({tp.partition for tp in revoked})

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        if self._source.stopping:
            # A join still in progress when the run ended completes while the
            # consumer leaves: nothing is to be restored any more.
            return
        partitions = {tp.partition for tp in assigned}
        # The group's first answer ends an early start: from here on the group decides.
        if await self._source.take_over_early_start(partitions, self._listener):
            return
        # Called even when empty: a member with no partitions has still joined.
        await self._listener.on_assigned(partitions)


class KafkaSource:
    """A consumer-group member of one topic with manual offset control (a `Source`)."""

    def __init__(self, config: KafkaSourceConfig) -> None:
        self._config = config
        self._consumer: Any = None
        # A second consumer, outside the group, for `describe` (log start, exact
        # ends, the record at an offset) without moving the member's positions.
        self._probe: Any = None
        # An early start: a consumer outside the group reading every partition
        # until the group's first assignment arrives (see `start`).
        self._early: Any = None
        # Early readers the group's answer took over from, to stop (`_stop_retired`).
        self._retired: list[Any] = []
        #: True once stop() began: rebalance callbacks that still arrive are ignored.
        self.stopping = False
        # The group subscription `join_group` makes after an early start.
        self._join: _Rebalance | None = None
        # Records fetched but not handed out yet, per partition, in offset
        # order (see `fetch`): the position of a partition is its first one.
        self._buffered: dict[int, list[Any]] = {}

    @property
    def topic(self) -> str:
        """The topic read."""
        return self._config.topic

    async def start(self, listener: PartitionListener, *, early: bool = False) -> None:
        """Join the group; assignment is reported to the listener.

        With early, the source reads every partition at once, outside the
        group, and joins it only when `join_group` is called: a bounded run that
        begins alone starts this way, and joins once another worker of the query
        runs. A join waits seconds before the first assignment (Kafka's initial
        rebalance delay, half the session timeout on the local broker), and a
        member that stops with its join pending makes the group wait for it
        until its session expires; a run one worker finishes alone never joins.
        The group's first assignment ends the early start (every partition
        revoked, the group's share assigned). Reading outside the group is safe:
        were another member to read a partition meanwhile, the checkpoint's
        position check lets only one of their batches commit.
        """
        with consumer_port_errors():
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
                fetch_max_wait_ms=cfg.fetch_max_wait_ms,
                metadata_max_age_ms=cfg.metadata_max_age_ms,
                **dict(cfg.client_params),
            )
            await self._consumer.start()
            await self.check_topic_exists(self._consumer)
            if early:
                self._early = self._new_consumer(group=False)
                await self._early.start()
                count = await self.partition_count()
                self._early.assign([TopicPartition(cfg.topic, p) for p in range(count)])
                await listener.on_assigned(set(range(count)))
                self._join = _Rebalance(self, listener)
                return
            self._consumer.subscribe([cfg.topic], listener=_Rebalance(self, listener))

    async def join_group(self) -> None:
        """Join the group after an early start (nothing when already in it)."""
        join, self._join = self._join, None
        if join is not None and self._consumer is not None:
            self._consumer.subscribe([self._config.topic], listener=join)

    async def take_over_early_start(self, assigned: set[int], listener: PartitionListener) -> bool:
        """Hand over from the early reader to the group's first assignment.

        The partitions the group gives this member go on from where the early
        reader stands, state and all (nothing is restored again); the others
        are revoked; any the early reader did not have are assigned. Returns
        False when there was no early start (the caller reports the assignment).

        The group's consumer takes the early reader's positions before the
        listener hears of the change: a revocation restores the kept partitions
        from the checkpoint and seeks them there, and that seek must be the last
        word (the early reader may stand past records never committed).
        """
        early, self._early = self._early, None
        if early is None:
            return False
        topic = self._config.topic
        try:
            had = {tp.partition for tp in early.assignment()}
            paused = {tp.partition for tp in early.paused()}
            positions = {p: await self._position_in(early, p) for p in had & assigned}
            self._buffered.clear()  # the group's consumer fetches them again
            for p, offset in positions.items():
                self._consumer.seek(TopicPartition(topic, p), offset)
            self.pause((had & assigned) & paused)
            if had - assigned:
                await listener.on_revoked(had - assigned)
            if assigned - had:
                await listener.on_assigned(assigned - had)
        finally:
            # Stopped by the next fetch, not here: a fetch in flight may still call it
            # (aiokafka raises ConsumerStoppedError on a stopped consumer).
            self._retired.append(early)
        return True

    async def _stop_retired(self) -> None:
        """Stop the early reader once no fetch can be using it any more."""
        while self._retired:
            await self._retired.pop().stop()

    def _new_consumer(self, *, group: bool, offset_reset: str | None = None) -> Any:
        """A consumer of the topic: the group member, or one outside the group."""
        cfg = self._config
        return AIOKafkaConsumer(
            bootstrap_servers=cfg.bootstrap,
            group_id=cfg.group_id if group else None,
            enable_auto_commit=False,
            auto_offset_reset=offset_reset or cfg.starting_offsets,
            fetch_max_bytes=cfg.fetch_max_bytes,
            max_partition_fetch_bytes=cfg.max_partition_fetch_bytes,
            isolation_level="read_uncommitted",
            fetch_max_wait_ms=cfg.fetch_max_wait_ms,
            metadata_max_age_ms=cfg.metadata_max_age_ms,
            **dict(cfg.client_params),
        )

    @property
    def _reader(self) -> Any:
        """The consumer records are read from: the early one, else the group member."""
        return self._early if self._early is not None else self._consumer

    async def check_topic_exists(self, consumer: Any) -> None:
        """Refuse a topic the cluster does not have, before anything could auto-create it.

        A subscription asks for the topic's metadata with auto-creation
        allowed, and a broker with auto.create.topics.enable would then make
        an empty topic: the run would end with 0 records and no word. Listing
        the topics creates nothing.
        """
        topics = await consumer.topics()  # all topics' metadata: creates nothing
        if self._config.topic not in topics:
            raise SourceTopicMissingError(
                f"source topic {self._config.topic!r} does not exist on "
                f"{self._config.bootstrap}; create it (streamproc never creates a source "
                "topic) or correct extract.connectionParams.subscribe"
            )

    async def stop(self) -> None:
        """Leave the group and close the connections (waiting at most STOP_TIMEOUT_S).

        aiokafka lets a join in progress finish before it leaves the group, and
        a broker may hold a JoinGroup for the group's whole rebalance timeout;
        a worker that is done must not hang on that. Past the timeout the
        connections are closed anyway: the broker drops the member when its
        session expires, as after a crash.
        """
        self.stopping = True
        if self._consumer is not None:
            consumer, self._consumer = self._consumer, None
            leave_group_even_in_generation_zero(consumer)
            try:
                await asyncio.wait_for(consumer.stop(), STOP_TIMEOUT_S)
            except TimeoutError:
                log.warning(
                    "leaving consumer group %s took over %ss (it is rebalancing); closing the "
                    "connection, the broker drops this member when its session expires",
                    self._config.group_id,
                    STOP_TIMEOUT_S,
                )
                await close_abandoned(consumer)
        for name in ("_probe", "_early"):
            consumer = getattr(self, name)
            if consumer is not None:
                setattr(self, name, None)
                await consumer.stop()
        await self._stop_retired()

    def assignment(self) -> set[int]:
        """The partitions of the topic this member owns now."""
        reader = self._reader
        if reader is None:
            return set()  # not in the group (yet, or any more)
        return {tp.partition for tp in reader.assignment()}

    def seen_ends(self) -> dict[int, int]:
        """End offsets of owned partitions as the last fetch responses gave them (no request).

        The high watermark of a fetch response, so right on brokers whose
        ListOffsets undercounts (OPERATING.md, "The local stack"); absent for a
        partition not fetched yet.
        """
        reader = self._reader
        if reader is None:
            return {}
        ends = {}
        for tp in reader.assignment():
            high = reader.highwater(tp)
            if high is not None:
                ends[tp.partition] = high
        return ends

    async def partition_count(self) -> int:
        """How many partitions the topic has (cluster metadata; before joining too).

        Raises:
            SourceTopicMissingError: the topic does not exist.
        """
        with consumer_port_errors():
            consumer = self._consumer or await self._probe_consumer()
            parts = consumer.partitions_for_topic(self._config.topic)
            if not parts:
                await self.check_topic_exists(consumer)
                parts = consumer.partitions_for_topic(self._config.topic)
        return len(parts or ())

    def seek(self, partition: int, offset: int) -> None:
        """Continue fetching partition at offset."""
        self._buffered.pop(partition, None)
        with consumer_port_errors():
            self._reader.seek(TopicPartition(self._config.topic, partition), offset)

    async def seek_to_start(self, partition: int) -> None:
        """Position a partition without a checkpoint per startingOffsets."""
        self._buffered.pop(partition, None)
        tp = TopicPartition(self._config.topic, partition)
        with consumer_port_errors():
            if self._config.starting_offsets == "earliest":
                await self._reader.seek_to_beginning(tp)
            else:
                # The exact end (a fetch's high watermark), not ListOffsets: that can
                # answer the last record batch's base offset + 1 (OPERATING.md, "The
                # local stack"), and `latest` would then read records written before it.
                info = await self.describe({partition: None})
                self._reader.seek(tp, info[partition].end)

    async def position(self, partition: int) -> int:
        """The offset of the next record to fetch from partition."""
        with consumer_port_errors():
            return await self._position_in(self._reader, partition)

    def positions(self) -> OffsetPositions:
        """A Kafka offset is its own position."""
        return OFFSET_POSITIONS

    async def _position_in(self, consumer: Any, partition: int) -> int:
        buffered = self._buffered.get(partition)
        if buffered:
            return int(buffered[0].offset)
        pos: int = await consumer.position(TopicPartition(self._config.topic, partition))
        return pos

    def forget(self, partitions: set[int]) -> None:
        """Drop the records buffered for partitions this member no longer owns."""
        for p in partitions:
            self._buffered.pop(p, None)

    async def describe(self, offsets: Mapping[int, int | None]) -> dict[int, PartitionInfo]:
        """Log start, exact end, and the record at an offset, per partition (any partition).

        Read by a consumer outside the group (`kafka_probe.describe_partitions`), so
        the member's positions do not move.
        """
        with consumer_port_errors():
            probe = await self._probe_consumer()
            return await describe_partitions(probe, self._config.topic, offsets)

    async def _probe_consumer(self) -> Any:
        if self._probe is None:
            # Out of range must be an error here, never a silent reset.
            self._probe = self._new_consumer(group=False, offset_reset="none")
            await self._probe.start()
        return self._probe

    def pause(self, partitions: set[int]) -> None:
        """Stop fetching these partitions (bounded runs that reached their end)."""
        self._reader.pause(*(TopicPartition(self._config.topic, p) for p in partitions))

    def resume(self, partitions: set[int]) -> None:
        """Fetch these partitions again (sought back below a bounded run's end)."""
        self._reader.resume(*(TopicPartition(self._config.topic, p) for p in partitions))

    async def fetch(self, max_records: int, timeout_ms: int) -> list[RawRecord]:
        """Fetch up to max_records records of the owned partitions, level in time.

        Waits at most timeout_ms when nothing is buffered. Records are taken
        from the client into a buffer per partition, and handed out by Kafka
        timestamp (`aligned_counts`), so that a batch does not hold one
        partition far ahead of the others.
        """
        await self._stop_retired()
        reader = self._reader
        topic = self._config.topic
        if _rebalancing(reader):
            # Nothing is handed out while the group rebalances (aiokafka's getmany would
            # wait for the new assignment without a bound, and a broker may never answer
            # a join once the other members left): the loop gets its turn meanwhile.
            await asyncio.sleep(min(timeout_ms, REBALANCE_POLL_MS) / 1000)
            return []
        owned = {tp.partition for tp in reader.assignment() - reader.paused()}
        share = max(1, max_records // max(1, len(owned)))
        try:
            await self._top_up(reader, owned, share)
            empty = [p for p in owned if not self._buffered.get(p)]
            if empty and timeout_ms > 0 and len(empty) == len(owned):
                self._take(await _getmany(reader, timeout_ms=timeout_ms, max_records=share))
            # A partition with records on the broker but none here yet would
            # be left behind (its fetch response has not arrived): wait for it
            # a little, as Kafka Streams does for partitions of known lag.
            lagging = [
                TopicPartition(topic, p)
                for p in owned
                if not self._buffered.get(p) and await self._known_lag(reader, p)
            ]
            wait_ms = self._config.lagging_wait_ms
            if lagging and wait_ms > 0 and (len(lagging) < len(owned) or timeout_ms > 0):
                got = await _getmany(reader, *lagging, timeout_ms=wait_ms, max_records=share)
                self._take(got)
        except IllegalStateError:
            pass  # a partition was revoked meanwhile; `forget` dropped its records
        if reader is not self._reader:
            # The group's first answer took over from the early reader under this
            # fetch (`take_over_early_start`) and set the group's consumer at its
            # positions: what the early reader fetched since is fetched again there.
            self._buffered.clear()
            return []
        owned = {tp.partition for tp in reader.assignment() - reader.paused()}
        available = {p: self._buffered[p] for p in owned if self._buffered.get(p)}
        out: list[RawRecord] = []
        for p, n in sorted(aligned_counts(available, max_records).items()):
            records = available[p]
            # aiokafka's ConsumerRecords have RawRecord's attributes: no copy.
            out += records[:n]
            self._buffered[p] = records[n:]
        return out

    async def _top_up(self, reader: Any, owned: set[int], share: int) -> None:
        """Take what the client holds for partitions with nothing buffered here."""
        topic = self._config.topic
        for p in sorted(owned):
            if not self._buffered.get(p):
                tp = TopicPartition(topic, p)
                self._take(await _getmany(reader, tp, timeout_ms=0, max_records=share))

    def _take(self, got: Mapping[Any, Sequence[Any]]) -> None:
        for tp, records in got.items():
            if records:
                self._buffered.setdefault(tp.partition, []).extend(records)

    async def _known_lag(self, reader: Any, partition: int) -> bool:
        """True when the broker is known to hold records past the client's position."""
        tp = TopicPartition(self._config.topic, partition)
        if tp not in reader.assignment():
            return False
        high = reader.highwater(tp)
        try:
            return high is not None and await reader.position(tp) < high
        except (AssertionError, IllegalStateError):
            return False  # revoked meanwhile (aiokafka asserts the assignment)

    async def commit(self, offsets: Mapping[int, int]) -> None:
        """Commit consumer-group offsets (informational: the ledger is the truth)."""
        if offsets and self._early is None:  # outside the group there is nothing to commit
            with consumer_port_errors():
                await self._consumer.commit(
                    {TopicPartition(self._config.topic, p): o for p, o in offsets.items()}
                )


def _rebalancing(consumer: Any) -> bool:
    """True while a group member waits for its new assignment (no records to hand out)."""
    subscription = getattr(consumer, "_subscription", None)
    return bool(getattr(subscription, "reassignment_in_progress", False))


async def _getmany(consumer: Any, *partitions: Any, timeout_ms: int, max_records: int) -> Any:
    """aiokafka's getmany, bounded: it waits without a bound for a rebalance to finish."""
    try:
        return await asyncio.wait_for(
            consumer.getmany(*partitions, timeout_ms=timeout_ms, max_records=max_records),
            timeout_ms / 1000 + GETMANY_GRACE_S,
        )
    except TimeoutError:
        return {}

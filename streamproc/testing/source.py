"""An in-memory partitioned topic and consumer group: the `Source` port without a broker.

    topic = MemoryTopic("events", partitions=4)
    topic.produce_json(0, {"user_id": "u1", "event_time": 1000})
    group = MemoryGroup(topic)
    source = MemorySource(topic, group)          # one member; more share the partitions

Members of a `MemoryGroup` share the topic's partitions round-robin; a
member joining or leaving rebalances the group, calling every member's
listener (revoked first, then assigned) as a consumer group would. Tests
script rebalances at exact points with `MemoryGroup.assign` or with
`MemorySource.at_fetch`, which runs a step before a given fetch returns.

An early start (`start(listener, early=True)`) owns every partition at once,
outside the group, as `KafkaSource` does, and hands over to the group's first
answer that includes it (`MemoryGroup.rebalance` or `assign`): the partitions
it keeps go on as they are, the others are revoked, new ones assigned.
`MemoryGroup.hold(member)` keeps a member's join unanswered (the group's
generations leave it out, as a broker may) until `release(member)`.

As in Kafka, a paused partition stays paused when it is sought.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from streamproc.sources.base import PartitionInfo, PartitionListener, RawRecord
from streamproc.sources.position import OFFSET_POSITIONS, OffsetPositions


class MemoryTopic:
    """Records per partition, in offset order; offsets start at 0."""

    def __init__(self, name: str, partitions: int) -> None:
        self.name = name
        self._records: list[list[RawRecord]] = [[] for _ in range(partitions)]
        self._log_start = [0] * partitions
        self.arrived = asyncio.Event()
        self.exists = True

    @property
    def partitions(self) -> int:
        """How many partitions the topic has."""
        return len(self._records)

    def add_partitions(self, count: int) -> None:
        """Grow the topic (as Kafka's CreatePartitions does)."""
        self._records += [[] for _ in range(count)]
        self._log_start += [0] * count

    def recreate(self, partitions: int | None = None) -> None:
        """Delete the topic and create it again, empty (offsets start at 0 again)."""
        n = self.partitions if partitions is None else partitions
        self._records = [[] for _ in range(n)]
        self._log_start = [0] * n

    def delete_before(self, partition: int, offset: int) -> None:
        """Retention: records below offset are gone (the log starts at offset)."""
        self._log_start[partition] = max(self._log_start[partition], offset)

    def log_start(self, partition: int) -> int:
        """The first offset still stored."""
        return self._log_start[partition]

    def produce(
        self, partition: int, value: bytes | None, key: bytes | None = None, timestamp_ms: int = 0
    ) -> int:
        """Append a record to a partition; returns its offset."""
        records = self._records[partition]
        offset = len(records)
        records.append(RawRecord(partition, offset, key, value, timestamp_ms))
        self.arrived.set()
        return offset

    def produce_json(
        self,
        partition: int,
        record: Mapping[str, Any],
        key: bytes | None = None,
        timestamp_ms: int = 0,
    ) -> int:
        """Append a JSON record; returns its offset."""
        return self.produce(partition, json.dumps(record).encode(), key, timestamp_ms)

    def end_offset(self, partition: int) -> int:
        """The offset the next record of partition will get."""
        return len(self._records[partition])

    def read(self, partition: int, offset: int, max_records: int) -> list[RawRecord]:
        """Records of a partition from offset on (from the log start, if that is later)."""
        offset = max(offset, self._log_start[partition])
        return self._records[partition][offset : offset + max_records]


class MemoryGroup:
    """A consumer group of `MemorySource` members over one topic."""

    def __init__(self, topic: MemoryTopic) -> None:
        self.topic = topic
        self.members: list[MemorySource] = []
        self.committed: dict[int, int] = {}
        #: Members whose join the group does not answer yet (`hold`).
        self._held: list[MemorySource] = []

    def hold(self, member: MemorySource) -> None:
        """Leave member out of the group's answers until `release` (its join is pending)."""
        self._held.append(member)

    async def release(self, member: MemorySource) -> None:
        """Answer member's join: the group rebalances with it."""
        self._held.remove(member)
        await self.rebalance()

    def _answered(self) -> list[MemorySource]:
        return [m for m in self.members if m not in self._held]

    async def join(self, member: MemorySource) -> None:
        """Add a member and spread the partitions over every member."""
        self.members.append(member)
        await self.rebalance()

    async def leave(self, member: MemorySource) -> None:
        """Remove a member and give its partitions to the others."""
        if member in self._held:
            self._held.remove(member)
        if member in self.members:
            await member.revoke_all()
            self.members.remove(member)
            await self.rebalance()

    async def rebalance(self) -> None:
        """Round-robin assignment of every partition over the answered members."""
        members = self._answered()
        if not members:
            return
        plan: dict[int, set[int]] = {i: set() for i in range(len(members))}
        for p in range(self.topic.partitions):
            plan[p % len(members)].add(p)
        await self.assign({m: plan[i] for i, m in enumerate(members)})

    async def assign(self, assignment: Mapping[MemorySource, set[int]]) -> None:
        """A scripted assignment, eager like aiokafka's: every member's partitions are
        revoked first, then every member is told its whole new assignment.

        Held members are left out; an early member hands over (see the module docstring).
        """
        members = self._answered()
        early = [m for m in members if m.early]
        for member in members:
            if member not in early:
                await member.revoke_all()
        for member in members:
            if member in early:
                await member.take_over(assignment.get(member, set()))
            else:
                await member.take(assignment.get(member, set()))


class MemorySource:
    """One member of a `MemoryGroup` (or, without a group, the owner of every partition)."""

    def __init__(
        self,
        topic: MemoryTopic,
        group: MemoryGroup | None = None,
        *,
        starting_offsets: str = "earliest",
    ) -> None:
        self._topic = topic
        self._group = group
        self._starting = starting_offsets
        self._listener: PartitionListener | None = None
        self._owned: set[int] = set()
        self._positions: dict[int, int] = {}
        self._paused: set[int] = set()
        self._fetches = 0
        self._steps: dict[int, Callable[[], Awaitable[None]]] = {}
        self.commits: list[dict[int, int]] = []
        #: True while an early start reads every partition outside the group.
        self.early = False
        self._join_pending = False

    # ---------------------------------------------------------- test scripting
    def at_fetch(self, n: int, step: Callable[[], Awaitable[None]]) -> None:
        """Run step (e.g. a rebalance) during the n-th fetch (1-based), before it returns."""
        self._steps[n] = step

    @property
    def fetches(self) -> int:
        """Fetches so far."""
        return self._fetches

    async def revoke_all(self) -> None:
        """Lose every partition (the first half of an eager rebalance)."""
        assert self._listener is not None, "start() first"
        revoked = set(self._owned)
        if not revoked:
            return
        self._owned.clear()
        self._positions.clear()
        self._paused.clear()
        await self._listener.on_revoked(revoked)

    async def take(self, partitions: set[int]) -> None:
        """Own exactly these partitions (after `revoke_all`), and say so, even when empty."""
        assert self._listener is not None, "start() first"
        self._owned = set(partitions)
        for p in partitions:
            self._positions[p] = self._group.committed.get(p, 0) if self._group else 0
        await self._listener.on_assigned(set(partitions))

    async def take_over(self, partitions: set[int]) -> None:
        """End an early start with the group's first answer, as `KafkaSource` does.

        Partitions kept go on where the early reader stands (paused ones stay
        paused); the others are revoked; any it did not have are assigned.
        """
        assert self._listener is not None, "start() first"
        self.early = False
        had = set(self._owned)
        lost, new = had - partitions, partitions - had
        if lost:
            self._owned -= lost
            for p in lost:
                self._positions.pop(p, None)
            self._paused -= lost
            await self._listener.on_revoked(lost)
        if new:
            self._owned |= new
            for p in new:
                self._positions[p] = self._group.committed.get(p, 0) if self._group else 0
            await self._listener.on_assigned(new)

    # ------------------------------------------------------------------ Source
    @property
    def topic(self) -> str:
        """The topic read."""
        return self._topic.name

    async def start(self, listener: PartitionListener, *, early: bool = False) -> None:
        """Join the group (or own every partition); early: own them all until it answers."""
        self._listener = listener
        if self._group is None:
            await self.take(set(range(self._topic.partitions)))
        elif early:
            self.early = True
            self._join_pending = True
            await self.take(set(range(self._topic.partitions)))
        else:
            await self._group.join(self)

    async def join_group(self) -> None:
        """Join the group after an early start (nothing when already in it)."""
        if self._group is not None and self._join_pending:
            self._join_pending = False
            await self._group.join(self)

    async def stop(self) -> None:
        """Leave the group."""
        if self._group is not None:
            await self._group.leave(self)

    def assignment(self) -> set[int]:
        """The partitions owned now."""
        return set(self._owned)

    async def partition_count(self) -> int:
        """How many partitions the topic has."""
        return self._topic.partitions

    def seek(self, partition: int, offset: int) -> None:
        """Continue at offset (a paused partition stays paused, as in Kafka)."""
        self._positions[partition] = offset

    async def seek_to_start(self, partition: int) -> None:
        """earliest: offset 0; latest: the end."""
        self._positions[partition] = (
            0 if self._starting == "earliest" else self._topic.end_offset(partition)
        )

    async def position(self, partition: int) -> int:
        """The next offset to fetch."""
        return self._positions[partition]

    def positions(self) -> OffsetPositions:
        """Offsets are positions, as in Kafka."""
        return OFFSET_POSITIONS

    async def describe(self, offsets: Mapping[int, int | None]) -> dict[int, PartitionInfo]:
        """Log start, end and the record at an offset, for any partition."""
        topic = self._topic
        out = {}
        for p, offset in offsets.items():
            start, end = topic.log_start(p), topic.end_offset(p)
            record = None
            if offset is not None and start <= offset < end:
                record = topic.read(p, offset, 1)[0]
            out[p] = PartitionInfo(start, end, record)
        return out

    def seen_ends(self) -> dict[int, int]:
        """The end offset of every owned partition (the topic is right here)."""
        return {p: self._topic.end_offset(p) for p in self._owned}

    def pause(self, partitions: set[int]) -> None:
        """Stop fetching these partitions."""
        self._paused |= partitions & self._owned

    def resume(self, partitions: set[int]) -> None:
        """Fetch these partitions again."""
        self._paused -= partitions

    async def fetch(self, max_records: int, timeout_ms: int) -> list[RawRecord]:
        """Records of the owned, unpaused partitions, partition by partition."""
        self._fetches += 1
        # Like a network fetch, give other tasks (other workers) a turn.
        await asyncio.sleep(0)
        out = self._read(max_records)
        if not out and timeout_ms > 0:
            self._topic.arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._topic.arrived.wait(), timeout_ms / 1000)
            out = self._read(max_records)
        step = self._steps.pop(self._fetches, None)
        if step is not None:
            await step()
        return out

    def _read(self, max_records: int) -> list[RawRecord]:
        out: list[RawRecord] = []
        for p in sorted(self._owned - self._paused):
            got = self._topic.read(p, self._positions[p], max_records - len(out))
            if got:
                self._positions[p] = got[-1].offset + 1
                out += got
            if len(out) >= max_records:
                break
        return out

    async def commit(self, offsets: Mapping[int, int]) -> None:
        """Record group offsets."""
        self.commits.append(dict(offsets))
        if self._group is not None:
            self._group.committed.update(offsets)

"""After an assignment change the engine holds what is committed, nothing more.

The loop prepares batch N+1 while batch N commits. When the assignment
changes in between, N+1 is dropped and its records fetched again; anything
it left in the engine (state of kept partitions, a W moved by its records)
would count twice or close windows on records not committed. The kill -9
fault test met it as "the worker's W is not the checkpoint's".
"""

from __future__ import annotations

import asyncio

from streamproc.engine import Engine
from streamproc.runtime.decode import decode_records
from streamproc.runtime.partitions import PartitionTracker
from streamproc.runtime.wiring import QueryPorts
from streamproc.sinks.base import PartitionCheckpoint
from streamproc.state import memory_store_factory
from streamproc.testing import MemoryDatabase, MemoryGroup, MemorySource, memory_ports
from tests.component.harness import fill_topic, make_plan, run_to_end
from tests.reference import Query
from tests.streams import AGGS, MINUTE, make_stream

QUERY = Query(("user_id",), AGGS, delay_ms=5 * MINUTE, size_ms=10 * MINUTE, output_mode="update")


class Listener:
    def __init__(self, tracker: PartitionTracker) -> None:
        self.tracker = tracker

    async def on_assigned(self, partitions: set[int]) -> None:
        await self.tracker.assigned(partitions)

    async def on_revoked(self, partitions: set[int]) -> None:
        await self.tracker.revoked(partitions)


async def test_a_prepared_uncommitted_batch_leaves_nothing_behind_an_assignment_change() -> None:
    stream = make_stream(800, seed=3)
    first = {p: records[: len(records) // 2] for p, records in stream.items()}
    topic = fill_topic(first)
    db = MemoryDatabase()
    plan = make_plan(QUERY)
    await run_to_end(plan, topic, db)  # the first half, committed
    for p, records in stream.items():
        for record in records[len(records) // 2 :]:
            topic.produce_json(p, record)

    ports = memory_ports(plan, MemorySource(topic, MemoryGroup(topic)), db)
    checkpoint = ports.checkpoint
    await checkpoint.open()
    tracker = PartitionTracker(
        plan.query_name,
        ports.source,
        checkpoint,
        lambda: Engine(plan.spec, memory_store_factory, lambda: 0),
    )
    await ports.source.start(Listener(tracker))
    committed = await checkpoint.watermarks()
    assert tracker.engine.global_watermark_ms == committed.global_ms is not None

    # A batch of the second half folded and emitted, not committed: it moves W.
    raws = await ports.source.fetch(10_000, 0)
    good, _ = decode_records(raws)
    tracker.engine.process(good)
    tracker.engine.emit()
    assert tracker.engine.global_watermark_ms > committed.global_ms

    await tracker.revoked({3})
    engine = tracker.engine
    assert engine.global_watermark_ms == committed.global_ms
    for p in (0, 1, 2):
        restored = await checkpoint.load_partition(p)
        assert engine.partition_max_event_ts_ms(p) == restored.max_event_ts_ms
        assert tracker.next[p] == tracker.committed[p] == restored.next_offset
    assert engine.local_partitions == (0, 1, 2)
    await ports.source.stop()
    await checkpoint.close()


async def committed_tracker(seed: int) -> tuple[PartitionTracker, QueryPorts]:
    """A tracker started on a stream committed to its end, owning all four partitions."""
    topic = fill_topic(make_stream(400, seed=seed))
    db = MemoryDatabase()
    plan = make_plan(QUERY)
    await run_to_end(plan, topic, db)
    ports = memory_ports(plan, MemorySource(topic, MemoryGroup(topic)), db)
    await ports.checkpoint.open()
    tracker = PartitionTracker(
        plan.query_name,
        ports.source,
        ports.checkpoint,
        lambda: Engine(plan.spec, memory_store_factory, lambda: 0),
    )
    await ports.source.start(Listener(tracker))
    return tracker, ports


async def test_a_replay_overtaken_by_a_revocation_seeks_only_what_the_member_holds() -> None:
    # A worker replays from the ledger after a stale batch; while the replay awaits the
    # checkpoint, the group takes partition 3 away (an early start handed over to the
    # group). The replay must not go on to seek partition 3: a Kafka consumer refuses
    # a seek of a partition it does not hold ("No current assignment"), and the
    # worker died on it in 4 of 32 runs of a fault test.
    tracker, ports = await committed_tracker(seed=5)
    source, checkpoint = ports.source, ports.checkpoint
    held = set(source.assignment())
    assert held == {0, 1, 2, 3}
    sought: list[int] = []
    seek = source.seek

    def seek_held(partition: int, offset: int) -> None:
        if partition not in held:
            raise AssertionError(f"seek of partition {partition}, which is not assigned")
        sought.append(partition)
        seek(partition, offset)

    gate, waiting = asyncio.Event(), asyncio.Event()
    load = checkpoint.load_partition

    async def load_after_gate(partition: int) -> PartitionCheckpoint:
        waiting.set()
        await gate.wait()
        return await load(partition)

    source.seek = seek_held  # type: ignore[method-assign]
    source.assignment = lambda: set(held)  # type: ignore[method-assign]
    checkpoint.load_partition = load_after_gate  # type: ignore[method-assign]

    replay = asyncio.create_task(tracker.replay_from_ledger())
    await waiting.wait()  # the replay awaits the checkpoint
    held.discard(3)
    revoke = asyncio.create_task(tracker.revoked({3}))
    await asyncio.sleep(0)
    gate.set()
    await asyncio.gather(replay, revoke)

    assert sorted(sought) == [0, 1, 2]  # the revocation's restore, once each
    assert tracker.engine.local_partitions == (0, 1, 2)
    assert tracker.pending == set()
    for p in (0, 1, 2):
        restored = await load(p)
        assert tracker.next[p] == tracker.committed[p] == restored.next_offset
    await source.stop()
    await checkpoint.close()


async def test_a_pending_partition_the_source_does_not_hold_is_dropped_not_retried() -> None:
    # A partition can leave the tracker's set without a revocation it hears of (a
    # rejoin after a failed heartbeat). Kept pending, the loop retried restoring it
    # before every batch and never committed again (the rebalance fault test stalled).
    tracker, ports = await committed_tracker(seed=6)
    source, checkpoint = ports.source, ports.checkpoint
    source.assignment = lambda: {0, 1, 3}  # type: ignore[method-assign]
    tracker.next.clear()
    tracker.committed.clear()
    tracker.pending = {1, 2}
    await tracker.restore_pending()
    assert tracker.pending == set()
    restored = await checkpoint.load_partition(1)
    assert tracker.next[1] == tracker.committed[1] == restored.next_offset
    assert 2 not in tracker.next
    await source.stop()
    await checkpoint.close()

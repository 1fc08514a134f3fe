"""After an assignment change the engine holds what is committed, nothing more.

The loop prepares batch N+1 while batch N commits. When the assignment
changes in between, N+1 is dropped and its records fetched again; anything
it left in the engine (state of kept partitions, a W moved by its records)
would count twice or close windows on records not committed. The kill -9
fault test met it as "the worker's W is not the checkpoint's".
"""

from __future__ import annotations

from streamproc.engine import Engine
from streamproc.runtime.decode import decode_records
from streamproc.runtime.partitions import PartitionTracker
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

"""The Kafka source adapter on the real broker, where its contract meets aiokafka's.

- The group's first answer stops the early reader while a fetch waits on it: the
  fetch ends empty (the group's consumer goes on from the early positions), it
  does not raise aiokafka's ConsumerStoppedError (a traceback that ended a worker).
- A pause outlives a seek, as the `Source` port says; `resume` ends it. A bounded
  run whose batch reached a partition's end paused it, then found the batch
  stale and sought back: the partition must be read again.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys

from streamproc.local import create_topic
from streamproc.sources.kafka import KafkaSource, KafkaSourceConfig
from tests.kafka_io import produce


class Listener:
    def __init__(self) -> None:
        self.assigned: list[set[int]] = []
        self.revoked: list[set[int]] = []

    async def on_assigned(self, partitions: set[int]) -> None:
        self.assigned.append(set(partitions))

    async def on_revoked(self, partitions: set[int]) -> None:
        self.revoked.append(set(partitions))


def source(bootstrap: str, topic: str) -> KafkaSource:
    return KafkaSource(
        KafkaSourceConfig(
            bootstrap=bootstrap,
            topic=topic,
            group_id=f"{topic}-group",
            starting_offsets="earliest",
            session_timeout_ms=6_000,
        )
    )


async def test_the_groups_answer_during_fetches_of_the_early_reader_loses_nothing(
    kafka_bootstrap: str, unique_name: str
) -> None:
    # Fetches run back to back while the group's first answer takes over from the
    # early reader and stops it: the fetch in flight then must not call the stopped
    # reader (aiokafka raises ConsumerStoppedError, which ended a worker with a
    # traceback), and the group's consumer goes on where the early reader stood.
    await create_topic(kafka_bootstrap, unique_name, 2)
    records = 4_000
    await produce(
        kafka_bootstrap, unique_name, {p: [{"n": i} for i in range(records)] for p in (0, 1)}
    )
    src = source(kafka_bootstrap, unique_name)
    listener = Listener()
    seen: dict[int, set[int]] = {0: set(), 1: set()}
    try:
        await src.start(listener, early=True)
        assert listener.assigned == [{0, 1}]
        loop = asyncio.get_running_loop()
        # Slowly (the group answers after about 3 s), until well after the answer.
        started = loop.time()
        while loop.time() < started + 30:
            for r in await src.fetch(2, timeout_ms=50):
                seen[r.partition].add(r.offset)
            if loop.time() > started + 8 and sum(map(len, seen.values())) == 2 * records:
                break
            await asyncio.sleep(0.001)
        assert listener.revoked == []  # the group's answer kept both partitions
        assert src.assignment() == {0, 1}
        assert seen == {0: set(range(records)), 1: set(range(records))}
    finally:
        await src.stop()


async def test_a_paused_partition_stays_paused_when_sought_until_resumed(
    kafka_bootstrap: str, unique_name: str
) -> None:
    await create_topic(kafka_bootstrap, unique_name, 1)
    await produce(kafka_bootstrap, unique_name, {0: [{"n": i} for i in range(10)]})
    src = source(kafka_bootstrap, unique_name)
    listener = Listener()
    try:
        await src.start(listener)
        for _ in range(300):
            if listener.assigned:
                break
            await asyncio.sleep(0.1)
        assert src.assignment() == {0}
        src.seek(0, 0)
        got = await _fetch_all(src, 10)
        assert [r.offset for r in got] == list(range(10))
        src.pause({0})
        src.seek(0, 5)  # a batch that reached the end was stale: sought back
        assert await src.fetch(100, timeout_ms=500) == []
        src.resume({0})
        assert [r.offset for r in await _fetch_all(src, 5)] == list(range(5, 10))
    finally:
        await src.stop()


async def _fetch_all(src: KafkaSource, n: int) -> list:  # type: ignore[type-arg]
    got: list = []  # type: ignore[type-arg]
    for _ in range(50):
        got += await src.fetch(100, timeout_ms=200)
        if len(got) >= n:
            break
    return got


async def test_a_fetch_during_a_rebalance_returns_before_the_new_assignment(
    kafka_bootstrap: str, unique_name: str
) -> None:
    # aiokafka's getmany waits for the next assignment without a bound while the group
    # rebalances; a broker may never answer that join (the local one did not once the
    # other members had left), and a worker whose bounded run was already complete then
    # hung for ever instead of seeing that and ending. Here a frozen member (SIGSTOP)
    # holds the rebalance open until its session expires.
    from aiokafka import AIOKafkaConsumer

    await create_topic(kafka_bootstrap, unique_name, 2)
    group = f"{unique_name}-group"
    src = source(kafka_bootstrap, unique_name)
    listener = Listener()
    frozen = subprocess.Popen(
        [sys.executable, "-c", _MEMBER, kafka_bootstrap, unique_name, group],
        stdout=subprocess.PIPE,
        text=True,
    )
    other = AIOKafkaConsumer(
        unique_name, bootstrap_servers=kafka_bootstrap, group_id=group, session_timeout_ms=6_000
    )
    try:
        await src.start(listener)
        assert frozen.stdout is not None
        assert frozen.stdout.readline().strip() == "assigned"
        for _ in range(300):
            if listener.assigned and len(src.assignment()) == 1:
                break
            await src.fetch(100, timeout_ms=100)
            await asyncio.sleep(0.1)
        assert len(src.assignment()) == 1  # the group is the two members
        os.kill(frozen.pid, signal.SIGSTOP)
        await other.start()  # a join: the rebalance waits for the frozen member
        for _ in range(300):
            if len(listener.revoked) == len(listener.assigned):
                break
            await asyncio.sleep(0.1)
        answered = len(listener.assigned)
        assert await src.fetch(100, timeout_ms=200) == []
        assert len(listener.assigned) == answered  # returned while the answer was pending
    finally:
        frozen.kill()
        frozen.wait()
        await other.stop()
        await src.stop()


#: A group member in a process of its own: says "assigned", then waits to be frozen.
_MEMBER = """
import asyncio, sys
from aiokafka import AIOKafkaConsumer

async def main(bootstrap, topic, group):
    c = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=group,
                         session_timeout_ms=6000)
    await c.start()
    while not c.assignment():
        await c.getmany(timeout_ms=100)
    print("assigned", flush=True)
    await asyncio.sleep(3600)

asyncio.run(main(*sys.argv[1:]))
"""

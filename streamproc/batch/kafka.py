"""The Kafka input of a batch job: every partition from its start to its end at start.

The end offsets are taken once, when the job starts, from the fetch high
watermark (exact; ListOffsets undercounts on the local broker: OPERATING.md,
"The local stack"), through `KafkaSource.describe`. Partitions are assigned by hand: no
consumer group, no committed offsets; records produced after the start wait for
the next job.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from streamproc.sources.base import RawRecord
from streamproc.sources.kafka import KafkaSource, KafkaSourceConfig

#: A partition that yields nothing for this long while short of its end fails the job.
STALL_TIMEOUT_S = 60.0


async def bounded_ranges(
    bootstrap: str, topic: str, client_params: Mapping[str, Any]
) -> dict[int, tuple[int, int]]:
    """{partition: (log start, end at start)} of every partition of the topic.

    Raises:
        SourceTopicMissingError: the topic does not exist.
    """
    probe = KafkaSource(
        KafkaSourceConfig(bootstrap, topic, group_id="", client_params=client_params)
    )
    try:
        count = await probe.partition_count()
        infos = await probe.describe(dict.fromkeys(range(count)))
    finally:
        await probe.stop()
    return {p: (info.log_start, info.end) for p, info in infos.items()}


async def read_bounded(
    bootstrap: str,
    topic: str,
    ranges: Mapping[int, tuple[int, int]],
    client_params: Mapping[str, Any],
) -> AsyncIterator[list[RawRecord]]:
    """Record batches of every partition, each partition in offset order, up to its end.

    Yields aiokafka's records (they have RawRecord's attributes); records past a
    partition's end are left out.

    Raises:
        TimeoutError: a partition short of its end yielded nothing for STALL_TIMEOUT_S.
    """
    todo = {p: span for p, span in ranges.items() if span[1] > span[0]}
    if not todo:
        return
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_uncommitted",
        max_partition_fetch_bytes=4 * 1_048_576,
        **dict(client_params),
    )
    await consumer.start()
    try:
        tps = {p: TopicPartition(topic, p) for p in todo}
        consumer.assign(list(tps.values()))
        for p, (start, _) in todo.items():
            consumer.seek(tps[p], start)
        loop = asyncio.get_running_loop()
        last_progress = loop.time()
        while todo:
            got = await consumer.getmany(*(tps[p] for p in todo), timeout_ms=500)
            out: list[Any] = []
            for tp, records in got.items():
                end = todo.get(tp.partition, (0, 0))[1]
                out.extend(r for r in records if r.offset < end)
            for p in list(todo):
                if await consumer.position(tps[p]) >= todo[p][1]:
                    del todo[p]
                    consumer.pause(tps[p])
            if out:
                last_progress = loop.time()
                yield out
            elif loop.time() - last_progress > STALL_TIMEOUT_S:
                raise TimeoutError(
                    f"no records from partitions {sorted(todo)} of {topic} for "
                    f"{STALL_TIMEOUT_S:.0f}s although they hold records up to the job's end offsets"
                )
    finally:
        await consumer.stop()

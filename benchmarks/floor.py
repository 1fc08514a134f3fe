"""The floor: a process that only fetches a topic and decodes every value as JSON.

``python -m benchmarks.floor BOOTSTRAP TOPIC``: manual assignment of every
partition from the beginning, aiokafka ``getmany`` with the fetch sizes streamproc
uses, ``json.loads`` of each value, until every partition reached its end. The end
is the high watermark of the fetch responses (``consumer.highwater``), not
ListOffsets: the local broker's ListOffsets undercounts (OPERATING.md, "The local stack").
Prints ``floor: <records> records`` and exits 0. No streaming processor can read
and decode the same records faster in one Python process, so the harness reports
streamproc's throughput against this one.
"""

from __future__ import annotations

import asyncio
import json
import sys

from aiokafka import AIOKafkaConsumer, TopicPartition


async def drain(bootstrap: str, topic: str) -> int:
    """Fetch and decode every record of topic; the number of records."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_bytes=52_428_800,  # as streamproc's Kafka source
        max_partition_fetch_bytes=4 * 1_048_576,
        fetch_max_wait_ms=100,
    )
    await consumer.start()
    try:
        parts = consumer.partitions_for_topic(topic)
        if not parts:
            await consumer._client.force_metadata_update()
            parts = consumer.partitions_for_topic(topic) or set()
        if not parts:
            raise SystemExit(f"floor: topic {topic} has no partitions")
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        n = 0
        remaining = set(tps)
        while remaining:
            batches = await consumer.getmany(*remaining, timeout_ms=500, max_records=20_000)
            for records in batches.values():
                for record in records:
                    json.loads(record.value)
                n += len(records)
            for tp in list(remaining):
                high = consumer.highwater(tp)
                if high is not None and await consumer.position(tp) >= high:
                    remaining.discard(tp)
        return n
    finally:
        await consumer.stop()


def main(argv: list[str]) -> int:
    """Entry point: print the record count."""
    if len(argv) != 2:
        print("usage: python -m benchmarks.floor BOOTSTRAP TOPIC", file=sys.stderr)
        return 2
    n = asyncio.run(drain(argv[0], argv[1]))
    print(f"floor: {n} records", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

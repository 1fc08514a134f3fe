"""Writing test input to Kafka and reading output back: the one producer of the suites.

`produce` writes JSON records, `produce_raw` any bytes; both send each partition's
messages in order to an explicit partition, and both can stamp explicit timestamps (so
that a re-created topic can hold the very same messages at the very same offsets).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

#: A message to produce: (partition, key, value).
Message = tuple[int, bytes | None, bytes | None]
#: Records to produce: partition -> records, or (partition, record) pairs in order.
Records = Mapping[int, Sequence[Any]] | Sequence[tuple[int, Any]]


def json_messages(records: Records) -> list[Message]:
    """JSON records as messages keyed by something that is NOT the group key.

    The key is ``msg-<seq>`` (the record's ``seq``, else its index in its partition):
    the same records always give the same messages.

    Args:
        records: partition -> records, or (partition, record) pairs in order.

    Returns:
        (partition, key, value) in the order given.
    """
    pairs = (
        [(p, r) for p, recs in records.items() for r in recs]
        if isinstance(records, Mapping)
        else list(records)
    )
    index: dict[int, int] = {}
    out: list[Message] = []
    for p, record in pairs:
        i = index.get(p, 0)
        index[p] = i + 1
        seq = record.get("seq", i) if isinstance(record, dict) else i
        out.append((p, f"msg-{seq}".encode(), json.dumps(record).encode()))
    return out


async def produce(
    bootstrap: str, topic: str, records: Records, *, timestamp_ms: int | None = None
) -> None:
    """Produce JSON records in order (see `json_messages` for their keys).

    Args:
        bootstrap: Kafka bootstrap servers.
        topic: The topic.
        records: partition -> records, or (partition, record) pairs in order.
        timestamp_ms: When given, the i-th message gets the timestamp timestamp_ms + i;
            else the producer's clock.
    """
    await produce_raw(bootstrap, topic, json_messages(records), timestamp_ms=timestamp_ms)


async def produce_raw(
    bootstrap: str,
    topic: str,
    messages: Sequence[Message],
    *,
    timestamp_ms: int | None = None,
) -> None:
    """Produce (partition, key, value) messages in order; values up to a few MB.

    Args:
        bootstrap: Kafka bootstrap servers.
        topic: The topic.
        messages: (partition, key, value), in the order each partition gets them.
        timestamp_ms: When given, the i-th message gets the timestamp timestamp_ms + i;
            else the producer's clock.
    """
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        linger_ms=5,
        enable_idempotence=False,
        max_request_size=4 * 1_048_576,
    )
    await producer.start()
    try:
        futures = [
            await producer.send(
                topic,
                value,
                key=key,
                partition=p,
                timestamp_ms=None if timestamp_ms is None else timestamp_ms + i,
            )
            for i, (p, key, value) in enumerate(messages)
        ]
        for f in futures:
            await f
    finally:
        await producer.stop()


@dataclass(frozen=True)
class Letter:
    """A message read back from a topic (a dead letter, a late record, a result row)."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: dict[str, str]

    @property
    def source(self) -> tuple[int, int]:
        """(partition, offset) of the input record a dead letter is about."""
        return int(self.headers["source_partition"]), int(self.headers["source_offset"])


async def read_topic(bootstrap: str, topic: str, quiet_s: float = 0.0) -> list[Letter]:
    """Every message of a topic: read until every partition reached its high watermark.

    Read it once its writers are done (the query ended or was stopped): the high
    watermarks then bound everything there is, and nothing needs waiting out.

    Args:
        bootstrap: Kafka bootstrap servers.
        topic: The topic.
        quiet_s: After reaching the high watermarks, how long no new message may come
            (for a topic that may still be written to).

    Returns:
        The messages, per partition in offset order.
    """
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=16 * 1_048_576,
        fetch_max_bytes=64 * 1_048_576,
    )
    await consumer.start()
    out: list[Letter] = []
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        if not parts:
            await consumer._client.force_metadata_update()
            parts = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        deadline = time.monotonic() + 60
        last_data = time.monotonic()
        while time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=300)
            for tp, records in batches.items():
                for r in records:
                    headers = {k: v.decode("utf-8", "replace") for k, v in r.headers}
                    out.append(Letter(tp.partition, r.offset, r.key, r.value, headers))
            if batches:
                last_data = time.monotonic()
            done = True
            for tp in tps:
                high = consumer.highwater(tp)
                done = done and high is not None and await consumer.position(tp) >= high
            if done and time.monotonic() - last_data >= quiet_s:
                break
    finally:
        await consumer.stop()
    return out

"""Kafka helpers for local runs and tests."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any

_TOPIC_ALREADY_EXISTS = 36


async def create_topic(
    bootstrap: str,
    topic: str,
    partitions: int,
    *,
    configs: Mapping[str, str] | None = None,
    timeout: float = 15.0,
) -> None:
    """Create a topic and wait until the metadata shows all its partitions.

    An existing topic with the same number of partitions is accepted.

    Args:
        bootstrap: Kafka bootstrap servers, ``host:port[,host:port]``.
        topic: Topic name.
        partitions: Number of partitions (replication factor is 1).
        configs: Topic configs set at creation (e.g. ``retention.ms``). On
            the Tansu broker, DescribeConfigs only returns configs that were
            given here (OPERATING.md, "The local stack", quirk 3).
        timeout: Seconds to wait for the partitions to have leaders.

    Raises:
        RuntimeError: The broker refused, or the topic exists with another
            partition count.
        TimeoutError: The partitions did not show up in time.
    """
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    await admin.start()
    try:
        new = NewTopic(topic, partitions, 1, topic_configs=dict(configs or {}))
        response = await admin.create_topics([new], timeout_ms=int(timeout * 1000))
        existed = False
        for entry in response.topic_errors:
            code, message = entry[1], entry[2] if len(entry) > 2 else ""
            existed |= code == _TOPIC_ALREADY_EXISTS
            if code not in (0, _TOPIC_ALREADY_EXISTS):
                raise RuntimeError(f"cannot create topic {topic!r}: error {code} {message}")
        deadline = time.monotonic() + timeout
        while True:
            found = _partitions(await admin.describe_topics([topic]), topic)
            if found is not None:
                total, led = found
                if existed and total != partitions:
                    raise RuntimeError(
                        f"topic {topic!r} exists with {total} partitions, not {partitions}"
                    )
                if total == led == partitions:
                    return
            if time.monotonic() >= deadline:
                raise TimeoutError(f"topic {topic!r}: partitions not ready ({found})")
            await asyncio.sleep(0.05)
    finally:
        await admin.close()


def _partitions(topics: list[Any], topic: str) -> tuple[int, int] | None:
    """(partitions, partitions with a leader) from a Metadata topic list."""
    for entry in topics:
        if entry["topic"] == topic and entry["error_code"] == 0:
            parts = entry["partitions"]
            return len(parts), sum(1 for p in parts if p["leader"] >= 0)
    return None

"""The benchmark workloads: records, how they are produced, and the query configs.

Two workloads of JSON records ``{"user_id": "u123", "event_time": <epoch ms>,
"value": <number>}`` on a 4-partition topic:

- dense: 10K records per second of event time, 10K users, the message key is the
  user (a user's records share a partition): ~10 records per (user, 10 s window).
- sparse: ~1K records per second of event time, 10K users, each user once per
  10 s window (a fresh shuffle per window), random message keys and round-robin
  partitions: every record is its own result row, and rows merge across partitions.

In both, event times jitter by +-500 ms and ~1% of the records are set back 7-15 s,
late for a 5 s watermark delay. Producing is never timed.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer

BASE_MS = 1_764_151_200_000  # 2025-11-26T10:00:00Z, a multiple of 60 s
PARTITIONS = 4
USERS = 10_000
LATE_SHARE = 0.01
REGIONS = ("eu", "us", "apac")
DELAY = "5 seconds"
AGGREGATIONS = "value:count,value:sum,value:avg,value:max"


@dataclass(frozen=True)
class Workload:
    """One stream of records: its shape and its size."""

    name: str
    records: int
    records_per_event_s: int  # records per second of event time
    keyed_by_user: bool  # message key = user (else random key, round-robin partition)
    seed: int = 7
    regions: bool = False  # a "region" field too (one of REGIONS, drawn per record)
    users: int = USERS

    def describe(self) -> dict[str, Any]:
        """The workload as JSON for the results file."""
        return {
            "name": self.name,
            "records": self.records,
            "partitions": PARTITIONS,
            "users": self.users,
            "records_per_event_second": self.records_per_event_s,
            "message_key": "user_id" if self.keyed_by_user else "random, round-robin partitions",
            "late_share": LATE_SHARE,
        }


def dense(records: int) -> Workload:
    """10K records/s of event time, keyed by user: ~10 records per result row."""
    return Workload("dense", records, 10_000, keyed_by_user=True)


def sparse(records: int) -> Workload:
    """~1K records/s of event time, random keys: ~1 record per result row."""
    return Workload("sparse", records, 1_000, keyed_by_user=False)


def messages(w: Workload) -> Iterator[tuple[int | None, bytes, bytes]]:
    """(partition or None for the key's partitioner, key, value) of every record."""
    rng = random.Random(w.seed)
    per_window = w.records_per_event_s * 10  # records per 10 s of event time
    order: list[int] = []
    for i in range(w.records):
        if w.keyed_by_user:
            user = rng.randrange(w.users)
        else:
            if i % w.users == 0:
                order = list(range(w.users))
                rng.shuffle(order)
            user = order[i % w.users]
        ts = BASE_MS + (i * 10_000) // per_window + rng.randrange(-500, 500)
        if rng.random() < LATE_SHARE:
            ts -= rng.randrange(7_000, 15_000)
        value = round(rng.uniform(0, 1000), 2)
        region = f', "region": "{rng.choice(REGIONS)}"' if w.regions else ""
        body = f'{{"user_id": "u{user}", "event_time": {ts}, "value": {value}{region}}}'.encode()
        if w.keyed_by_user:
            yield None, f"u{user}".encode(), body
        else:
            yield i % PARTITIONS, rng.randbytes(8).hex().encode(), body


async def produce(bootstrap: str, topic: str, w: Workload) -> int:
    """Create the topic and produce the workload; the number of records produced."""
    from streamproc.local import create_topic

    await create_topic(bootstrap, topic, PARTITIONS)
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        linger_ms=20,
        max_batch_size=256_000,
        enable_idempotence=False,  # the local broker has no idempotent producer
    )
    await producer.start()
    n = 0
    try:
        pending = []
        for partition, key, value in messages(w):
            pending.append(await producer.send(topic, value, key=key, partition=partition))
            n += 1
            if len(pending) >= 50_000:
                await asyncio.gather(*pending)
                pending = []
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return n


# ----------------------------------------------------------------------------- queries


@dataclass(frozen=True)
class Query:
    """One streamproc query over a workload's topic."""

    label: str  # e.g. "dense", "sparse/append"
    output_mode: str = "update"
    window: str = "10 seconds"
    slide: str | None = None
    trigger: str = "availablenow"
    aggregations: str = AGGREGATIONS
    max_records_per_trigger: int | None = None
    late_table: bool = True
    #: Session windows of this gap instead of the fixed window.
    gap: str | None = None


def config_document(
    q: Query, *, name: str, topic: str, bootstrap: str, dsn: str, checkpoint: Path
) -> dict[str, Any]:
    """A streamproc pipeline config (the format of configs/*.json) for one run."""
    params: dict[str, Any] = {
        "groupByColumns": "user_id",
        "windowColumn": "event_time",
        "windowDuration": q.window,
        "aggregations": q.aggregations,
    }
    if q.gap:
        del params["windowDuration"]
        params["gapDuration"] = q.gap
    if q.slide:
        params["slideDuration"] = q.slide
    streaming: dict[str, Any] = {
        "checkpointLocation": str(checkpoint),
        "queryName": name,
        "outputMode": q.output_mode,
        "triggerMode": q.trigger,
        "watermark": {"eventTimeColumn": "event_time", "delayThreshold": DELAY},
        "lateDataConfig": (
            {"strategy": "separatestream", "lateDataTable": f"{name}_late"}
            if q.late_table
            else {"strategy": "drop"}
        ),
    }
    if q.max_records_per_trigger:
        streaming["maxRecordsPerTrigger"] = q.max_records_per_trigger
    return {
        "pipelineId": name,
        "name": f"benchmark {q.label}",
        "mode": "streaming",
        "extract": {
            "sourceType": "kafka",
            "connectionParams": {
                "kafka.bootstrap.servers": bootstrap,
                "subscribe": topic,
                "startingOffsets": "earliest",
            },
        },
        "transforms": [{"transformType": "aggregation", "parameters": params}],
        "load": {"sinkType": "postgresql", "table": name, "connectionParams": {"url": dsn}},
        "streamingConfigJson": streaming,
        "errorHandlingConfig": {"dlqConfig": {"dlqType": "logging"}},
        "loggingConfig": {"logLevel": "INFO"},  # the default: one progress line per batch
    }


def write_config(directory: Path, document: dict[str, Any]) -> Path:
    """Write a config file named after its query; its path."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{document['streamingConfigJson']['queryName']}.json"
    path.write_text(json.dumps(document, indent=2))
    return path

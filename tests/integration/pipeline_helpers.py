"""Shared helpers of the pipeline integration tests: streams, plans, table reads."""

from __future__ import annotations

import asyncio
import json
import math
import random
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer

from streamproc.engine import AggSpec, QuerySpec, WindowSpec
from streamproc.runtime.main import store_factory_for
from streamproc.runtime.plan import QueryPlan, RetryPolicy
from streamproc.runtime.query import RunStats, StreamingQuery
from streamproc.sinks.rows import datetime_to_ms
from tests.integration.expected import Query, parse_ts

BASE_MS = 1_764_151_200_000  # 2025-11-26T10:00:00Z
MINUTE = 60_000

AGGS: tuple[tuple[str, str | None, str], ...] = (
    ("count", None, "count"),
    ("value_count", "value", "count"),
    ("value_sum", "value", "sum"),
    ("value_avg", "value", "avg"),
    ("value_min", "value", "min"),
    ("value_max", "value", "max"),
    ("value_first", "value", "first"),
    ("value_last", "value", "last"),
)


def make_stream(
    n: int, partitions: int = 4, seed: int = 1, users: int = 7, start_ms: int = BASE_MS
) -> dict[int, list[dict[str, Any]]]:
    """Records per partition in offset order: disorder, ~3% late, nulls, exact ties."""
    rng = random.Random(seed)
    out: dict[int, list[dict[str, Any]]] = {p: [] for p in range(partitions)}
    for i in range(n):
        p = rng.randrange(partitions)
        base = start_ms + i * 2_000
        roll = rng.random()
        if roll < 0.03:
            ts = base - 20 * MINUTE - rng.randrange(5 * MINUTE)  # late for a 5 min delay
        elif roll < 0.05:
            ts = start_ms + (i // 50) * 50 * 2_000  # exact ties
        else:
            ts = base - rng.randrange(2 * MINUTE)
        record: dict[str, Any] = {
            "user_id": f"u{rng.randrange(users)}",
            "event_time": _iso(ts),
            "seq": i,
        }
        v = rng.random()
        if v < 0.05:
            record["value"] = None
        elif v > 0.08:
            record["value"] = rng.randrange(-50, 500)
        out[p].append(record)
    return out


def _iso(ms: int) -> str:
    from streamproc.sinks.rows import ms_to_datetime

    dt = ms_to_datetime(ms)
    assert dt is not None
    return dt.isoformat().replace("+00:00", "Z")


async def produce(
    bootstrap: str, topic: str, stream: Mapping[int, Sequence[dict[str, Any]]]
) -> None:
    """Produce each partition's records in order, keyed by something that is NOT the group key."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, enable_idempotence=False)
    await producer.start()
    try:
        futures = []
        for p, records in stream.items():
            for rec in records:
                key = f"msg-{rec.get('seq', 0)}".encode()
                futures.append(
                    await producer.send(topic, json.dumps(rec).encode(), key=key, partition=p)
                )
        for f in futures:
            await f
    finally:
        await producer.stop()


def with_offsets(
    stream: Mapping[int, Sequence[dict[str, Any]]], start: Mapping[int, int] | None = None
) -> dict[int, list[tuple[int, dict[str, Any]]]]:
    start = start or {}
    return {p: [(start.get(p, 0) + i, r) for i, r in enumerate(recs)] for p, recs in stream.items()}


def make_plan(
    *,
    name: str,
    bootstrap: str,
    dsn: str,
    tmp: Path,
    query: Query,
    trigger: str = "availablenow",
    interval_ms: int | None = None,
    max_records: int | None = 300,
    late_strategy: str = "drop",
    late_dlq_topic: str | None = None,
    late_table: str | None = None,
    dlq_type: str = "logging",
    dlq_topic: str | None = None,
) -> QueryPlan:
    window = WindowSpec(query.size_ms, query.slide_ms or query.size_ms) if query.size_ms else None
    spec = QuerySpec(
        group_by=query.group_by,
        aggregations=tuple(AggSpec(o, c, f) for o, c, f in query.aggregations),  # type: ignore[arg-type]
        output_mode=query.output_mode,  # type: ignore[arg-type]
        event_time_column=query.time_column,
        delay_ms=query.delay_ms,
        window=window,
    )
    return QueryPlan(
        pipeline_id=name,
        query_name=name,
        spec=spec,
        bootstrap=bootstrap,
        topic=name,
        starting_offsets="earliest",
        trigger=trigger,  # type: ignore[arg-type]
        trigger_interval_ms=interval_ms,
        max_records_per_trigger=max_records,
        table=name,
        dsn=dsn,
        checkpoint_location=str(tmp / "checkpoints"),
        late_strategy=late_strategy,  # type: ignore[arg-type]
        late_dlq_topic=late_dlq_topic,
        late_table=late_table,
        dlq_type=dlq_type,  # type: ignore[arg-type]
        dlq_topic=dlq_topic,
        session_timeout_ms=6_000,
        retry=RetryPolicy(strategy="fixed", max_attempts=3, initial_delay_s=0.2, jitter=False),
    )


async def run_workers(plan: QueryPlan, workers: int = 1, timeout_s: float = 120) -> list[RunStats]:
    """Run `workers` bounded queries of one plan concurrently (one consumer group)."""
    queries = [
        StreamingQuery(plan, store_factory_for(plan, "rocksdb" if i == 0 else "memory"))
        for i in range(workers)
    ]
    return list(await asyncio.wait_for(asyncio.gather(*(q.run() for q in queries)), timeout_s))


async def read_table(conn: Any, table: str, query: Query) -> dict[tuple[Any, ...], tuple[Any, ...]]:
    """The result table as {(*key, window_start_ms, window_end_ms): values}."""
    rows = await conn.fetch(f'SELECT * FROM "{table}"')
    out: dict[tuple[Any, ...], tuple[Any, ...]] = {}
    for r in rows:
        key = tuple(r[c] for c in query.group_by)
        if query.size_ms:
            key += (datetime_to_ms(r["window_start"]), datetime_to_ms(r["window_end"]))
        else:
            key += (None, None)
        values = []
        for out_name, _col, func in query.aggregations:
            v = r[out_name]
            if func in ("first", "last") and v is not None:
                v = json.loads(v)
            values.append(v)
        out[key] = tuple(values)
    return out


def assert_tables_equal(actual: Mapping[Any, Any], expected: Mapping[Any, Any]) -> None:
    """Row-by-row equality; floats (avg, sums of ints as double) compared to 1e-9 relative."""
    missing = sorted(set(expected) - set(actual), key=repr)
    extra = sorted(set(actual) - set(expected), key=repr)
    assert not missing and not extra, f"missing rows {missing[:5]}, unexpected rows {extra[:5]}"
    diffs = []
    for key, exp in expected.items():
        act = actual[key]
        for a, e in zip(act, exp, strict=True):
            if isinstance(e, float) or isinstance(a, float):
                if a is None or e is None or not math.isclose(a, e, rel_tol=1e-9, abs_tol=1e-9):
                    diffs.append((key, act, exp))
                    break
            elif a != e:
                diffs.append((key, act, exp))
                break
    assert not diffs, f"{len(diffs)} differing rows, e.g. {diffs[:3]}"


__all__ = ["parse_ts"]

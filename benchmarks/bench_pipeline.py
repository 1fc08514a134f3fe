"""End-to-end throughput: Kafka -> engine -> PostgreSQL, one worker, availablenow.

Workload: N JSON records (default 200K; --quick 50K) on a 4-partition topic of the
embedded broker, 10K keys, event time advancing 10K records per second of event time
with +-500 ms disorder and ~1% late, tumbling 10 s window, count + sum + avg + max,
update mode, maxRecordsPerTrigger 20,000. Producing is not timed. Reported: records/s
from the first fetch to the last commit (the group join is excluded and reported apart),
median of the runs. Uses STREAMPROC_KAFKA_BOOTSTRAP / STREAMPROC_PG_DSN when set, else
starts the embedded stack. Results go to benchmarks/results/pipeline.json.
"""

from __future__ import annotations

import asyncio
import json
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer

from streamproc.engine import AggSpec, QuerySpec, WindowSpec
from streamproc.local import create_topic, start_stack, stop_stack
from streamproc.runtime.main import store_factory_for
from streamproc.runtime.plan import QueryPlan
from streamproc.runtime.query import StreamingQuery

RESULTS = Path(__file__).parent / "results" / "pipeline.json"
BASE_MS = 1_764_151_200_000


def _records(n: int, seed: int = 3) -> list[tuple[int, bytes, bytes]]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        key = rng.randrange(10_000)
        ts = BASE_MS + i // 10 + rng.randrange(-500, 500)
        if rng.random() < 0.01:
            ts -= 5_000
        value = json.dumps({"user_id": f"u{key}", "event_time": ts, "amount": rng.randrange(1000)})
        out.append((key % 4, str(key).encode(), value.encode()))
    return out


async def _produce(bootstrap: str, topic: str, records: list[tuple[int, bytes, bytes]]) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, linger_ms=20, max_batch_size=256_000, enable_idempotence=False
    )
    await producer.start()
    try:
        futures = [await producer.send(topic, v, key=k, partition=p) for p, k, v in records]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


def _plan(name: str, bootstrap: str, dsn: str, tmp: Path) -> QueryPlan:
    spec = QuerySpec(
        group_by=("user_id",),
        aggregations=(
            AggSpec("n", None, "count"),
            AggSpec("amount_sum", "amount", "sum"),
            AggSpec("amount_avg", "amount", "avg"),
            AggSpec("amount_max", "amount", "max"),
        ),
        output_mode="update",
        event_time_column="event_time",
        delay_ms=2_000,
        window=WindowSpec(10_000, 10_000),
    )
    return QueryPlan(
        pipeline_id=name,
        query_name=name,
        spec=spec,
        bootstrap=bootstrap,
        topic=name,
        starting_offsets="earliest",
        trigger="availablenow",
        max_records_per_trigger=20_000,
        table=name,
        dsn=dsn,
        checkpoint_location=str(tmp),
        session_timeout_ms=6_000,
    )


async def _run_once(bootstrap: str, dsn: str, n: int, run: int, tmp: Path) -> dict[str, float]:
    name = f"bench_pipeline_{int(time.time())}_{run}"
    await create_topic(bootstrap, name, 4)
    await _produce(bootstrap, name, _records(n))
    plan = _plan(name, bootstrap, dsn, tmp / name)
    query = StreamingQuery(plan, store_factory_for(plan))
    started = time.monotonic()
    task = asyncio.ensure_future(query.run())
    await query.wait_until_assigned()
    joined = time.monotonic()
    stats = await task
    ended = time.monotonic()
    assert stats.records == n, (stats.records, n)
    return {
        "records_per_s": n / (ended - joined),
        "join_s": joined - started,
        "batches": stats.batches,
    }


async def _bench(n: int, runs: int) -> list[dict[str, float]]:
    import os

    tmp = Path(tempfile.mkdtemp(prefix="bench-pipeline-"))
    bootstrap = os.environ.get("STREAMPROC_KAFKA_BOOTSTRAP")
    dsn = os.environ.get("STREAMPROC_PG_DSN")
    info = None
    if not (bootstrap and dsn):
        info = await asyncio.to_thread(start_stack, tmp / "stack")
        bootstrap, dsn = bootstrap or info.bootstrap, dsn or info.dsn
    try:
        return [await _run_once(bootstrap, dsn, n, i, tmp) for i in range(runs)]
    finally:
        if info is not None:
            stop_stack(tmp / "stack")


def main(quick: bool = False) -> dict[str, Any]:
    """Run the end-to-end benchmark and print a line; returns the results."""
    n, runs = (50_000, 1) if quick else (200_000, 3)
    results = asyncio.run(_bench(n, runs))
    median = statistics.median(r["records_per_s"] for r in results)
    out = {"records": n, "runs": results, "median_records_per_s": median}
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=2) + "\n")
    print(f"pipeline benchmark: {n:,} records, availablenow, update mode, 1 worker")
    print(
        f"  median {median:,.0f} records/s after the group join "
        f"(join {statistics.median(r['join_s'] for r in results):.1f} s), runs: "
        + ", ".join(f"{r['records_per_s']:,.0f}" for r in results)
    )
    return out

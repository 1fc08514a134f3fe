"""Building and running in-memory queries for the component tests."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from streamproc.runtime.plan import BreakerPolicy, QueryPlan, RetryPolicy
from streamproc.runtime.query import RunStats, StreamingQuery
from streamproc.state import memory_store_factory, rocks_store_factory
from streamproc.testing import (
    MemoryDatabase,
    MemoryGroup,
    MemoryMessages,
    MemorySource,
    MemoryTopic,
    memory_ports,
)
from tests.plans import spec_of
from tests.reference import Query

TOPIC = "events"


def make_plan(query: Query, *, name: str = "q", **changes: Any) -> QueryPlan:
    """A plan of the model's query on the in-memory topic; `changes` override plan fields."""
    plan = QueryPlan(
        pipeline_id=name,
        query_name=name,
        spec=spec_of(query),
        bootstrap="memory",
        topic=TOPIC,
        starting_offsets="earliest",
        trigger="availablenow",
        max_records_per_trigger=300,
        table=name,
        dsn="memory",
        checkpoint_location="unused",
        retry=RetryPolicy(strategy="fixed", max_attempts=2, initial_delay_s=0.0, jitter=False),
        breaker=BreakerPolicy(failure_threshold=3, reset_timeout_s=0.05),
    )
    return replace(plan, **changes)


def fill_topic(
    stream: Mapping[int, Sequence[Mapping[str, Any]]], partitions: int = 4
) -> MemoryTopic:
    """A topic holding each partition's records in order."""
    topic = MemoryTopic(TOPIC, partitions)
    for p, records in stream.items():
        for i, record in enumerate(records):
            topic.produce_json(p, record, key=f"msg-{record.get('seq', i)}".encode())
    return topic


def new_query(
    plan: QueryPlan,
    source: MemorySource,
    db: MemoryDatabase,
    *,
    messages: MemoryMessages | None = None,
    state_dir: Path | None = None,
) -> StreamingQuery:
    """A query on in-memory adapters (RocksDB working state when state_dir is given)."""
    factory = rocks_store_factory(state_dir) if state_dir is not None else memory_store_factory
    return StreamingQuery(plan, factory, ports=memory_ports(plan, source, db, messages))


async def run_to_end(
    plan: QueryPlan,
    topic: MemoryTopic,
    db: MemoryDatabase,
    *,
    workers: int = 1,
    messages: MemoryMessages | None = None,
    timeout_s: float = 30.0,
) -> list[RunStats]:
    """Run bounded workers of one plan in one group until they end."""
    group = MemoryGroup(topic)
    queries = [
        new_query(plan, MemorySource(topic, group), db, messages=messages) for _ in range(workers)
    ]
    return list(await asyncio.wait_for(asyncio.gather(*(q.run() for q in queries)), timeout_s))


def table_of(db: MemoryDatabase, plan: QueryPlan) -> dict[tuple[Any, ...], tuple[Any, ...]]:
    """The result table as the model writes it: {(*key, window_start, window_end): values}."""
    assert plan.table is not None
    return {
        (*row.key, row.window_start_ms, row.window_end_ms): row.values
        for row in db.table_rows(plan.table)
    }

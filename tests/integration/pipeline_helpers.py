"""Plans of the pipeline integration tests on the real broker and PostgreSQL, and runs."""

from __future__ import annotations

import asyncio
from pathlib import Path

from streamproc.commands.run import store_factory_for
from streamproc.runtime.plan import QueryPlan, RetryPolicy
from streamproc.runtime.query import RunStats, StreamingQuery
from tests.plans import spec_of
from tests.reference import Query

#: The consumer-group session of in-process queries. A joining member waits about half
#: of it for its first assignment on the local broker; heartbeats go every second.
SESSION_TIMEOUT_MS = 3_000


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
    """A plan of the model's query reading topic `name` into table `name`.

    Args:
        name: Query, topic and table name.
        bootstrap: Kafka bootstrap servers.
        dsn: PostgreSQL URL.
        tmp: The test's temporary directory (for the checkpoint location).
        query: The model's query.
        trigger: The trigger mode.
        interval_ms: The processingtime interval.
        max_records: maxRecordsPerTrigger.
        late_strategy: What happens to late records.
        late_dlq_topic: Their topic with sendtodlq.
        late_table: Their table with separatestream.
        dlq_type: Where bad records go.
        dlq_topic: Their topic with dlq_type kafka.

    Returns:
        The plan.
    """
    return QueryPlan(
        pipeline_id=name,
        query_name=name,
        spec=spec_of(query),
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
        session_timeout_ms=SESSION_TIMEOUT_MS,
        retry=RetryPolicy(strategy="fixed", max_attempts=3, initial_delay_s=0.2, jitter=False),
    )


async def run_workers(plan: QueryPlan, workers: int = 1, timeout_s: float = 120) -> list[RunStats]:
    """Run `workers` bounded queries of one plan concurrently (one consumer group).

    Args:
        plan: The plan.
        workers: How many queries (the first with RocksDB state, the others in memory).
        timeout_s: Seconds before the run fails.

    Returns:
        Each query's stats.
    """
    queries = [
        StreamingQuery(plan, store_factory_for(plan, "rocksdb" if i == 0 else "memory"))
        for i in range(workers)
    ]
    return list(await asyncio.wait_for(asyncio.gather(*(q.run() for q in queries)), timeout_s))

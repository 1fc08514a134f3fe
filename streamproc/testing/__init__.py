"""Running streamproc queries without a broker or a database: in-memory adapters.

The same `StreamingQuery` that runs against Kafka and PostgreSQL runs here
over a `MemorySource` and a `MemoryCheckpoint` (Kafka Streams'
TopologyTestDriver and Bytewax's TestingSource are the models):

    topic = MemoryTopic("events", partitions=2)
    db = MemoryDatabase()
    query = StreamingQuery(plan, memory_store_factory,
                           ports=memory_ports(plan, MemorySource(topic), db))
    await query.run()            # availablenow: until the topic's end
    db.table_rows(plan.table)
"""

from __future__ import annotations

from streamproc.runtime.plan import QueryPlan
from streamproc.runtime.routers import bad_router, late_router
from streamproc.runtime.wiring import QueryPorts, plan_identity
from streamproc.testing.checkpoint import (
    MemoryCheckpoint,
    MemoryDatabase,
    MemoryTableSink,
    RefusedError,
    typed_key,
)
from streamproc.testing.messages import MemoryMessages
from streamproc.testing.source import MemoryGroup, MemorySource, MemoryTopic

__all__ = [
    "MemoryCheckpoint",
    "MemoryDatabase",
    "MemoryGroup",
    "MemoryMessages",
    "MemorySource",
    "MemoryTableSink",
    "MemoryTopic",
    "RefusedError",
    "memory_ports",
    "typed_key",
]


def memory_ports(
    plan: QueryPlan,
    source: MemorySource,
    db: MemoryDatabase,
    dead_letters: MemoryMessages | None = None,
) -> QueryPorts:
    """In-memory adapters for a plan: its table, late and dead-letter tables live in db.

    Dead letters (sendtodlq, dlqType kafka) go to `dead_letters` when given.
    """
    sink = MemoryTableSink(db, plan.table or plan.sink_topic or plan.query_name)
    checkpoint = MemoryCheckpoint(
        db,
        identity=plan_identity(plan),
        spec=plan.spec,
        sink=sink,
        late_table=plan.late_table if plan.late_strategy == "separatestream" else None,
        dlq_table=plan.dlq_table,
    )
    return QueryPorts(source, checkpoint, sink, late_router(plan), bad_router(plan), dead_letters)

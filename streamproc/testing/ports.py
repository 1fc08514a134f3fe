"""The in-memory adapters of a plan, as `QueryPorts` for a `StreamingQuery`."""

from __future__ import annotations

from streamproc.runtime.plan import QueryPlan
from streamproc.runtime.routers import bad_router, late_router
from streamproc.runtime.wiring import QueryPorts, plan_identity
from streamproc.sources.base import Source
from streamproc.sources.position import where_of
from streamproc.testing.checkpoint import MemoryCheckpoint
from streamproc.testing.database import MemoryDatabase
from streamproc.testing.messages import MemoryMessages
from streamproc.testing.table_sink import MemoryTableSink


def memory_ports(
    plan: QueryPlan,
    source: Source,
    db: MemoryDatabase,
    dead_letters: MemoryMessages | None = None,
) -> QueryPorts:
    """In-memory adapters for a plan: its table and late table live in db.

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
    where = where_of(source.positions)
    late, bad = late_router(plan, where), bad_router(plan, where)
    return QueryPorts(source, checkpoint, sink, late, bad, dead_letters)

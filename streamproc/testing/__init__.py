"""Running streamproc queries without a broker or a database: in-memory adapters.

For a user's own tests, `run_pipeline(config, records)` runs a pipeline
config over a list of records and returns the result rows, the late and bad
records and the counts (`streamproc.testing.pipeline`; PYTHON-API.md,
"Testing one's own pipeline"). Underneath, and for tests that script
rebalances or outages:

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

from streamproc.testing.checkpoint import MemoryCheckpoint
from streamproc.testing.database import MemoryDatabase, RefusedError, typed_key
from streamproc.testing.messages import MemoryMessages
from streamproc.testing.pipeline import (
    BadOutput,
    InputRecord,
    LateOutput,
    PipelineResult,
    RunCounts,
    run_pipeline,
    run_pipeline_async,
)
from streamproc.testing.ports import memory_ports
from streamproc.testing.source import MemoryGroup, MemorySource, MemoryTopic
from streamproc.testing.table_sink import MemoryTableSink

__all__ = [
    "BadOutput",
    "InputRecord",
    "LateOutput",
    "MemoryCheckpoint",
    "MemoryDatabase",
    "MemoryGroup",
    "MemoryMessages",
    "MemorySource",
    "MemoryTableSink",
    "MemoryTopic",
    "PipelineResult",
    "RefusedError",
    "RunCounts",
    "memory_ports",
    "run_pipeline",
    "run_pipeline_async",
    "typed_key",
]

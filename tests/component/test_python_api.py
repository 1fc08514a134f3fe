"""The Python API of PYTHON-API.md: a query from a dict, run in one's own loop.

The steps are the documented ones (load_config on a dict, plan_from_config,
StreamingQuery, request_stop, recent_progress); only the ports are the
in-memory ones, so that no broker or PostgreSQL is needed.
"""

from __future__ import annotations

import asyncio

from streamproc.config import load_config
from streamproc.runtime.planner import plan_from_config
from streamproc.runtime.query import StreamingQuery
from streamproc.state import memory_store_factory
from streamproc.testing import MemoryDatabase, MemorySource, MemoryTopic, memory_ports
from tests.component.test_run_pipeline import config, event
from tests.waiting import wait_until


async def test_a_continuous_query_runs_in_the_callers_loop_until_asked_to_stop() -> None:
    document = config(output_mode="update")
    document["streamingConfigJson"]["triggerMode"] = "continuous"
    cfg = load_config(document)
    plan = plan_from_config(cfg)
    assert plan.trigger == "continuous" and plan.query_name == "user-event-counts"
    topic = MemoryTopic(plan.topic, 1)
    db = MemoryDatabase()
    query = StreamingQuery(
        plan, memory_store_factory, ports=memory_ports(plan, MemorySource(topic), db)
    )
    running = asyncio.create_task(query.run())
    await query.wait_until_assigned()
    for minute in (1, 2, 3):
        topic.produce_json(0, event("u1", minute))

    async def all_read() -> bool:
        return sum(p.input_rows for p in query.recent_progress) == 3

    await wait_until(all_read, "three records committed", timeout=30)
    query.request_stop()
    stats = await asyncio.wait_for(running, 30)
    assert stats.records == 3
    last = query.last_progress
    assert last is not None and last.to_dict()["name"] == "user-event-counts"
    assert plan.table is not None
    assert [row.values for row in db.table_rows(plan.table)] == [(3, 3)]

"""A member of a bounded run whose group join the broker never answers.

On the local broker, a worker that joined a bounded run while another finished
it (and left the group) waited for its assignment for ever: the JoinGroup was
never answered. The run was complete all along; the waiting member must see
that in the checkpoint and end as a finished run (exit 0), having read nothing.
"""

from __future__ import annotations

import asyncio

import pytest

from streamproc.commands.run import exit_status
from streamproc.runtime import run_end as run_end_module
from streamproc.sources.base import PartitionListener
from streamproc.testing import MemoryDatabase, MemoryGroup, MemorySource
from tests.component.harness import fill_topic, make_plan, new_query, table_of
from tests.reference import Query, assert_tables_equal, expected
from tests.streams import AGGS, MINUTE, make_stream

QUERY = Query(("user_id",), AGGS, delay_ms=5 * MINUTE, size_ms=10 * MINUTE, output_mode="update")


class UnansweredJoin(MemorySource):
    """Joins a group that never assigns it anything (not even an empty assignment)."""

    async def start(self, listener: PartitionListener, *, early: bool = False) -> None:
        """Send the join; no answer ever comes (and no early read either)."""

    async def stop(self) -> None:
        """Nothing to leave."""


async def test_a_member_whose_join_is_never_answered_ends_when_the_run_completes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(run_end_module, "JOIN_POLL_S", 0.05)
    stream = make_stream(600, seed=8)
    topic = fill_topic(stream)
    db = MemoryDatabase()
    plan = make_plan(QUERY, max_records_per_trigger=50)
    waiting = new_query(plan, UnansweredJoin(topic, MemoryGroup(topic)), db)
    waiting_run = asyncio.ensure_future(waiting.run())
    try:
        # It begins the bounded run (and its end offsets), then waits to be assigned.
        while waiting.stats.run_id is None:
            assert not waiting_run.done(), waiting_run.result()
            await asyncio.sleep(0.01)
        # Another worker joins that run, owns every partition and finishes it.
        finisher = await asyncio.wait_for(new_query(plan, MemorySource(topic), db).run(), 30)
        stats = await asyncio.wait_for(waiting_run, 30)
    finally:
        waiting_run.cancel()
    assert finisher.run_id == stats.run_id and finisher.run_complete
    assert finisher.records == sum(len(r) for r in stream.values())
    assert (stats.records, stats.batches, stats.run_complete) == (0, 0, True)
    assert exit_status(plan, stats) == 0
    assert_tables_equal(table_of(db, plan), expected(QUERY, stream).table)

"""Rebalances at exact points, zombies and end offsets, through the whole runtime in memory."""

from __future__ import annotations

import asyncio
import itertools

from streamproc.testing import MemoryDatabase, MemoryGroup, MemorySource
from tests.component.harness import fill_topic, make_plan, new_query, table_of
from tests.reference import Query, assert_tables_equal, expected
from tests.streams import AGGS, MINUTE, make_stream

QUERY = Query(
    ("user_id",),
    AGGS,
    delay_ms=5 * MINUTE,
    size_ms=10 * MINUTE,
    slide_ms=5 * MINUTE,
    output_mode="update",
)


async def test_records_fetched_across_a_rebalance_are_fetched_again_not_lost() -> None:
    stream = make_stream(1_200, seed=21)
    topic = fill_topic(stream)
    db = MemoryDatabase()
    plan = make_plan(QUERY, max_records_per_trigger=120)
    group = MemoryGroup(topic)
    a, b = MemorySource(topic, group), MemorySource(topic, group)
    qa, qb = new_query(plan, a, db), new_query(plan, b, db)
    # During A's third fetch (mid-batch: its collect loop is still going), the
    # group moves partitions around: what A fetched before is stale.
    a.at_fetch(3, lambda: group.assign({a: {1, 2}, b: {0, 3}}))
    stats = await asyncio.wait_for(asyncio.gather(qa.run(), qb.run()), 30)
    assert sum(s.records for s in stats) == 1_200
    assert a.fetches >= 3
    assert_tables_equal(table_of(db, plan), expected(QUERY, stream).table)


async def test_a_zombie_owner_finds_its_batch_stale_and_replays() -> None:
    # Two members both believe they own partitions 0 and 1 (one of them a
    # zombie the group already replaced): their commits race, the ledger
    # check makes exactly one of each pair count.
    stream = make_stream(1_000, seed=4)
    topic = fill_topic(stream)
    db = MemoryDatabase()
    plan = make_plan(QUERY, max_records_per_trigger=60)
    group = MemoryGroup(topic)
    a, b = MemorySource(topic, group), MemorySource(topic, group)
    qa, qb = new_query(plan, a, db), new_query(plan, b, db)
    a.at_fetch(1, lambda: group.assign({a: {0, 1, 2, 3}, b: {0, 1}}))
    stats = await asyncio.wait_for(asyncio.gather(qa.run(), qb.run()), 30)
    assert sum(s.stale_batches for s in stats) >= 1
    ledger = db.ledger_rows(plan.query_name, plan.topic)
    for p in range(4):
        spans = [(r.start_offset, r.next_offset) for r in ledger if r.partition == p]
        assert spans[0][0] == 0 and all(x[1] == y[0] for x, y in itertools.pairwise(spans))
        assert spans[-1][1] == len(stream[p])
    assert_tables_equal(table_of(db, plan), expected(QUERY, stream).table)

"""Exactly once while things change (issue 8), in memory: bounded runs that cover the
whole query, a changed definition, a re-created topic, added partitions, shared tables,
deleted ledger rows, and group values of mixed JSON types.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from streamproc.engine import AggSpec, QuerySpec, WindowSpec
from streamproc.runtime.failure_kinds import QueryFailedError
from streamproc.testing import MemoryDatabase, MemoryGroup, MemorySource, MemoryTopic
from tests.component.harness import TOPIC, fill_topic, make_plan, new_query, table_of
from tests.reference import Query, assert_tables_equal, expected
from tests.streams import AGGS, MINUTE, make_stream
from tests.waiting import wait_until

QUERY = Query(("user_id",), AGGS, delay_ms=5 * MINUTE, size_ms=10 * MINUTE, output_mode="update")
APPEND = replace(QUERY, output_mode="append")


async def test_a_bounded_run_waits_for_partitions_a_live_worker_owns() -> None:
    # A continuous worker owns half the topic; a bounded worker of the same
    # query must not end when its own half is done.
    stream = make_stream(1_000, seed=31)
    topic = fill_topic(stream)
    db = MemoryDatabase()
    plan = make_plan(QUERY, max_records_per_trigger=100)
    group = MemoryGroup(topic)
    live = new_query(replace(plan, trigger="continuous"), MemorySource(topic, group), db)
    live_run = asyncio.ensure_future(live.run())
    await live.wait_until_assigned()
    bounded = new_query(plan, MemorySource(topic, group), db)
    stats = await asyncio.wait_for(bounded.run(), 30)
    assert stats.run_complete and stats.run_id == 1
    assert stats.partitions and stats.partitions != {0, 1, 2, 3}  # its share only
    ledger = db.ledger_rows(plan.query_name, plan.topic)
    assert sum(r.records for r in ledger) == 1_000  # the whole query, by both workers
    live.request_stop()
    await asyncio.wait_for(live_run, 30)
    assert_tables_equal(table_of(db, plan), expected(QUERY, stream).table)


async def test_a_bounded_run_alone_reads_past_a_dead_member_without_joining_its_group() -> None:
    # A member that died (kill -9) holds its partitions in the group until its
    # session expires, but no claim on the query: a bounded run that begins alone
    # reads every partition outside the group and never joins it, so it neither
    # waits for that session nor leaves a join pending behind it.
    stream = make_stream(800, seed=32)
    topic = fill_topic(stream)
    db = MemoryDatabase()
    plan = make_plan(QUERY)
    group = MemoryGroup(topic)

    class Dead:
        async def on_assigned(self, partitions: set[int]) -> None: ...
        async def on_revoked(self, partitions: set[int]) -> None: ...

    dead = MemorySource(topic, group)
    await dead.start(Dead())  # owns all four partitions, never fetches
    source = MemorySource(topic, group)
    stats = await asyncio.wait_for(new_query(plan, source, db).run(), 30)
    assert stats.run_complete and stats.records == 800
    assert stats.partitions == {0, 1, 2, 3}
    assert group.members == [dead]  # it never joined
    assert_tables_equal(table_of(db, plan), expected(QUERY, stream).table)


async def test_two_bounded_workers_started_together_both_end_when_the_query_is_done() -> None:
    stream = make_stream(1_200, seed=33)
    topic = fill_topic(stream)
    db = MemoryDatabase()
    plan = make_plan(QUERY, max_records_per_trigger=50)
    group = MemoryGroup(topic)
    a, b = (new_query(plan, MemorySource(topic, group), db) for _ in range(2))
    first, second = await asyncio.wait_for(asyncio.gather(a.run(), b.run()), 30)
    assert first.run_id == second.run_id == 1
    assert first.run_complete and second.run_complete
    assert first.records + second.records == 1_200
    assert_tables_equal(table_of(db, plan), expected(QUERY, stream).table)


async def test_records_arriving_after_a_bounded_run_began_wait_for_the_next_run() -> None:
    stream = make_stream(400, seed=34)
    topic = fill_topic(stream)
    db = MemoryDatabase()
    plan = make_plan(QUERY)
    query = new_query(plan, MemorySource(topic), db)

    async def more() -> None:
        await asyncio.sleep(0)
        for i in range(50):
            topic.produce_json(i % 4, {**stream[0][0], "seq": 10_000 + i})

    extra = asyncio.ensure_future(more())
    stats = await query.run()
    await extra
    assert stats.records == 400
    stats = await new_query(plan, MemorySource(topic), db).run()
    assert stats.records == 50 and stats.run_id == 2


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"aggregations": (("value_max", "value", "max"),)}, "aggregations changed from"),
        ({"group_by": ("seq",)}, "group-by changed from [user_id] to [seq]"),
        ({"size_ms": 5 * MINUTE}, "window changed from"),
        ({"output_mode": "complete"}, "output mode changed from update to complete"),
    ],
)
async def test_a_changed_definition_stops_with_what_changed(
    change: dict[str, object], words: str
) -> None:
    stream = make_stream(300, seed=35)
    db = MemoryDatabase()
    plan = make_plan(QUERY)
    await new_query(plan, MemorySource(fill_topic(stream)), db).run()
    changed = make_plan(replace(QUERY, **change))  # type: ignore[arg-type]
    with pytest.raises(
        QueryFailedError, match="its checkpoint was made by another definition"
    ) as e:
        await new_query(changed, MemorySource(fill_topic(stream)), db).run()
    assert words in str(e.value) and "streamproc reset" in str(e.value)
    db.reset(plan.query_name, drop_table=plan.table)
    stats = await new_query(changed, MemorySource(fill_topic(stream)), db).run()
    assert stats.records == 300  # after a reset the new definition starts from scratch


async def test_a_changed_topic_stops_and_settings_that_cannot_change_results_do_not() -> None:
    stream = make_stream(300, seed=36)
    db = MemoryDatabase()
    plan = make_plan(QUERY)
    await new_query(plan, MemorySource(fill_topic(stream)), db).run()
    other = MemoryTopic("other", 4)
    with pytest.raises(QueryFailedError, match="source topic changed from events to other"):
        await new_query(replace(plan, topic="other"), MemorySource(other), db).run()
    tuned = replace(plan, max_records_per_trigger=7, trigger="once", fail_fast=True)
    await new_query(tuned, MemorySource(fill_topic(stream)), db).run()


async def test_a_recreated_topic_is_never_skipped() -> None:
    stream = make_stream(400, seed=37)
    topic = fill_topic(stream)
    db = MemoryDatabase()
    plan = make_plan(QUERY)
    await new_query(plan, MemorySource(topic), db).run()
    topic.recreate()
    for p, records in stream.items():  # as many records as before, or fewer
        for record in records[: len(records) // 2]:
            topic.produce_json(p, record)
    with pytest.raises(QueryFailedError, match=r"ends at offset \d+, below the checkpoint's next"):
        await new_query(plan, MemorySource(topic), db).run()
    for p, records in stream.items():  # now longer than before: offsets alone would pass
        for record in records:
            topic.produce_json(p, {**record, "seq": -1})
    with pytest.raises(QueryFailedError, match=r"is not the one this query committed"):
        await new_query(plan, MemorySource(topic), db).run()


async def test_records_deleted_before_they_were_read_stop_the_query() -> None:
    stream = make_stream(400, seed=38)
    topic = fill_topic(stream)
    db = MemoryDatabase()
    plan = make_plan(QUERY)
    await new_query(plan, MemorySource(topic), db).run()
    for p in range(4):
        for _ in range(10):
            topic.produce_json(p, stream[p][-1])
        topic.delete_before(p, topic.end_offset(p) - 2)
    with pytest.raises(QueryFailedError, match=r"were deleted \(retention\) before this query"):
        await new_query(plan, MemorySource(topic), db).run()


async def test_a_second_query_cannot_write_the_first_ones_table() -> None:
    stream = make_stream(200, seed=39)
    db = MemoryDatabase()
    plan = make_plan(QUERY)
    await new_query(plan, MemorySource(fill_topic(stream)), db).run()
    intruder = replace(plan, query_name="intruder", pipeline_id="intruder")
    with pytest.raises(QueryFailedError, match=f"table {plan.table} belongs to query q"):
        await new_query(intruder, MemorySource(fill_topic(stream)), db).run()


async def test_a_deleted_ledger_row_stops_the_query_instead_of_applying_a_batch_twice() -> None:
    stream = make_stream(300, seed=40)
    topic = fill_topic(stream)
    db = MemoryDatabase()
    plan = make_plan(QUERY, max_records_per_trigger=50)
    await new_query(plan, MemorySource(topic), db).run()
    db.ledger[(plan.query_name, TOPIC, 1)].pop()
    with pytest.raises(QueryFailedError, match=r"partition 1 of events: its ledger ends at offset"):
        await new_query(plan, MemorySource(topic), db).run()


async def test_a_partition_added_while_running_is_consumed_and_closed_windows_stay_closed() -> None:
    # Append mode: windows closed before partition 2 existed must never be
    # written again; its records for them are late ("window closed").
    spec_query = APPEND
    topic = MemoryTopic(TOPIC, 2)
    db = MemoryDatabase()
    plan = make_plan(spec_query, trigger="processingtime", trigger_interval_ms=20)
    group = MemoryGroup(topic)
    query = new_query(plan, MemorySource(topic, group), db)
    running = asyncio.ensure_future(query.run())
    base = 1_764_151_200_000
    for p in range(2):  # windows 10:00 and 10:10 close (W = 10:30 - 5 min)
        for minute in (1, 12, 30):
            topic.produce_json(
                p, {"user_id": "u", "event_time": base + minute * MINUTE, "value": 1}
            )
    await wait_until(
        lambda: sum(r.records for r in db.ledger_rows("q", TOPIC)) == 6, "6 records", 10, 0.01
    )
    closed_before = dict(table_of(db, plan))
    assert len(closed_before) == 2
    topic.add_partitions(1)
    await group.rebalance()  # the metadata refresh: the group sees partition 2
    topic.produce_json(2, {"user_id": "u", "event_time": base + 3 * MINUTE, "value": 1})
    topic.produce_json(2, {"user_id": "u", "event_time": base + 31 * MINUTE, "value": 1})
    await wait_until(
        lambda: sum(r.records for r in db.ledger_rows("q", TOPIC)) == 8, "8 records", 10, 0.01
    )
    query.request_stop()
    stats = await asyncio.wait_for(running, 30)
    ledger = db.ledger_rows("q", TOPIC)
    assert {r.partition for r in ledger} == {0, 1, 2}
    assert sum(r.late for r in ledger if r.partition == 2) == 1  # the 10:03 record
    assert {k: v for k, v in table_of(db, plan).items() if k in closed_before} == closed_before
    assert stats.late_summary.count == 1


async def test_group_values_keep_their_json_type() -> None:
    spec = QuerySpec(
        group_by=("user_id",),
        aggregations=(AggSpec("count", None, "count"),),
        output_mode="update",
        event_time_column="event_time",
        delay_ms=5 * MINUTE,
        window=WindowSpec(10 * MINUTE, 10 * MINUTE),
    )
    plan = replace(make_plan(QUERY), spec=spec)
    topic = MemoryTopic(TOPIC, 1)
    base = 1_764_151_200_000
    users = [1, "1", True, "true", 1.0, 1, "1", None, "null", 1.5]
    for i, user in enumerate(users):
        topic.produce_json(0, {"user_id": user, "event_time": base + i})
    db = MemoryDatabase()
    await new_query(plan, MemorySource(topic), db).run()
    got = {
        (type(r.key[0]).__name__, r.key[0]): r.values[0] for r in db.table_rows(plan.table or "")
    }
    assert got == {
        ("int", 1): 3,
        ("str", "1"): 2,
        ("bool", True): 1,
        ("str", "true"): 1,
        ("NoneType", None): 1,
        ("str", "null"): 1,
        ("float", 1.5): 1,
    }

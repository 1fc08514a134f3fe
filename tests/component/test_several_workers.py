"""Several workers of one query at the moments that lost contributions or hung (issue 17).

Each test scripts, on the in-memory source and checkpoint, a sequence met by
worker processes started together on the real broker:

- an early start reading every partition outside the group while a member the
  group answered commits some of them: the early worker's rows, merged from its
  own view of every partition, must never overwrite that member's contribution;
- a batch in flight, merged locally, while the partitions it does not carry move;
- a commit that fails (a deadlock) after its batch brought partitions to the run's
  end: the partitions are fetched again from the ledger, never left paused.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from streamproc.runtime import run_end as run_end_module
from streamproc.testing import MemoryDatabase, MemoryGroup, MemorySource
from tests.component.harness import fill_topic, make_plan, new_query, table_of
from tests.reference import Query, assert_tables_equal, expected
from tests.streams import AGGS, BASE_MS, MINUTE

QUERY = Query(("user_id",), AGGS, delay_ms=5 * MINUTE, size_ms=10 * MINUTE, output_mode="update")
#: Rows merged locally by a worker owning every partition, in each shape that does so.
LOCAL_MERGES = {
    "update_windowed": QUERY,
    "update_nonwindowed": Query(("user_id",), AGGS, output_mode="update"),
    "complete_windowed": Query(
        ("user_id",), AGGS, delay_ms=5 * MINUTE, size_ms=10 * MINUTE, output_mode="complete"
    ),
}


class Deadlock(Exception):
    """What asyncpg raises when PostgreSQL breaks a deadlock (an outage: retried)."""

    sqlstate = "40P01"


def shared_keys_stream(per_partition: int = 100) -> dict[int, list[dict[str, Any]]]:
    """Partitions 0 and 2 share users s0..s24, partitions 1 and 3 users t0..t24.

    Every user has records in two partitions of the same windows, as when message
    keys are unrelated to users: a result row merges two partitions' states.
    """
    stream: dict[int, list[dict[str, Any]]] = {}
    for p in range(4):
        prefix = "s" if p % 2 == 0 else "t"
        stream[p] = [
            {
                "user_id": f"{prefix}{i % 25}",
                "event_time": BASE_MS + i * 3_000 + p * 100,
                "value": float(p * 1_000 + i),
                "seq": p * 10_000 + i,
            }
            for i in range(per_partition)
        ]
    return stream


async def wait_for(condition: Any, timeout_s: float = 10.0) -> None:
    async def poll() -> None:
        while not condition():
            await asyncio.sleep(0.001)

    await asyncio.wait_for(poll(), timeout_s)


def position(db: MemoryDatabase, query: str, partition: int) -> int | None:
    pos = db.positions.get((query, partition))
    return None if pos is None else pos.next_offset


@pytest.mark.parametrize("query", LOCAL_MERGES.values(), ids=LOCAL_MERGES.keys())
async def test_an_early_start_never_overwrites_what_a_member_of_the_group_committed(
    query: Query,
) -> None:
    # A begins a bounded run alone and reads every partition outside the group
    # while its join is pending; the group answers B first and gives it partitions
    # 2 and 3, which B commits in full. A's first batches carry partition 0 only,
    # with rows merged from its own (empty) view of partition 2: written, they
    # would replace B's contribution to every user of partition 2.
    stream = shared_keys_stream()
    topic = fill_topic(stream)
    db = MemoryDatabase()
    plan = make_plan(query, max_records_per_trigger=50)
    group = MemoryGroup(topic)
    a, b = MemorySource(topic, group), MemorySource(topic, group)
    group.hold(a)
    qa, qb = new_query(plan, a, db), new_query(plan, b, db)
    name = plan.query_name

    async def after_b_committed_its_share() -> None:
        await wait_for(lambda: position(db, name, 2) == 100 and position(db, name, 3) == 100)

    a.at_fetch(1, after_b_committed_its_share)
    b.at_fetch(1, lambda: group.assign({b: {2, 3}}))
    run_a = asyncio.ensure_future(qa.run())
    await wait_for(lambda: a.assignment() == {0, 1, 2, 3})  # began the run, early
    run_b = asyncio.ensure_future(qb.run())
    stats = await asyncio.wait_for(asyncio.gather(run_a, run_b), 30)

    assert a.early  # never answered: A read every partition outside the group throughout
    assert stats[0].stale_batches >= 1
    assert_tables_equal(table_of(db, plan), expected(query, stream).table)


async def test_a_locally_merged_batch_in_flight_is_stale_when_a_partition_it_lacks_moved() -> None:
    # A begins alone (early, every partition) and sends its first batch: partition 0
    # only, with rows merged from every partition's state. While that commit is in
    # flight, the group answers B, gives it partition 2, and B commits all of it.
    # A's batch must not land: its rows lack B's records of partition 2.
    stream = shared_keys_stream()
    topic = fill_topic(stream)
    db = MemoryDatabase()
    plan = make_plan(QUERY, max_records_per_trigger=50)
    group = MemoryGroup(topic)
    a, b = MemorySource(topic, group), MemorySource(topic, group)
    group.hold(a)
    qa, qb = new_query(plan, a, db), new_query(plan, b, db)
    name = plan.query_name
    b.at_fetch(1, lambda: group.assign({b: {2}}))
    runs: list[asyncio.Future[Any]] = []

    async def b_commits_partition_2_meanwhile() -> None:
        runs.append(asyncio.ensure_future(qb.run()))
        await wait_for(lambda: position(db, name, 2) == 100)

    db.before_commit[0] = b_commits_partition_2_meanwhile
    stats_a = await asyncio.wait_for(qa.run(), 30)
    stats_b = await asyncio.wait_for(runs[0], 30)

    assert stats_a.stale_batches >= 1
    assert stats_b.records == 100  # all of partition 2, none of the others
    assert_tables_equal(table_of(db, plan), expected(QUERY, stream).table)


async def test_a_failed_commit_that_reached_the_end_fetches_its_partitions_again() -> None:
    # A's second batch brings every partition to the run's end; the first batch's
    # commit then pauses them (their next offsets reached the end). The second
    # batch's commit fails (a deadlock, retried until the retries run out): its
    # partitions are sought back to the ledger and must be fetched again. A pause
    # outlives a seek, as in Kafka; a partition left paused was never read again
    # and the run never ended.
    stream = shared_keys_stream(per_partition=30)
    topic = fill_topic(stream)
    db = MemoryDatabase()
    plan = make_plan(QUERY, max_records_per_trigger=60)
    group = MemoryGroup(topic)
    a = MemorySource(topic, group)
    q = new_query(plan, a, db)

    def second_commit_fails() -> None:
        db.fail_commits.extend([Deadlock("deadlock detected")] * 2)

    db.before_commit[1] = second_commit_fails
    stats = await asyncio.wait_for(q.run(), 30)

    assert stats.run_complete
    assert {p: position(db, plan.query_name, p) for p in range(4)} == dict.fromkeys(range(4), 30)
    assert_tables_equal(table_of(db, plan), expected(QUERY, stream).table)


class RejoinNeverAnswered(MemorySource):
    """Once its partitions are revoked, acts as aiokafka does while its join is pending,
    and the broker never answers it: the old assignment is still reported, nothing is
    fetched, and no new assignment ever comes."""

    def __init__(self, topic: Any, group: MemoryGroup) -> None:
        super().__init__(topic, group)
        self.stuck: set[int] | None = None

    async def revoke_all(self) -> None:
        old = self.assignment()
        await super().revoke_all()
        if old:
            self.stuck = old

    def assignment(self) -> set[int]:
        return set(self.stuck) if self.stuck is not None else super().assignment()

    async def take(self, partitions: set[int]) -> None:
        if self.stuck is None:
            await super().take(partitions)

    async def fetch(self, max_records: int, timeout_ms: int) -> list[Any]:
        if self.stuck is not None:
            await asyncio.sleep(timeout_ms / 1000)
            return []
        return await super().fetch(max_records, timeout_ms)


async def test_a_worker_whose_rejoin_is_never_answered_ends_with_the_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Seen with four worker processes: a worker's partitions were revoked in a
    # rebalance, its join was never answered (the others had finished the run and
    # left), and it waited for ever on partitions it no longer had, although the run
    # was complete. A worker that fetches nothing asks the checkpoint, now and then,
    # whether the run is complete.
    # a begins the run alone and joins the group once it sees b: soon, and long
    # before its 1,600 records are read.
    monkeypatch.setattr(run_end_module, "RUN_POLL_S", 0.001)
    stream = shared_keys_stream(per_partition=400)
    topic = fill_topic(stream)
    db = MemoryDatabase()
    plan = make_plan(QUERY, max_records_per_trigger=20)
    group = MemoryGroup(topic)
    a = RejoinNeverAnswered(topic, group)
    b = MemorySource(topic, group)
    qa, qb = new_query(plan, a, db), new_query(plan, b, db)
    run_a = asyncio.ensure_future(qa.run())
    await wait_for(lambda: bool(a.assignment()))

    async def revoke_a() -> None:
        # a began the run alone (outside the group); it joins once b runs.
        await wait_for(lambda: a in group.members)
        await group.assign({b: {0, 1, 2, 3}})

    b.at_fetch(1, revoke_a)
    stats = await asyncio.wait_for(asyncio.gather(run_a, qb.run()), 30)
    assert a.stuck is not None  # its rejoin was pending when it ended
    assert all(s.run_complete for s in stats)
    assert_tables_equal(table_of(db, plan), expected(QUERY, stream).table)

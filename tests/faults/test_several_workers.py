"""Several worker processes of one query at the moments that lost data or hung (issue 17).

On the real broker and PostgreSQL, two worker processes meet as workers started
together did: the first begins a bounded run alone and reads every partition outside
the group (an early start) while its join is pending; the group's answer then moves
a partition to the second worker. The Kafka client ids order the group's members
(round-robin: the first gets partition 0, the second partition 1), and a gate holds
one of the first worker's commits in flight (tests/faults/worker.py) until the second
worker committed the moved partition:

- the first worker's batch in flight carries partition 0 only, with rows merged from
  its own view of every partition: it must be found stale, not overwrite what the
  second worker committed for the users partition 1 shares with partition 0;
- the first worker's batch in flight reached the end of both partitions (its earlier
  commit paused them) and comes back stale: the partition it keeps must be read again,
  not stay paused for ever (the run never ended).

Each run ends with the table equal, row by row, to the model (tests/reference.py).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from streamproc.local import create_topic
from tests.faults.harness import PipelineFactory, Worker, check_ledger, fault_query
from tests.kafka_io import produce
from tests.reference import assert_tables_equal, expected
from tests.results import read_table
from tests.streams import BASE_MS
from tests.waiting import wait_until

STALE = re.compile(r"stale batch for partitions \[([0-9, ]*)\]")
#: The first worker's session: its join waits about half of it (the local broker),
#: long enough for the second worker to start and join the same generation.
EARLY_SESSION_MS = 12_000


def record(user: str, i: int, seq: int) -> dict[str, Any]:
    return {"user_id": user, "event_time": BASE_MS + i * 500, "value": float(seq), "seq": seq}


async def position(pg: Any, query: str, partition: int) -> int | None:
    value: int | None = await pg.fetchval(
        "SELECT next_offset FROM streamproc_positions WHERE query = $1 AND partition = $2",
        query,
        partition,
    )
    return value


async def start_pair(config: Path, tmp_path: Path, gate: Path, nth: int) -> tuple[Worker, Worker]:
    """The gated first worker (early on every partition), then, once it began the run,
    the second."""
    first = Worker(
        config,
        tmp_path / "first.log",
        env={
            "STREAMPROC_TEST_CLIENT_ID": "aa-first",
            "STREAMPROC_TEST_GATE": str(gate),
            "STREAMPROC_TEST_GATE_COMMIT": str(nth),
        },
        session_timeout_ms=EARLY_SESSION_MS,
    )
    try:
        await first.wait_for("began bounded run")
    except BaseException:
        first.stop()
        raise
    return first, Worker(
        config, tmp_path / "second.log", env={"STREAMPROC_TEST_CLIENT_ID": "zz-second"}
    )


@pytest.mark.slow
async def test_an_early_batch_never_overwrites_a_partition_the_group_gave_another_worker(
    kafka_bootstrap: str, pg: Any, unique_name: str, tmp_path: Path, pipeline: PipelineFactory
) -> None:
    # Partition 0: users e0..e99 once each, then users f0..f99; partition 1: the same
    # users, its records newer in Kafka time, so the first worker's first batch (100
    # records, levelled by Kafka time) holds partition 0's e-users only. Nothing
    # touches an e-user's row after that batch: a row it overwrites stays wrong.
    p0 = [record(f"e{i}", i, i) for i in range(100)] + [
        record(f"f{i}", 100 + i, 100 + i) for i in range(100)
    ]
    p1 = [record(u["user_id"], i, 1_000 + i) for i, u in enumerate(p0)]
    stream = {0: p0, 1: p1}
    await create_topic(kafka_bootstrap, unique_name, 2)
    await produce(kafka_bootstrap, unique_name, {0: p0}, timestamp_ms=1_000_000)
    await produce(kafka_bootstrap, unique_name, {1: p1}, timestamp_ms=2_000_000)
    config = pipeline(trigger="availablenow", max_records=100).write(tmp_path)
    gate = tmp_path / "gate"
    gate.touch()
    first, second = await start_pair(config, tmp_path, gate, nth=1)
    try:
        await first.wait_for("test gate: commit 1 waits")
        await second.wait_for("assigned partitions [1]")
        # The second worker commits all of partition 1 while the first one's batch
        # (partition 0, merged from its view of both) is in flight.
        await wait_until(
            lambda: _at(pg, unique_name, 1, len(p1)), "partition 1 committed by the second", 60
        )
        gate.unlink()
        assert await first.finish(90) == 0, first.text()[-3000:]
        assert await second.finish(90) == 0, second.text()[-3000:]
    finally:
        first.stop()
        second.stop()
    stale = [[int(p) for p in m.split(",") if p.strip()] for m in STALE.findall(first.text())]
    assert [1] in stale, first.text()[-3000:]  # stale for the partition it did not carry
    await check_ledger(pg, unique_name, unique_name, {0: len(p0), 1: len(p1)})
    query = fault_query()
    assert_tables_equal(await read_table(pg, unique_name, query), expected(query, stream).table)


@pytest.mark.slow
async def test_a_partition_sought_back_after_a_stale_batch_that_reached_the_end_is_read_again(
    kafka_bootstrap: str, pg: Any, unique_name: str, tmp_path: Path, pipeline: PipelineFactory
) -> None:
    # Two batches of 200 (100 of each partition, level in Kafka time) reach the end of
    # both partitions. The first commit pauses both (the second batch, in flight, reached
    # the end); the second commit is held until the second worker committed partition 1,
    # so it comes back stale, and partition 0 is sought back to offset 100.
    p0 = [record(f"u{i % 30}", i, i) for i in range(200)]
    p1 = [record(f"u{i % 30}", i, 1_000 + i) for i in range(200)]
    stream = {0: p0, 1: p1}
    await create_topic(kafka_bootstrap, unique_name, 2)
    pairs = [(i % 2, (p0, p1)[i % 2][i // 2]) for i in range(400)]
    await produce(kafka_bootstrap, unique_name, pairs, timestamp_ms=1_000_000)
    config = pipeline(trigger="availablenow", max_records=200).write(tmp_path)
    gate = tmp_path / "gate"
    gate.touch()
    first, second = await start_pair(config, tmp_path, gate, nth=2)
    try:
        await first.wait_for("test gate: commit 2 waits")
        await second.wait_for("assigned partitions [1]")
        await wait_until(
            lambda: _at(pg, unique_name, 1, len(p1)), "partition 1 committed by the second", 60
        )
        gate.unlink()
        assert await first.finish(90) == 0, first.text()[-3000:]
        assert await second.finish(90) == 0, second.text()[-3000:]
    finally:
        first.stop()
        second.stop()
    assert "stale batch for partitions [1]" in first.text()
    await check_ledger(pg, unique_name, unique_name, {0: len(p0), 1: len(p1)})
    query = fault_query()
    assert_tables_equal(await read_table(pg, unique_name, query), expected(query, stream).table)


async def _at(pg: Any, query: str, partition: int, offset: int) -> bool:
    return await position(pg, query, partition) == offset

"""processingtime and continuous triggers emit while the stream is live."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import time
from pathlib import Path
from typing import Any

from streamproc.commands.run import store_factory_for
from streamproc.local import create_topic
from streamproc.runtime.query import StreamingQuery
from tests.integration.pipeline_helpers import make_plan
from tests.kafka_io import produce
from tests.reference import Query, assert_tables_equal, expected
from tests.results import ledger_records, read_table
from tests.streams import MINUTE, make_stream

QUERY = Query(
    ("user_id",),
    (("count", None, "count"), ("value_sum", "value", "sum")),
    delay_ms=5 * MINUTE,
    size_ms=10 * MINUTE,
    output_mode="update",
)


async def wait_for_table(pg: Any, table: str, want: dict[Any, Any], timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        got = await read_table(pg, table, QUERY)
        try:
            assert_tables_equal(got, want)
            return
        except AssertionError:
            if time.monotonic() > deadline:
                raise
        await asyncio.sleep(0.3)


async def run_live(
    trigger: str, interval_ms: int | None, bootstrap: str, dsn: str, pg: Any, name: str, tmp: Path
) -> list[Any]:
    await create_topic(bootstrap, name, 2)
    plan = make_plan(
        name=name,
        bootstrap=bootstrap,
        dsn=dsn,
        tmp=tmp,
        query=QUERY,
        trigger=trigger,
        interval_ms=interval_ms,
        max_records=None,
    )
    query = StreamingQuery(plan, store_factory_for(plan, "memory"))
    task = asyncio.ensure_future(query.run())
    try:
        await asyncio.wait_for(query.wait_until_assigned(), 30)
        stream = make_stream(900, partitions=2, seed=41)
        so_far: dict[int, list[Any]] = {0: [], 1: []}
        for phase in range(3):
            burst = {
                p: recs[phase * len(recs) // 3 : (phase + 1) * len(recs) // 3]
                for p, recs in stream.items()
            }
            await produce(bootstrap, name, burst)
            for p in burst:
                so_far[p] += burst[p]
            # The table catches up with every burst while the query keeps running.
            await wait_for_table(pg, name, expected(QUERY, so_far).table)
        assert not task.done()
    finally:
        query.request_stop()
        await asyncio.wait_for(task, 30)
    return list(
        await pg.fetch(
            "SELECT committed_at FROM streamproc_ledger WHERE query = $1 ORDER BY committed_at",
            name,
        )
    )


async def test_processingtime_emits_on_its_schedule_while_live(
    kafka_bootstrap: str, pg_dsn: str, pg: Any, unique_name: str, tmp_path: Path
) -> None:
    rows = await run_live(
        "processingtime", 1_000, kafka_bootstrap, pg_dsn, pg, unique_name, tmp_path
    )
    # A micro-batch every second: batches of one trigger share a commit, and two
    # triggers are never closer than the interval (minus scheduling slack).
    commits = sorted({r["committed_at"] for r in rows})
    assert len(commits) >= 3
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(commits)]
    # Commit start times; the slack covers the batch's own processing time.
    assert min(gaps) >= 0.8, gaps


async def test_continuous_emits_as_soon_as_records_are_ready(
    kafka_bootstrap: str, pg_dsn: str, pg: Any, unique_name: str, tmp_path: Path
) -> None:
    rows = await run_live("continuous", None, kafka_bootstrap, pg_dsn, pg, unique_name, tmp_path)
    assert len({r["committed_at"] for r in rows}) >= 3


async def test_latest_starts_after_every_record_already_there(
    kafka_bootstrap: str, pg_dsn: str, pg: Any, unique_name: str, tmp_path: Path
) -> None:
    # Produced in batches of many records: the broker's ListOffsets may answer the
    # last batch's base offset + 1 there (OPERATING.md, "The local stack"); a
    # `latest` start must still skip all of them.
    await create_topic(kafka_bootstrap, unique_name, 2)
    before = make_stream(1_000, partitions=2, seed=43)
    await produce(kafka_bootstrap, unique_name, before)
    plan = make_plan(
        name=unique_name,
        bootstrap=kafka_bootstrap,
        dsn=pg_dsn,
        tmp=tmp_path,
        query=QUERY,
        trigger="processingtime",
        interval_ms=200,
        max_records=None,
    )
    plan = dataclasses.replace(plan, starting_offsets="latest")
    query = StreamingQuery(plan, store_factory_for(plan, "memory"))
    task = asyncio.ensure_future(query.run())
    try:
        await asyncio.wait_for(query.wait_until_assigned(), 30)
        after = make_stream(200, partitions=2, seed=44)
        await produce(kafka_bootstrap, unique_name, after)
        await wait_for_table(pg, unique_name, expected(QUERY, after).table)
    finally:
        query.request_stop()
        stats = await asyncio.wait_for(task, 30)
    assert stats.records == 200
    assert await ledger_records(pg, unique_name) == 200

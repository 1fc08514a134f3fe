"""Output modes and window shapes, end to end on the real broker and PostgreSQL.

A known stream on a 4-partition topic whose message key is NOT the group key
runs with availablenow; every row of the result table is compared with the
independent model (tests/reference.py).

`tests/component/test_modes.py` runs all 8 mode x window cases through the same
runtime in memory (with both state stores) against the same model. What only the
real stack adds is the Kafka source and the PostgreSQL sink's SQL per output mode
and table layout, so 3 cases run here: each output mode once, and both table
layouts (windowed, non-windowed); the other tests of this file add tumbling append
(resume), tumbling update and sliding append (three workers) and sliding update
(Kafka sink).
"""

from __future__ import annotations

import dataclasses
import json
import zlib
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer

from streamproc.local import create_topic
from streamproc.sinks.rows import datetime_to_ms
from tests.integration.pipeline_helpers import make_plan, run_workers
from tests.kafka_io import produce
from tests.reference import assert_tables_equal, expected
from tests.results import read_table
from tests.streams import MODE_CASES, halves, make_stream

#: The cases run here: one per output mode, sliding and non-windowed among them.
REAL_STACK_CASES = ["append_sliding", "complete_tumbling", "update_nonwindowed"]


@pytest.mark.parametrize("case", REAL_STACK_CASES)
async def test_output_mode_matches_reference(
    case: str, kafka_bootstrap: str, pg_dsn: str, pg: Any, unique_name: str, tmp_path: Path
) -> None:
    query = MODE_CASES[case]
    stream = make_stream(1_500, seed=zlib.crc32(case.encode()) % 1000)
    await create_topic(kafka_bootstrap, unique_name, 4)
    await produce(kafka_bootstrap, unique_name, stream)
    plan = make_plan(
        name=unique_name, bootstrap=kafka_bootstrap, dsn=pg_dsn, tmp=tmp_path, query=query
    )

    [stats] = await run_workers(plan)

    want = expected(query, stream)
    got = await read_table(pg, unique_name, query)
    assert_tables_equal(got, want.table)
    assert stats.records == 1_500
    assert stats.late == len(want.late)
    assert stats.records == stats.aggregated + stats.late + stats.bad + stats.filtered
    ledger = await pg.fetch(
        "SELECT partition, max(next_offset) AS n, sum(records) AS r FROM streamproc_ledger "
        "WHERE query = $1 GROUP BY partition ORDER BY partition",
        unique_name,
    )
    assert {r["partition"]: r["n"] for r in ledger} == {p: len(s) for p, s in stream.items()}
    assert sum(r["r"] for r in ledger) == 1_500


@pytest.mark.parametrize("case", ["append_sliding", "update_tumbling"])
async def test_three_workers_equal_one(
    case: str, kafka_bootstrap: str, pg_dsn: str, pg: Any, unique_name: str, tmp_path: Path
) -> None:
    query = MODE_CASES[case]
    stream = make_stream(2_000, seed=11)
    tables = []
    for workers in (1, 3):
        name = f"{unique_name}_w{workers}"
        await create_topic(kafka_bootstrap, name, 4)
        await produce(kafka_bootstrap, name, stream)
        plan = make_plan(
            name=name,
            bootstrap=kafka_bootstrap,
            dsn=pg_dsn,
            tmp=tmp_path / str(workers),
            query=query,
            max_records=200,
        )
        stats = await run_workers(plan, workers=workers)
        assert sum(s.records for s in stats) == 2_000
        tables.append(await read_table(pg, name, query))
    assert_tables_equal(tables[1], tables[0])
    assert_tables_equal(tables[0], expected(query, stream).table)


async def test_resume_equals_one_clean_run(
    kafka_bootstrap: str, pg_dsn: str, pg: Any, unique_name: str, tmp_path: Path
) -> None:
    query = MODE_CASES["append_tumbling"]
    stream = make_stream(1_600, seed=5)
    first, second = halves(stream)
    await create_topic(kafka_bootstrap, unique_name, 4)
    plan = make_plan(
        name=unique_name, bootstrap=kafka_bootstrap, dsn=pg_dsn, tmp=tmp_path, query=query
    )
    await produce(kafka_bootstrap, unique_name, first)
    [s1] = await run_workers(plan)
    await produce(kafka_bootstrap, unique_name, second)
    [s2] = await run_workers(plan)
    assert s1.records + s2.records == 1_600
    got = await read_table(pg, unique_name, query)
    assert_tables_equal(got, expected(query, stream).table)


async def test_kafka_sink_delivers_rows_keyed_by_group_and_window(
    kafka_bootstrap: str, pg_dsn: str, unique_name: str, tmp_path: Path
) -> None:
    query = MODE_CASES["update_sliding"]
    stream = make_stream(1_200, seed=9)
    out_topic = f"{unique_name}_out"
    await create_topic(kafka_bootstrap, unique_name, 4)
    await create_topic(kafka_bootstrap, out_topic, 1)
    await produce(kafka_bootstrap, unique_name, stream)
    plan = dataclasses.replace(
        make_plan(
            name=unique_name, bootstrap=kafka_bootstrap, dsn=pg_dsn, tmp=tmp_path, query=query
        ),
        sink_type="kafka",
        table=None,
        sink_topic=out_topic,
    )
    await run_workers(plan)
    consumer = AIOKafkaConsumer(
        out_topic,
        bootstrap_servers=kafka_bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    latest: dict[Any, Any] = {}
    try:
        while batches := await consumer.getmany(timeout_ms=1_000):
            for records in batches.values():
                for r in records:
                    # Update mode: the newest message of a (key, window) is its row.
                    latest[json.loads(r.key)["user_id"], json.loads(r.key)["window_start"]] = (
                        json.loads(r.value)
                    )
    finally:
        await consumer.stop()
    got = {}
    for body in latest.values():
        start = datetime.fromisoformat(body["window_start"])
        end = datetime.fromisoformat(body["window_end"])
        key = (body["user_id"], datetime_to_ms(start), datetime_to_ms(end))
        got[key] = tuple(body[name] for name, _, _ in query.aggregations)
    assert_tables_equal(got, expected(query, stream).table)

"""A streaming pipeline without aggregation on the real broker and PostgreSQL.

Each record is one row of the table, keyed by its source position: compared
row by row with the produced records after a worker killed with -9 and a
finishing run, after a replay from the start (`reset` without
--drop-results), and into an existing table whose typed columns refuse a
value (that record goes to the dead-letter table, the others are written).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from streamproc.commands.reset_tables import reset_query
from streamproc.commands.run import store_factory_for
from streamproc.config import load_config
from streamproc.local import create_topic
from streamproc.runtime.plan import QueryPlan
from streamproc.runtime.planner import plan_from_config
from streamproc.runtime.query import StreamingQuery
from tests.component.test_passthrough import stream as stream_of
from tests.faults.harness import Worker
from tests.kafka_io import produce, read_topic
from tests.streams import BASE_MS, MINUTE

SESSION_MS = 3_000


def pipeline(name: str, bootstrap: str, dsn: str, tmp: Path, **streaming: Any) -> dict[str, Any]:
    """No transforms: each record is written as it is into table `name`."""
    return {
        "pipelineId": name,
        "mode": "streaming",
        "extract": {
            "sourceType": "kafka",
            "topic": name,
            "connectionParams": {
                "kafka.bootstrap.servers": bootstrap,
                "startingOffsets": "earliest",
            },
        },
        "load": {"sinkType": "postgresql", "table": name, "connectionParams": {"url": dsn}},
        "streamingConfigJson": {
            "checkpointLocation": str(tmp / "checkpoints"),
            "queryName": name,
            "outputMode": "append",
            "triggerMode": "availablenow",
            "maxRecordsPerTrigger": 150,
            "watermark": {"eventTimeColumn": "event_time", "delayThreshold": "1 minute"},
            **streaming,
        },
        "errorHandlingConfig": {"dlqConfig": {"dlqType": "postgresql"}},
    }


def plan_of(config: dict[str, Any]) -> QueryPlan:
    return plan_from_config(load_config(config, {}), env={})


async def run(plan: QueryPlan) -> Any:
    query = StreamingQuery(plan, store_factory_for(plan, "rocksdb"))
    return await asyncio.wait_for(query.run(), 120)


async def table_rows(pg: Any, table: str) -> dict[tuple[int, int], Any]:
    rows = await pg.fetch(f"SELECT source_partition, source_offset, record FROM {table}")
    got = {(r["source_partition"], r["source_offset"]): json.loads(r["record"]) for r in rows}
    assert len(got) == len(rows)  # the unique key holds; checked anyway
    return got


def positions(stream: dict[int, list[dict[str, Any]]]) -> dict[tuple[int, int], Any]:
    return {(p, o): r for p, rs in stream.items() for o, r in enumerate(rs)}


async def test_kill9_then_finish_then_replay_writes_each_record_once(
    kafka_bootstrap: str, pg_dsn: str, pg: Any, unique_name: str, tmp_path: Path
) -> None:
    stream = stream_of(3_000, 3, seed=7)
    await create_topic(kafka_bootstrap, unique_name, 3)
    await produce(kafka_bootstrap, unique_name, stream)
    slow = pipeline(
        unique_name,
        kafka_bootstrap,
        pg_dsn,
        tmp_path,
        triggerMode="processingtime=200 milliseconds",
        maxRecordsPerTrigger=100,
    )
    path = tmp_path / "slow.json"
    path.write_text(json.dumps(slow))
    worker = Worker(path, tmp_path / "worker.log", session_timeout_ms=SESSION_MS)
    try:
        await worker.wait_for("assigned partitions [0, 1, 2]")
        # Killed part-way: some batches committed, the rest not yet read.
        while await pg.fetchval(f"SELECT count(*) FROM {unique_name}") < 300:
            assert worker.alive(), worker.text()[-3000:]
            await asyncio.sleep(0.05)
        worker.kill9()
    finally:
        worker.stop()
    before = await pg.fetchval(f"SELECT count(*) FROM {unique_name}")
    assert 300 <= before < 3_000

    plan = plan_of(pipeline(unique_name, kafka_bootstrap, pg_dsn, tmp_path))
    stats = await run(plan)
    assert await table_rows(pg, unique_name) == positions(stream)
    assert stats.records == 3_000 - before  # the rest, and nothing committed twice
    assert stats.late == 0 and stats.bad == 0
    ledger = await pg.fetchrow(
        "SELECT sum(records) AS records, sum(aggregated) AS written FROM streamproc_ledger "
        "WHERE query = $1",
        unique_name,
    )
    assert (ledger["records"], ledger["written"]) == (3_000, 3_000)

    # A replay of everything (the checkpoint dropped, the table kept) adds no row.
    await reset_query(pg, unique_name)
    again = await run(plan)
    assert again.records == 3_000 and again.result_rows == 0
    assert await table_rows(pg, unique_name) == positions(stream)


async def test_an_existing_table_takes_fields_by_column_and_refuses_a_value_for_one_record(
    kafka_bootstrap: str, pg_dsn: str, pg: Any, unique_name: str, tmp_path: Path
) -> None:
    await pg.execute(
        f"""CREATE TABLE {unique_name} (
              id bigserial, user_id text NOT NULL, amount numeric,
              source_partition integer, source_offset bigint,
              loaded_at timestamptz DEFAULT now(),
              UNIQUE (source_partition, source_offset))"""
    )
    stream = {
        0: [
            {"user_id": "a", "amount": 1.5, "event_time": BASE_MS, "extra": 1},
            {"user_id": "b", "amount": "not a number", "event_time": BASE_MS},
            {"user_id": "c", "event_time": BASE_MS - 60 * MINUTE},
        ],
        1: [{"user_id": "d", "amount": 7, "event_time": BASE_MS}],
    }
    await create_topic(kafka_bootstrap, unique_name, 2)
    await produce(kafka_bootstrap, unique_name, stream)
    stats = await run(plan_of(pipeline(unique_name, kafka_bootstrap, pg_dsn, tmp_path)))

    rows = await pg.fetch(
        f"""SELECT source_partition, source_offset, user_id, amount::float8 AS amount,
                   loaded_at IS NOT NULL AS defaulted
            FROM {unique_name} ORDER BY source_partition, source_offset"""
    )
    assert [tuple(r) for r in rows] == [
        (0, 0, "a", 1.5, True),
        (0, 2, "c", None, True),
        (1, 0, "d", 7.0, True),
    ]
    letters = await pg.fetch(
        f"SELECT source_partition, source_offset, reason FROM {unique_name}_dlq"
    )
    assert [(r["source_partition"], r["source_offset"]) for r in letters] == [(0, 1)]
    assert "not a number" in letters[0]["reason"] or "numeric" in letters[0]["reason"]
    assert stats.records == 4 and stats.result_rows == 3


async def test_a_kafka_sink_gets_each_record_with_its_position(
    kafka_bootstrap: str, pg_dsn: str, unique_name: str, tmp_path: Path
) -> None:
    stream = stream_of(400, 2, seed=3)
    out = f"{unique_name}_out"
    await create_topic(kafka_bootstrap, unique_name, 2)
    await create_topic(kafka_bootstrap, out, 1)
    await produce(kafka_bootstrap, unique_name, stream)
    config = pipeline(unique_name, kafka_bootstrap, pg_dsn, tmp_path)
    config["load"] = {"sinkType": "kafka", "topic": out, "connectionParams": {"url": pg_dsn}}
    config["errorHandlingConfig"] = {"dlqConfig": {"dlqType": "logging"}}
    stats = await run(plan_of(config))

    messages = await read_topic(kafka_bootstrap, out)
    got = {m.source: json.loads(m.value) for m in messages}
    # one run without a failure delivers each record once (at-least-once in general)
    assert len(messages) == len(got) == 400
    assert got == positions(stream)
    assert {m.headers["source_topic"] for m in messages} == {unique_name}
    assert stats.records == 400 and stats.result_rows == 400

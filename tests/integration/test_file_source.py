"""The streaming file source against the real PostgreSQL, across restarts.

A directory is streamed from a pipeline config (the path `streamproc run`
takes): a first bounded run, then files added and a half-written line
finished, a second run (a restart), then a continuous worker picking up a
file that appears while it runs. The result table must equal the model's row
by row, the ledger must count every line once, and a second worker of the
same query is refused with one line.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import zlib
from pathlib import Path
from typing import Any

import pytest

from streamproc.commands.run import store_factory_for
from streamproc.config import load_config
from streamproc.runtime.planner import plan_from_config
from streamproc.runtime.query import QueryFailedError, StreamingQuery
from tests.component.filefeed import FileFeed
from tests.integration.cli_helpers import BIN, REPO
from tests.reference import Query, assert_tables_equal, expected
from tests.reference_sessions import assert_no_overlap, expected_sessions, one_phase
from tests.results import read_table
from tests.streams import MINUTE, make_stream

QUERY = Query(
    ("user_id",),
    (("n", None, "count"), ("value_sum", "value", "sum")),
    delay_ms=5 * MINUTE,
    size_ms=10 * MINUTE,
    output_mode="append",
)


def _config(name: str, directory: Path, dsn: str, tmp: Path, trigger: str) -> dict[str, Any]:
    return {
        "pipelineId": name,
        "mode": "streaming",
        "extract": {"sourceType": "file", "path": str(directory)},
        "transforms": [
            {
                "transformType": "aggregation",
                "parameters": {
                    "groupByColumns": "user_id",
                    "windowColumn": "event_time",
                    "windowDuration": "10 minutes",
                    "aggregations": "n=*:count,value_sum=value:sum",
                },
            }
        ],
        "load": {"sinkType": "postgresql", "table": name, "connectionParams": {"url": dsn}},
        "streamingConfigJson": {
            "checkpointLocation": str(tmp / "checkpoints"),
            "queryName": name,
            "outputMode": "append",
            "triggerMode": trigger,
            "maxRecordsPerTrigger": 150,
            "watermark": {"eventTimeColumn": "event_time", "delayThreshold": "5 minutes"},
        },
    }


def _query(name: str, directory: Path, dsn: str, tmp: Path, trigger: str) -> StreamingQuery:
    plan = plan_from_config(load_config(_config(name, directory, dsn, tmp, trigger)))
    assert plan.source_type == "file" and plan.starting_offsets == "earliest"
    return StreamingQuery(plan, store_factory_for(plan, "rocksdb"))


async def _ledger(pg: Any, name: str) -> tuple[int, int, int]:
    row = await pg.fetchrow(
        "SELECT count(*) AS batches, coalesce(sum(records), 0) AS records, "
        "coalesce(sum(bad), 0) AS bad FROM streamproc_ledger WHERE query = $1",
        name,
    )
    return int(row["batches"]), int(row["records"]), int(row["bad"])


async def test_a_directory_streamed_across_restarts_equals_the_model(
    pg_dsn: str, pg: Any, unique_name: str, tmp_path: Path
) -> None:
    name = unique_name
    records = sorted(
        (r for rs in make_stream(1_200, seed=zlib.crc32(b"files") % 97).values() for r in rs),
        key=lambda r: r["seq"],
    )
    feed = FileFeed(tmp_path / "in")
    feed.new_file("a.jsonl", records[:300])
    growing = feed.new_file("b.jsonl", [*records[300:450], "not json"])
    feed.append(growing, [], partial=b'{"user_id": "u3", "event_time": ')

    first = await asyncio.wait_for(
        _query(name, feed.directory, pg_dsn, tmp_path, "availablenow").run(), 120
    )
    assert (first.records, first.bad) == (451, 1)

    # A restart after the half-written line was finished, the file grew and files appeared.
    feed.finish_line(growing, b'"2025-11-26T10:05:00Z", "value": 7}\n', records[450:600])
    feed.new_file("c.jsonl.gz", records[600:900], gz=True)
    feed.new_file("d.jsonl", records[900:1_000])
    second = await asyncio.wait_for(
        _query(name, feed.directory, pg_dsn, tmp_path, "once").run(), 120
    )
    assert first.records + second.records == 1_002 == len(feed.records)

    # A continuous worker: a file that appears while it runs is read, once.
    worker = _query(name, feed.directory, pg_dsn, tmp_path, "continuous")
    running = asyncio.ensure_future(worker.run())
    try:
        await asyncio.wait_for(worker.wait_until_assigned(), 60)
        # A second worker of the same query is refused: one file source, one reader.
        with pytest.raises(QueryFailedError) as refused:
            await asyncio.wait_for(
                _query(name, feed.directory, pg_dsn, tmp_path, "continuous").run(), 60
            )
        assert "another worker is reading its file source" in str(refused.value)
        assert "\n" not in str(refused.value)
        feed.new_file("e.jsonl", records[1_000:])

        async def all_committed() -> None:
            while (await _ledger(pg, name))[1] < len(feed.records):
                assert not running.done(), running.result()
                await asyncio.sleep(0.2)

        await asyncio.wait_for(all_committed(), 120)
    finally:
        worker.request_stop()
        third = await asyncio.wait_for(running, 60)

    total = len(feed.records)
    assert total == 1_202
    assert first.records + second.records + third.records == total
    batches, counted, bad = await _ledger(pg, name)
    assert (counted, bad) == (total, 1)
    assert batches == first.batches + second.batches + third.batches
    files = await pg.fetch(
        "SELECT ordinal, path FROM streamproc_files WHERE query = $1 ORDER BY ordinal", name
    )
    assert [(r["ordinal"], Path(r["path"]).name) for r in files] == list(
        enumerate(["a.jsonl", "b.jsonl", "c.jsonl.gz", "d.jsonl", "e.jsonl"])
    )
    model = expected(QUERY, feed.stream())
    assert first.late + second.late + third.late == len(model.late)
    assert_tables_equal(await read_table(pg, name, QUERY), model.table)


async def test_the_faust_worker_streams_a_file_source_without_any_broker(
    pg_dsn: str, pg: Any, unique_name: str, tmp_path: Path
) -> None:
    # No broker runs at the default bootstrap (nothing here names one): the Faust
    # worker must not need one for a file source.
    records = sorted(
        (r for rs in make_stream(300, seed=5).values() for r in rs), key=lambda r: r["seq"]
    )
    feed = FileFeed(tmp_path / "in")
    feed.new_file("a.jsonl", records[:200])
    feed.new_file("b.jsonl", records[200:])
    config = tmp_path / "files.json"
    config.write_text(
        json.dumps(_config(unique_name, feed.directory, pg_dsn, tmp_path, "availablenow"))
    )
    done = subprocess.run(
        [str(BIN / "faust"), "-A", "agents.app", "worker", "-l", "info"],
        env=dict(os.environ, STREAMPROC_CONFIG=str(config)),
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,  # agents/ is not installed: the worker runs from the repository
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    assert (await _ledger(pg, unique_name))[1:] == (300, 0)
    assert_tables_equal(
        await read_table(pg, unique_name, QUERY), expected(QUERY, feed.stream()).table
    )


async def test_a_directory_streamed_in_session_windows_across_restarts_equals_the_model(
    pg_dsn: str, pg: Any, unique_name: str, tmp_path: Path
) -> None:
    # Session windows (update mode) over the file source: one reader holds its one
    # partition, so it closes its sessions itself (the commit function's path). A
    # restart mid-file, a file added and a line finished between runs: the table
    # equals the model's row by row and never holds two overlapping sessions of a key.
    name = unique_name
    records = sorted(
        (
            r
            for rs in make_stream(900, seed=zlib.crc32(b"sessions") % 97, users=30).values()
            for r in rs
        ),
        key=lambda r: r["seq"],
    )
    feed = FileFeed(tmp_path / "in")
    feed.new_file("a.jsonl", records[:400])
    growing = feed.new_file("b.jsonl", records[400:500])
    feed.append(growing, [], partial=b'{"user_id": "u3", "event_time": ')
    config = _config(name, feed.directory, pg_dsn, tmp_path, "availablenow")
    parameters = config["transforms"][0]["parameters"]
    del parameters["windowDuration"]
    parameters["gapDuration"] = "4 minutes"
    config["streamingConfigJson"]["outputMode"] = "update"

    async def run(trigger: str) -> Any:
        config["streamingConfigJson"]["triggerMode"] = trigger
        plan = plan_from_config(load_config(config))
        query = StreamingQuery(plan, store_factory_for(plan, "rocksdb"))
        return await asyncio.wait_for(query.run(), 120)

    first = await run("availablenow")
    feed.finish_line(growing, b'"2025-11-26T10:05:00Z", "value": 7}\n', records[500:700])
    feed.new_file("c.jsonl", records[700:])
    second = await run("availablenow")
    assert first.records + second.records == len(feed.records) == 901

    query = Query(QUERY.group_by, QUERY.aggregations, delay_ms=5 * MINUTE, output_mode="update")
    lines = [record for _, record in feed.stream()[0]]
    model = expected_sessions(query, 4 * MINUTE, [0], one_phase({0: lines}))
    table = await read_table(pg, name, query, sessions=True)
    assert_tables_equal(table, model.table)
    assert len(table) == len(model.table) > 30
    assert first.late + second.late == len(model.late)
    assert_no_overlap(table)

"""kill -9 of a file-source worker process at random instants while files grow, then a finish.

30,000 lines in files that appear and grow between the worker's lives (a line
half written when one life is killed, finished before a later one): each life
is killed with SIGKILL, during start-up or mid-run, and started again at once
(a file source has no group session to wait out; the killed worker's lock on
the query goes with its connection). An availablenow run then finishes. The
ledger must count every line exactly once, and the result table must equal
the independent model's.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import random
from pathlib import Path
from typing import Any

from tests.component.filefeed import FileFeed
from tests.faults.harness import Worker
from tests.integration.test_file_source import QUERY, _config
from tests.reference import assert_tables_equal, expected
from tests.results import ledger_records, read_table
from tests.streams import make_stream

RECORDS = 30_000
KILLS = 6
SEED = int(os.environ.get("STREAMPROC_FAULT_SEED", "20251126"))


async def test_a_file_source_killed_at_random_instants_reads_every_line_once(
    pg_dsn: str, pg: Any, unique_name: str, tmp_path: Path
) -> None:
    rng = random.Random(SEED)
    records = sorted(
        (r for rs in make_stream(RECORDS, seed=SEED % 997).values() for r in rs),
        key=lambda r: r["seq"],
    )
    chunks = [records[i : i + 3_000] for i in range(0, RECORDS, 3_000)]
    feed = FileFeed(tmp_path / "in")
    for i in range(4):
        feed.new_file(f"part-{i}.jsonl", chunks[i])
    growing = feed.new_file("part-4.jsonl", chunks[4])
    document = _config(unique_name, feed.directory, pg_dsn, tmp_path, "processingtime=500 ms")
    document["streamingConfigJson"]["maxRecordsPerTrigger"] = (
        500  # ~1,000 lines/s: the kills land mid-run
    )
    config = tmp_path / "files.json"
    config.write_text(json.dumps(document))

    progress = [0]
    for life in range(KILLS):
        worker = Worker(config, tmp_path / f"worker-{life}.log")
        try:
            if life % 3 == 2:
                # Some instants fall in start-up: the lock, the registry, the first read.
                await asyncio.sleep(rng.uniform(0.2, 1.5))
            else:
                await worker.wait_for("progress pipeline=")
                await asyncio.sleep(rng.uniform(0.0, 1.0))
            worker.assert_alive()
            worker.kill9()
        finally:
            worker.stop()
        progress.append(await ledger_records(pg, unique_name))
        # Between lives the files change, as a writer's do.
        if life == 1:
            feed.append(growing, chunks[5], partial=b'{"user_id": "u3", "event_time": ')
        elif life == 3:
            feed.finish_line(growing, b'"2025-11-26T10:05:00Z", "value": 7}\n', chunks[6])
            feed.new_file("part-5.jsonl", chunks[7])
    assert progress == sorted(progress), progress  # a kill never took back a commit
    assert progress[-1] < len(feed.records), progress
    assert sum(b > a for a, b in itertools.pairwise(progress)) >= KILLS // 2, progress

    feed.new_file("part-6.jsonl", [r for chunk in chunks[8:] for r in chunk])
    finish = dict(document)
    finish["streamingConfigJson"] = {
        **document["streamingConfigJson"],
        "triggerMode": "availablenow",
    }
    finish_config = tmp_path / "files-finish.json"
    finish_config.write_text(json.dumps(finish))
    finisher = Worker(finish_config, tmp_path / "finish.log")
    try:
        assert await finisher.finish(timeout=180) == 0, finisher.text()[-3000:]
    finally:
        finisher.stop()

    total = len(feed.records)
    assert total == RECORDS + 1  # the line finished between lives
    row = await pg.fetchrow(
        "SELECT sum(records) AS records, sum(bad) AS bad, sum(late) AS late "
        "FROM streamproc_ledger WHERE query = $1",
        unique_name,
    )
    model = expected(QUERY, feed.stream())
    assert (row["records"], row["bad"], row["late"]) == (total, 0, len(model.late))
    assert_tables_equal(await read_table(pg, unique_name, QUERY), model.table)
    print(
        f"\nfile source kill -9 x{KILLS} (seed {SEED}): ledger at each kill {progress[1:]}; "
        f"{total} lines, {len(model.table)} result rows, {len(model.late)} late; 0 differences"
    )

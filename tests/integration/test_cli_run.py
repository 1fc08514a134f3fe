"""`streamproc run CONFIG` and the Faust worker, as a user starts them: subprocesses."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from streamproc.local import create_topic
from tests.integration.expected import Query, expected
from tests.integration.pipeline_helpers import (
    MINUTE,
    assert_tables_equal,
    make_stream,
    produce,
    read_table,
    with_offsets,
)

BIN = Path(sys.executable).parent
QUERY = Query(
    ("user_id",),
    (("count", None, "count"), ("value_sum", "value", "sum"), ("value_max", "value", "max")),
    delay_ms=5 * MINUTE,
    size_ms=10 * MINUTE,
    output_mode="append",
)


def write_config(
    tmp: Path, name: str, bootstrap: str, dsn: str, trigger: str = "availablenow"
) -> Path:
    config = {
        "pipelineId": name,
        "mode": "streaming",
        "extract": {
            "sourceType": "kafka",
            "connectionParams": {
                "kafka.bootstrap.servers": "${TEST_BOOTSTRAP}",
                "subscribe": name,
                "startingOffsets": "earliest",
            },
        },
        "transforms": [
            {
                "transformType": "aggregation",
                "parameters": {
                    "groupByColumns": "user_id",
                    "windowColumn": "event_time",
                    "windowDuration": "10 minutes",
                    "aggregations": "count=*:count,value:sum,value:max",
                },
            }
        ],
        "load": {
            "sinkType": "postgresql",
            "table": name,
            "connectionParams": {"url": "${TEST_PG_DSN}"},
        },
        "streamingConfigJson": {
            "checkpointLocation": str(tmp / "checkpoints"),
            "queryName": name,
            "outputMode": "append",
            "triggerMode": trigger,
            "maxRecordsPerTrigger": 400,
            "watermark": {"eventTimeColumn": "event_time", "delayThreshold": "5 minutes"},
        },
    }
    path = tmp / f"{name}.json"
    path.write_text(json.dumps(config, indent=2))
    return path


def env_for(bootstrap: str, dsn: str, config: Path | None = None) -> dict[str, str]:
    env = dict(os.environ, TEST_BOOTSTRAP=bootstrap, TEST_PG_DSN=dsn)
    if config is not None:
        env["STREAMPROC_CONFIG"] = str(config)
    return env


async def test_streamproc_run_availablenow_exits_0_with_exact_table(
    kafka_bootstrap: str, pg_dsn: str, pg: Any, unique_name: str, tmp_path: Path
) -> None:
    stream = make_stream(2_000, seed=21)
    await create_topic(kafka_bootstrap, unique_name, 4)
    await produce(kafka_bootstrap, unique_name, stream)
    config = write_config(tmp_path, unique_name, kafka_bootstrap, pg_dsn)
    done = subprocess.run(
        [str(BIN / "streamproc"), "run", str(config)],
        env=env_for(kafka_bootstrap, pg_dsn),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"query {unique_name}: 2000 record(s) read" in done.stdout
    assert "Late data: " in done.stdout
    want = expected(QUERY, with_offsets(stream))
    assert_tables_equal(await read_table(pg, unique_name, QUERY), want.table)


async def test_faust_worker_runs_the_same_query(
    kafka_bootstrap: str, pg_dsn: str, pg: Any, unique_name: str, tmp_path: Path
) -> None:
    stream = make_stream(1_000, seed=22)
    await create_topic(kafka_bootstrap, unique_name, 4)
    await produce(kafka_bootstrap, unique_name, stream)
    config = write_config(tmp_path, unique_name, kafka_bootstrap, pg_dsn)
    done = subprocess.run(
        [str(BIN / "faust"), "-A", "agents.app", "worker", "-l", "info"],
        env=env_for(kafka_bootstrap, pg_dsn, config),
        capture_output=True,
        text=True,
        timeout=180,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert done.returncode == 0, (done.stdout[-2000:], done.stderr[-2000:])
    want = expected(QUERY, with_offsets(stream))
    assert_tables_equal(await read_table(pg, unique_name, QUERY), want.table)


async def test_sigterm_commits_the_batch_in_flight_and_exits_0(
    kafka_bootstrap: str, pg_dsn: str, pg: Any, unique_name: str, tmp_path: Path
) -> None:
    stream = make_stream(1_200, seed=23)
    await create_topic(kafka_bootstrap, unique_name, 4)
    config = write_config(tmp_path, unique_name, kafka_bootstrap, pg_dsn, "processingtime=1 second")
    worker = subprocess.Popen(
        [str(BIN / "streamproc"), "run", str(config)],
        env=env_for(kafka_bootstrap, pg_dsn),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        await produce(kafka_bootstrap, unique_name, stream)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            n = await pg.fetchval(
                "SELECT coalesce(sum(records), 0) FROM streamproc_ledger WHERE query = $1",
                unique_name,
            )
            if n == 1_200:
                break
            time.sleep(0.5)
        worker.send_signal(signal.SIGTERM)
        out, err = worker.communicate(timeout=60)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    assert worker.returncode == 0, err[-2000:]
    assert f"query {unique_name}: 1200 record(s) read" in out
    want = expected(QUERY, with_offsets(stream))
    assert_tables_equal(await read_table(pg, unique_name, QUERY), want.table)

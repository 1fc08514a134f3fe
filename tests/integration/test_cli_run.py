"""`streamproc run CONFIG` and the Faust worker, as a user starts them: subprocesses."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path
from typing import Any

from streamproc.local import create_topic
from tests.integration.cli_helpers import (
    BIN,
    CLI_QUERY,
    REPO,
    edit,
    env_for,
    run_cli,
    run_to_the_end,
    write_config,
)
from tests.kafka_io import produce
from tests.reference import assert_tables_equal, expected
from tests.results import ledger_records, read_table
from tests.streams import make_stream
from tests.waiting import wait_until


async def test_streamproc_run_availablenow_exits_0_with_exact_table(
    kafka_bootstrap: str, pg_dsn: str, pg: Any, unique_name: str, tmp_path: Path
) -> None:
    stream = make_stream(2_000, seed=21)
    await create_topic(kafka_bootstrap, unique_name, 4)
    await produce(kafka_bootstrap, unique_name, stream)
    config = write_config(tmp_path, unique_name, kafka_bootstrap, pg_dsn)
    done = run_cli(config, kafka_bootstrap, pg_dsn)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"query {unique_name}: 2000 record(s) read" in done.stdout
    assert "Late data: " in done.stdout
    want = expected(CLI_QUERY, stream)
    assert_tables_equal(await read_table(pg, unique_name, CLI_QUERY), want.table)
    # Off a terminal the log is JSON lines, each saying which pipeline and query.
    pipeline = json.loads(config.read_text())["pipelineId"]
    logged = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    assert any(line["msg"].startswith("assigned partitions") for line in logged), done.stderr
    for line in logged:
        assert (line["pipelineId"], line["query"]) == (pipeline, unique_name), line
    progress = [line for line in logged if line["msg"].startswith("progress pipeline=")]
    assert progress and all(f" batch={line['batchId']} " in line["msg"] for line in progress), (
        progress
    )
    # A clean run logs no error on its way out (the group's join completing
    # while the consumer left once raised in the rebalance callback).
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    assert [line for line in logged if line["level"] in ("ERROR", "CRITICAL")] == []


async def test_a_bounded_run_right_after_another_leaves_its_group_without_an_error(
    kafka_bootstrap: str, pg_dsn: str, unique_name: str, tmp_path: Path
) -> None:
    config = await run_to_the_end(
        tmp_path, unique_name, kafka_bootstrap, pg_dsn, make_stream(400, seed=22)
    )
    # The second run ends while its join is still pending: leaving takes the whole
    # stop timeout, and the consumer is closed without a clean leave. Its fetcher's
    # task was left running, and asyncio logged "ERROR Task was destroyed but it is
    # pending! ... Fetcher._fetch_requests_routine()" on a run that succeeded.
    again = run_cli(config, kafka_bootstrap, pg_dsn)
    assert again.returncode == 0, again.stderr[-3000:]
    logged = [json.loads(line) for line in again.stderr.splitlines() if line.startswith("{")]
    assert [line for line in logged if line["level"] in ("ERROR", "CRITICAL")] == []
    assert "Traceback" not in again.stderr and "Task was destroyed" not in again.stderr


async def test_faust_worker_runs_the_same_query(
    kafka_bootstrap: str, pg_dsn: str, pg: Any, unique_name: str, tmp_path: Path
) -> None:
    stream = make_stream(1_000, seed=22)
    await create_topic(kafka_bootstrap, unique_name, 4)
    await produce(kafka_bootstrap, unique_name, stream)
    config = write_config(tmp_path, unique_name, kafka_bootstrap, pg_dsn)
    # Faust's -l says info; the config's logLevel says WARN, and wins for streamproc's lines.
    edit(config, lambda doc: doc.update(loggingConfig={"logLevel": "WARN"}))
    # Dot-entries are tools' caches (another xdist worker's .hypothesis, say), not ours.
    before = {p.name for p in REPO.iterdir() if not p.name.startswith(".")}
    done = subprocess.run(
        [str(BIN / "faust"), "-A", "agents.app", "worker", "-l", "info"],
        env=env_for(kafka_bootstrap, pg_dsn, config),
        capture_output=True,
        text=True,
        timeout=180,
        cwd=REPO,
    )
    assert done.returncode == 0, (done.stdout[-2000:], done.stderr[-2000:])
    want = expected(CLI_QUERY, stream)
    assert_tables_equal(await read_table(pg, unique_name, CLI_QUERY), want.table)
    output = done.stdout + done.stderr
    assert "Worker" in output  # Faust's own INFO lines stay (-l info)
    assert "progress pipeline=" not in output, output[-2000:]
    # Once the query's task starts, Faust's handlers write our lines (JSON off a
    # terminal): Faust's own lines from then on (its stop) included.
    ours = [json.loads(line) for line in done.stderr.splitlines() if line.startswith('{"time"')]
    assert any(d["logger"].startswith(("faust", "mode")) for d in ours), done.stderr[-3000:]
    assert {p.name for p in REPO.iterdir() if not p.name.startswith(".")} == before


async def test_two_faust_workers_on_one_host_share_the_query(
    kafka_bootstrap: str, pg_dsn: str, pg: Any, unique_name: str, tmp_path: Path
) -> None:
    stream = make_stream(1_200, seed=24)
    await create_topic(kafka_bootstrap, unique_name, 4)
    config = write_config(tmp_path, unique_name, kafka_bootstrap, pg_dsn, "processingtime=1 second")
    env = env_for(kafka_bootstrap, pg_dsn, config)
    env.pop("STREAMPROC_WEB_PORT", None)
    workers = [
        subprocess.Popen(
            [str(BIN / "faust"), "-A", "agents.app", "worker", "-l", "info"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
        )
        for _ in range(2)
    ]
    try:
        await produce(kafka_bootstrap, unique_name, stream)

        async def all_committed() -> bool:
            # Both stay up: neither dies binding a port the other holds.
            for w in workers:
                assert w.poll() is None, w.communicate()[1][-2000:]
            return await ledger_records(pg, unique_name) == 1_200

        await wait_until(all_committed, "the ledger counts all 1200 records", timeout=90)
        outputs = []
        for w in workers:
            w.send_signal(signal.SIGTERM)
        for w in workers:
            outputs.append(w.communicate(timeout=60))
    finally:
        for w in workers:
            if w.poll() is None:
                w.kill()
                w.wait()
    for w, (_out, err) in zip(workers, outputs, strict=True):
        assert w.returncode == 0, err[-2000:]
        assert "Traceback" not in err, err[-3000:]
    want = expected(CLI_QUERY, stream)
    assert_tables_equal(await read_table(pg, unique_name, CLI_QUERY), want.table)


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

        async def all_committed() -> bool:
            assert worker.poll() is None, "the worker exited before SIGTERM"
            return await ledger_records(pg, unique_name) == 1_200

        await wait_until(all_committed, "the ledger counts all 1200 records", timeout=60)
        worker.send_signal(signal.SIGTERM)
        out, err = worker.communicate(timeout=60)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    assert worker.returncode == 0, err[-2000:]
    assert f"query {unique_name}: 1200 record(s) read" in out
    want = expected(CLI_QUERY, stream)
    assert_tables_equal(await read_table(pg, unique_name, CLI_QUERY), want.table)


def test_a_broker_that_cannot_be_reached_at_start_is_one_line_and_exit_1(
    pg_dsn: str, unique_name: str, tmp_path: Path
) -> None:
    # Nothing listens on port 1: the PostgreSQL side opens, the Kafka side cannot.
    config = write_config(tmp_path, unique_name, "127.0.0.1:1", pg_dsn)
    done = run_cli(config, "127.0.0.1:1", pg_dsn, timeout=60)
    assert done.returncode == 1, done.stderr[-2000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    assert done.stderr.splitlines()[-1] == (
        f"streamproc: query {unique_name}: cannot reach Kafka: KafkaConnectionError: Unable to "
        "bootstrap from [('127.0.0.1', 1, <AddressFamily.AF_INET: 2>)] (check "
        "extract.bootstrapServers, dlqConfig.bootstrapServers and that the broker is up)"
    )


def test_faust_worker_with_unusable_local_state_is_one_line_and_exit_1(
    kafka_bootstrap: str, pg_dsn: str, unique_name: str, tmp_path: Path
) -> None:
    config = write_config(tmp_path, unique_name, kafka_bootstrap, pg_dsn)
    # A path under a file: no directory can be made there.
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    edit(config, lambda doc: doc["streamingConfigJson"].update(checkpointLocation=str(blocker)))
    done = subprocess.run(
        [str(BIN / "faust"), "-A", "agents.app", "worker", "-l", "info"],
        env=env_for(kafka_bootstrap, pg_dsn, config),
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert done.returncode == 1, (done.stdout[-2000:], done.stderr[-2000:])
    assert "Traceback" not in done.stdout + done.stderr, done.stderr[-3000:]
    last = done.stderr.splitlines()[-1]
    assert last.startswith(f"streamproc: local state at {blocker}/"), done.stderr[-2000:]
    assert "Not a directory" in last

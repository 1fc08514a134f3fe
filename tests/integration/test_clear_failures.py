"""Clear failures instead of silent or endless ones (issue 9), as a user meets them with
`streamproc run` on the real broker and PostgreSQL: the exact last line, the exit status,
and tables as they were or as a clean run leaves them.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from streamproc.local import create_topic
from tests.integration.cli_helpers import (
    BIN,
    CLI_QUERY,
    edit,
    env_for,
    last_line,
    run_cli,
    write_config,
)
from tests.kafka_io import produce, read_topic
from tests.reference import assert_tables_equal, expected
from tests.results import ledger_records, read_table
from tests.streams import halves, make_stream
from tests.waiting import wait_until


async def test_an_unusable_checkpoint_location_stops_at_once_naming_the_path(
    kafka_bootstrap: str, pg_dsn: str, unique_name: str, tmp_path: Path
) -> None:
    await create_topic(kafka_bootstrap, unique_name, 1)
    config = edit(
        write_config(tmp_path, unique_name, kafka_bootstrap, pg_dsn),
        lambda d: d["streamingConfigJson"].update(checkpointLocation="/dev/null/ckpt"),
    )
    done = run_cli(config, kafka_bootstrap, pg_dsn, timeout=60)
    assert done.returncode == 1
    line = last_line(done.stderr)
    assert line.startswith(f"streamproc: local state at /dev/null/ckpt/{unique_name}/state/worker-")
    assert line.endswith(" cannot be written: Not a directory")


@contextlib.contextmanager
def small_disk(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of the given size at path (root only; else the test is skipped)."""
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a size-limited tmpfs here: {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


async def test_a_full_disk_stops_with_one_line_and_a_rerun_with_room_resumes_exactly(
    kafka_bootstrap: str, pg_dsn: str, pg: Any, unique_name: str, tmp_path: Path
) -> None:
    stream = make_stream(20_000, seed=61, users=5_000)
    await create_topic(kafka_bootstrap, unique_name, 4)
    await produce(kafka_bootstrap, unique_name, stream, timestamp_ms=1_000)
    with small_disk(tmp_path / "disk", "512k") as disk:
        config = edit(
            write_config(tmp_path, unique_name, kafka_bootstrap, pg_dsn),
            lambda d: d["streamingConfigJson"].update(
                checkpointLocation=str(disk), maxRecordsPerTrigger=2_000
            ),
        )
        full = run_cli(config, kafka_bootstrap, pg_dsn)
        assert full.returncode == 1, full.stderr[-3000:]
        line = last_line(full.stderr)
        assert line.startswith(f"streamproc: local state at {disk}/{unique_name}/state/worker-")
        assert "No space left on device" in line
        # Room again: the rerun resumes from the checkpoint, exactly.
        subprocess.run(["mount", "-o", "remount,size=256m", str(disk)], check=True)
        again = run_cli(config, kafka_bootstrap, pg_dsn)
        assert again.returncode == 0, again.stderr[-3000:]
    want = expected(CLI_QUERY, stream)
    assert_tables_equal(await read_table(pg, unique_name, CLI_QUERY), want.table)


async def test_least_privilege_runs_and_a_table_it_cannot_create_is_named(
    kafka_bootstrap: str, pg_dsn: str, pg: Any, unique_name: str, tmp_path: Path
) -> None:
    stream = make_stream(1_000, seed=62)
    await create_topic(kafka_bootstrap, unique_name, 4)
    await produce(kafka_bootstrap, unique_name, stream, timestamp_ms=1_000)
    config = write_config(tmp_path, unique_name, kafka_bootstrap, pg_dsn)
    role = f"{unique_name}_rw"
    # Tables made by someone else; this user may read and write them, no more.
    await pg.execute(f'CREATE TABLE "{unique_name}_pre" (x int)')
    first = run_cli(
        edit(
            config,
            lambda d: d["streamingConfigJson"].update(triggerMode="once", maxRecordsPerTrigger=1),
        ),
        kafka_bootstrap,
        pg_dsn,
    )
    assert first.returncode == 0, first.stderr[-2000:]
    await pg.execute(f'CREATE ROLE "{role}" LOGIN')
    await pg.execute(
        f'GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO "{role}"'
    )
    await pg.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
    limited = pg_dsn.replace("postgresql://postgres@", f"postgresql://{role}@")
    edit(config, lambda d: d["streamingConfigJson"].update(triggerMode="availablenow"))
    rest = run_cli(config, kafka_bootstrap, limited)
    assert rest.returncode == 0, rest.stderr[-2000:]
    want = expected(CLI_QUERY, stream)
    assert_tables_equal(await read_table(pg, unique_name, CLI_QUERY), want.table)
    other = edit(config, lambda d: d["load"].update(table=f"{unique_name}_new"))
    edit(other, lambda d: d["streamingConfigJson"].update(queryName=f"{unique_name}_new"))
    refused = run_cli(other, kafka_bootstrap, limited)
    assert refused.returncode == 1
    assert last_line(refused.stderr) == (
        f"streamproc: table {unique_name}_new does not exist and cannot be created: permission "
        "denied for schema public (grant CREATE on the current schema (public) to this user, or "
        "create the table beforehand)"
    )


def test_a_password_that_breaks_the_url_is_never_shown(tmp_path: Path) -> None:
    config = write_config(tmp_path, "q", "localhost:9092", "unused")
    secret = "Zq7/Ab?c"
    edit(
        config,
        lambda d: d["load"]["connectionParams"].update(
            url=f"postgresql://alice:{secret}@db.example:5432/app"
        ),
    )
    for args in (["validate"], ["run"]):
        done = subprocess.run(
            [str(BIN / "streamproc"), *args, str(config)],
            capture_output=True,
            text=True,
            timeout=60,
            env=dict(os.environ),
        )
        assert done.returncode == 1
        out = done.stdout + done.stderr
        for part in ("Zq7", "Ab", "?c", "/Ab"):
            assert part not in out, out
        assert (
            "load.connectionParams.url: 'postgresql://alice:***@db.example:5432/app' cannot be "
            "parsed: " in out
        )


async def test_a_missing_source_topic_is_an_error_and_is_not_created(
    kafka_bootstrap: str, pg_dsn: str, unique_name: str, tmp_path: Path
) -> None:
    config = write_config(tmp_path, unique_name, kafka_bootstrap, pg_dsn)
    done = run_cli(config, kafka_bootstrap, pg_dsn, timeout=60)
    assert done.returncode == 1
    assert last_line(done.stderr) == (
        f"streamproc: source topic '{unique_name}' does not exist on {kafka_bootstrap}; create it "
        "(streamproc never creates a source topic) or correct extract.connectionParams.subscribe"
    )
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        assert unique_name not in await admin.list_topics()
    finally:
        await admin.close()


@pytest.mark.parametrize(
    ("sig", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 143), (signal.SIGHUP, 129)]
)
async def test_a_signal_before_a_bounded_run_ends_says_interrupted_with_its_exit_status(
    sig: int,
    status: int,
    kafka_bootstrap: str,
    pg_dsn: str,
    pg: Any,
    unique_name: str,
    tmp_path: Path,
) -> None:
    stream = make_stream(12_000, seed=63)
    await create_topic(kafka_bootstrap, unique_name, 4)
    await produce(kafka_bootstrap, unique_name, stream, timestamp_ms=1_000)
    config = edit(
        write_config(tmp_path, unique_name, kafka_bootstrap, pg_dsn),
        lambda d: d["streamingConfigJson"].update(maxRecordsPerTrigger=50),
    )
    worker = subprocess.Popen(
        [str(BIN / "streamproc"), "run", str(config)],
        env=env_for(kafka_bootstrap, pg_dsn),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:

        async def committed_some() -> bool:
            assert worker.poll() is None, "the run ended before the signal"
            return await ledger_records(pg, unique_name) > 0

        await wait_until(committed_some, "a first commit", timeout=60, interval=0.05)
        worker.send_signal(sig)
        out, err = worker.communicate(timeout=60)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    assert worker.returncode == status, err[-2000:]
    assert "  bounded run 1 interrupted: this worker processed partitions " in out, out
    committed = await pg.fetchval(
        "SELECT sum(records) FROM streamproc_ledger WHERE query = $1", unique_name
    )
    assert 0 < committed < 12_000
    assert f"query {unique_name}: {committed} record(s) read" in out  # the batch in flight too


@pytest.mark.parametrize(
    ("mode", "words"),
    [
        ("update", "the sink refuses every record of the batch of partition:offsets "),
        ("append", "the sink refused the rows of "),
    ],
)
async def test_a_constraint_refusing_every_row_stops_the_query_and_dead_letters_nothing(
    mode: str,
    words: str,
    kafka_bootstrap: str,
    pg_dsn: str,
    pg: Any,
    unique_name: str,
    tmp_path: Path,
) -> None:
    stream = make_stream(3_000, seed=64)
    first, second = halves(stream)
    await create_topic(kafka_bootstrap, unique_name, 4)
    await create_topic(kafka_bootstrap, f"{unique_name}_dlq", 1)
    await produce(kafka_bootstrap, unique_name, first, timestamp_ms=1_000)
    config = edit(
        write_config(tmp_path, unique_name, kafka_bootstrap, pg_dsn),
        lambda d: (
            d.update(
                errorHandlingConfig={
                    "dlqConfig": {"dlqType": "kafka", "topic": f"{unique_name}_dlq"},
                    "retryConfig": {"strategy": "none"},
                }
            ),
            d["streamingConfigJson"].update(outputMode=mode),
        ),
    )
    assert run_cli(config, kafka_bootstrap, pg_dsn).returncode == 0
    table = await read_table(pg, unique_name, CLI_QUERY)
    await pg.execute(
        f'ALTER TABLE "{unique_name}" ADD CONSTRAINT no_more_rows CHECK (count < 0) NOT VALID'
    )
    await produce(kafka_bootstrap, unique_name, second, timestamp_ms=100_000)
    refused = run_cli(config, kafka_bootstrap, pg_dsn)
    assert refused.returncode == 1
    line = last_line(refused.stderr)
    assert line.startswith(f"streamproc: query {unique_name}: {words}"), line
    assert "(constraint no_more_rows of table " in line
    assert "nothing of the batch was" in line
    assert await read_topic(kafka_bootstrap, f"{unique_name}_dlq") == []
    assert await read_table(pg, unique_name, CLI_QUERY) == table
    dead = await pg.fetchval(
        "SELECT coalesce(sum(dead_lettered), 0) FROM streamproc_ledger WHERE query = $1",
        unique_name,
    )
    assert dead == 0


async def test_a_record_from_2100_is_bad_with_max_future_skew_and_warned_about_without(
    kafka_bootstrap: str, pg_dsn: str, pg: Any, unique_name: str, tmp_path: Path
) -> None:
    now = int(time.time() * 1000)
    records = [
        (0, {"user_id": "u", "event_time": now - 60_000 + i * 1000, "value": 1}) for i in range(10)
    ]
    records.insert(5, (0, {"user_id": "u", "event_time": "2100-01-01T00:00:00Z", "value": 1}))
    await create_topic(kafka_bootstrap, unique_name, 1)
    await produce(kafka_bootstrap, unique_name, records, timestamp_ms=now - 120_000)
    config = write_config(tmp_path, unique_name, kafka_bootstrap, pg_dsn)
    plain = run_cli(config, kafka_bootstrap, pg_dsn)
    assert plain.returncode == 0, plain.stderr[-2000:]
    assert "offset 5 (event_time '2100-01-01T00:00:00Z') moved the watermark " in plain.stderr
    assert "late 5, bad 0" in plain.stdout
    assert "event time range: 20" in plain.stdout and " UTC" in plain.stdout
    guarded = edit(
        config,
        lambda d: (
            d["streamingConfigJson"]["watermark"].update(maxFutureSkew="1 day"),
            d["streamingConfigJson"].update(queryName=f"{unique_name}_g"),
            d["load"].update(table=f"{unique_name}_g"),
        ),
    )
    done = run_cli(guarded, kafka_bootstrap, pg_dsn)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "late 0, bad 1" in done.stdout

"""Batch jobs as an operator meets them on a normal day: a job stopped by a signal, an
overwrite over an empty input, a directory holding other files beside the data, a report
of many bad records alike. `streamproc run` on the real PostgreSQL."""

from __future__ import annotations

import asyncio
import signal
import subprocess
from pathlib import Path
from typing import Any

from tests.integration.batch_helpers import batch_config, write_lines
from tests.integration.cli_helpers import BIN, edit, env_for, last_line, run_cli
from tests.waiting import wait_until


def files(path: Path | str) -> dict[str, Any]:
    return {"sourceType": "file", "path": str(path)}


async def test_a_signal_stops_a_job_with_one_line_and_nothing_loaded(
    pg_dsn: str, pg: Any, unique_name: str, tmp_path: Path
) -> None:
    data = write_lines(tmp_path / "in.jsonl", [{"id": i} for i in range(3)])
    config = batch_config(tmp_path, unique_name, files(data), write_mode="overwrite")
    assert run_cli(config, "unused:9092", pg_dsn).returncode == 0
    # The job's DELETE waits for this lock: the signal comes in the middle of its load.
    async with pg.transaction():
        await pg.execute(f'LOCK TABLE "{unique_name}" IN ACCESS EXCLUSIVE MODE')
        job = subprocess.Popen(
            [str(BIN / "streamproc"), "run", str(config)],
            env=env_for("unused:9092", pg_dsn),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:

            async def waiting() -> bool:
                assert job.poll() is None
                # Inside a transaction the activity view is a snapshot: drop it first.
                await pg.execute("SELECT pg_stat_clear_snapshot()")
                return bool(
                    await pg.fetchval(
                        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = "
                        "'Lock' AND query LIKE 'DELETE FROM%'"
                    )
                )

            await wait_until(waiting, "the job's load waits for the lock", timeout=60)
            job.send_signal(signal.SIGTERM)
            _out, err = await asyncio.to_thread(job.communicate, timeout=60)
        finally:
            if job.poll() is None:
                job.kill()
                job.wait()
    # Before: exit 143 and no line at all (nothing said that nothing was loaded).
    assert job.returncode == 128 + signal.SIGTERM, err
    assert "Traceback" not in err
    assert last_line(err) == (
        f"streamproc: batch job {unique_name} stopped by SIGTERM: nothing was loaded (the load "
        f"is one transaction; table {unique_name} is as it was), run it again"
    )
    assert await pg.fetchval(f'SELECT count(*) FROM "{unique_name}"') == 3


async def test_an_empty_input_never_empties_a_table_unless_the_config_says_so(
    pg_dsn: str, pg: Any, unique_name: str, tmp_path: Path
) -> None:
    data = tmp_path / "in"
    data.mkdir()
    write_lines(data / "a.jsonl", [{"id": 1}])
    config = batch_config(tmp_path, unique_name, files(data), write_mode="overwrite")
    assert run_cli(config, "unused:9092", pg_dsn).returncode == 0
    (data / "a.jsonl").unlink()
    # A directory with no file, and a glob matching no file, alike. Before: the directory
    # emptied the table (exit 0, "1 previous row(s) deleted"), the glob stopped.
    for path in (data, data / "*.jsonl"):
        edit(config, lambda doc, path=path: doc["extract"].update(path=str(path)))
        kept = run_cli(config, "unused:9092", pg_dsn)
        assert kept.returncode == 1, kept.stdout
        assert last_line(kept.stderr) == (
            f"streamproc: batch job {unique_name}: no row to load (0 record(s) read from "
            f"{path} (0 file(s))), and writeMode overwrite would leave table {unique_name} "
            "empty; nothing was changed (set load.allowEmptyOverwrite: true to let an empty "
            "input empty it)"
        )
        assert await pg.fetchval(f'SELECT count(*) FROM "{unique_name}"') == 1
    append = batch_config(tmp_path, f"{unique_name}_a", files(data / "*.jsonl"))
    appended = run_cli(append, "unused:9092", pg_dsn)
    assert appended.returncode == 0, appended.stderr
    assert "0 record(s) read from" in appended.stdout and "(0 file(s))" in appended.stdout
    edit(config, lambda doc: doc["load"].update(allowEmptyOverwrite=True))
    emptied = run_cli(config, "unused:9092", pg_dsn)
    assert emptied.returncode == 0, emptied.stderr
    assert "0 row(s) written, 0 rejected by the table, 1 previous row(s) deleted" in emptied.stdout
    assert await pg.fetchval(f'SELECT count(*) FROM "{unique_name}"') == 0


async def test_a_directory_is_read_by_file_name_pattern_and_bad_records_group_by_reason(
    pg_dsn: str, pg: Any, unique_name: str, tmp_path: Path
) -> None:
    data = tmp_path / "in"
    data.mkdir()
    good = [{"id": i, "event_time": "2026-01-01T00:00:00Z"} for i in range(3)]
    bad = [{"id": 100 + i, "event_time": f"yesterday {i}"} for i in range(30)]
    write_lines(data / "a.jsonl", good + bad)
    write_lines(data / "b.ndjson.gz", good)
    write_lines(data / "a.jsonl.done", [{"id": "done"}])  # a marker: before, it was loaded
    (data / "notes.txt").write_text("not data\n")
    transforms = [
        {
            "transformType": "aggregation",
            "parameters": {
                "groupByColumns": "id",
                "aggregations": "n=*:count",
                "windowColumn": "event_time",
                "windowDuration": "1 day",
            },
        }
    ]
    config = batch_config(tmp_path, unique_name, files(data), transforms=transforms)
    done = run_cli(config, "unused:9092", pg_dsn)
    assert done.returncode == 0, done.stderr
    assert f"36 record(s) read from {data} (2 file(s))" in done.stdout
    # Thirty values, one reason: one line with its count and an example, where it said
    # ten "1 x" lines and "20 more, with 20 other reason(s)".
    bad_lines = [line for line in done.stdout.splitlines() if line.startswith("  bad: ")]
    assert bad_lines == [
        "  bad: 30 x event_time: ... is not an ISO-8601 time or epoch milliseconds "
        f"(first: {data / 'a.jsonl'}:4, 'yesterday 0')"
    ], done.stdout
    rows = await pg.fetch(f'SELECT id, n FROM "{unique_name}" ORDER BY id')
    assert [(r["id"], r["n"]) for r in rows] == [("0", 2), ("1", 2), ("2", 2)]

    everything = batch_config(tmp_path, f"{unique_name}_all", files(data), write_mode="overwrite")
    edit(everything, lambda doc: doc["extract"].update(pathGlobFilter="*.done, *.txt"))
    both = run_cli(everything, "unused:9092", pg_dsn)
    assert both.returncode == 0, both.stderr
    assert f"2 record(s) read from {data} (2 file(s))" in both.stdout
    assert "bad 1" in both.stdout  # notes.txt's line is not JSON

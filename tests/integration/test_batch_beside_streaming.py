"""Batch jobs beside streaming queries, on the real PostgreSQL (issue 18).

- A batch job owns its table (registered to its pipelineId): it refuses a table a
  streaming query owns, and a streaming query refuses a batch job's table, each
  naming the owner; `streamproc reset` on the batch config releases it.
- Batch upsert: a record whose key is missing or null is a bad record with that
  reason, never merged; keys compare as group keys do (`1` and `"1"` apart, `1`
  and `1.0` one).
- Event time in batch mode: `eventTimeFormat` on the aggregation, and under `auto`
  a string is ISO 8601 only (`"2026"` is the year 2026, a digit string of
  milliseconds is bad).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.integration.batch_helpers import aggregation, batch_config, write_lines
from tests.integration.cli_helpers import edit, last_line, run_cli, run_to_the_end
from tests.streams import make_stream


def file_extract(path: Path) -> dict[str, Any]:
    return {"sourceType": "file", "path": str(path)}


async def test_a_batch_job_and_a_streaming_query_never_share_a_table(
    kafka_bootstrap: str, pg_dsn: str, pg: Any, unique_name: str, tmp_path: Path
) -> None:
    streaming = await run_to_the_end(
        tmp_path, unique_name, kafka_bootstrap, pg_dsn, make_stream(100, seed=2)
    )
    rows_before = await pg.fetchval(f'SELECT count(*) FROM "{unique_name}"')
    source = write_lines(tmp_path / "in.jsonl", [{"user_id": "u1", "value": 1}])
    job = batch_config(
        tmp_path,
        f"{unique_name}_job",
        file_extract(source),
        write_mode="overwrite",
    )
    edit(job, lambda d: d["load"].update(table=f"public.{unique_name}"))  # the same table
    refused = run_cli(job, kafka_bootstrap, pg_dsn)
    assert refused.returncode == 1
    line = last_line(refused.stderr)
    assert line.startswith(
        f"streamproc: batch job {unique_name}_job: table public.{unique_name} belongs to query "
        f"{unique_name} (registered "
    ), line
    assert line.endswith(
        "loading into it would change rows its owner wrote; give load.table another name, or "
        "stop the query and reset it with --drop-results first; nothing was loaded"
    ), line
    assert await pg.fetchval(f'SELECT count(*) FROM "{unique_name}"') == rows_before

    # The reverse: a streaming query refuses a table a batch job owns.
    job_table = f"{unique_name}_jobtable"
    edit(job, lambda d: d["load"].update(table=job_table))
    assert run_cli(job, kafka_bootstrap, pg_dsn).returncode == 0
    second = f"{unique_name}_second"
    edit(
        streaming,
        lambda d: (
            d["load"].update(table=job_table),
            d["streamingConfigJson"].update(queryName=second),
        ),
    )
    taken = run_cli(streaming, kafka_bootstrap, pg_dsn)
    assert taken.returncode == 1
    assert f"table {job_table} belongs to batch job {unique_name}_job (registered" in (
        last_line(taken.stderr)
    )
    # Reset of the batch config releases the table (kept, and said so).
    released = run_cli(job, kafka_bootstrap, pg_dsn, "reset", "--yes")
    assert released.returncode == 0, released.stderr
    assert released.stdout.strip() == (
        f"batch job {unique_name}_job: released its table (kept); 0 dead letter(s) removed"
    )
    again = run_cli(job, kafka_bootstrap, pg_dsn, "reset", "--yes")
    assert again.returncode == 1
    assert last_line(again.stderr) == (
        f"streamproc: batch job '{unique_name}_job' owns no table in this database: nothing "
        "was changed; check pipelineId and the database"
    )


async def test_batch_upsert_keys_are_never_null_and_keep_their_json_type(
    pg_dsn: str, pg: Any, unique_name: str, tmp_path: Path
) -> None:
    records = [
        {"id": 1, "v": "number one"},
        {"id": "1", "v": "string one"},
        {"id": 1.0, "v": "number one again"},  # the same key as 1: the last read wins
        {"v": "no id"},
        {"id": None, "v": "null id"},
        {"id": True, "v": "true"},
    ]
    source = write_lines(tmp_path / "in.jsonl", records)
    config = batch_config(
        tmp_path, unique_name, file_extract(source), write_mode="upsert", upsert_keys="id"
    )
    done = run_cli(config, "unused:9092", pg_dsn)
    assert done.returncode == 0, done.stderr
    rows = await pg.fetch(f'SELECT id::text AS id, record::text AS r FROM "{unique_name}"')
    assert sorted((r["id"], json.loads(r["r"])["v"]) for r in rows) == [
        ('"1"', "string one"),
        ("1.0", "number one again"),  # merged with 1: the last read's value
        ("true", "true"),
    ]
    assert "id: missing; load.upsertKeys needs every key to upsert" in done.stdout
    assert "id: null; load.upsertKeys needs every key to upsert" in done.stdout
    assert "3 row(s) written" in done.stdout


async def test_batch_event_time_reads_strings_as_iso_8601_and_takes_an_event_time_format(
    pg_dsn: str, pg: Any, unique_name: str, tmp_path: Path
) -> None:
    records = [
        {"user_id": "u", "event_time": "2026", "value": 1},  # the year 2026, as in Spark
        {"user_id": "u", "event_time": "1764151200000", "value": 2},  # not a time: bad
        {"user_id": "u", "event_time": 1764151200000, "value": 3},  # a number: epoch ms
    ]
    source = write_lines(tmp_path / "in.jsonl", records)
    auto = batch_config(tmp_path, unique_name, file_extract(source), transforms=aggregation())
    done = run_cli(auto, "unused:9092", pg_dsn)
    assert done.returncode == 0, done.stderr
    rows = await pg.fetch(
        f'SELECT window_start::text AS w, count FROM "{unique_name}" ORDER BY window_start'
    )
    assert [(r["w"], r["count"]) for r in rows] == [
        ("2025-11-26 10:00:00+00", 1),
        ("2026-01-01 00:00:00+00", 1),
    ]
    assert "event_time: '1764151200000' is not an ISO-8601 time (auto: epoch milliseconds" in (
        done.stdout
    )
    # eventTimeFormat epoch_millis on the aggregation: digit strings are milliseconds.
    millis = batch_config(
        tmp_path, f"{unique_name}_ms", file_extract(source), transforms=aggregation()
    )
    edit(millis, lambda d: d["transforms"][0]["parameters"].update(eventTimeFormat="epoch_millis"))
    done = run_cli(millis, "unused:9092", pg_dsn)
    assert done.returncode == 0, done.stderr
    rows = await pg.fetch(
        f'SELECT window_start::text AS w, count FROM "{unique_name}_ms" ORDER BY window_start'
    )
    assert [(r["w"], r["count"]) for r in rows] == [
        ("1970-01-01 00:00:00+00", 1),  # "2026": 2,026 ms, as this format says
        ("2025-11-26 10:00:00+00", 2),
    ]

"""Exactly once while things change (issue 8), on the real broker and PostgreSQL.

Each case as a user meets it week to week: group values of mixed JSON types,
a config edited between runs, a topic deleted and re-created, partitions
added, two queries pointed at one table, a ledger row deleted by hand. Where
the run goes on, the table is compared row by row with the model; where it
stops, the exact one-line message and exit status are checked.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from streamproc.local import create_topic
from streamproc.runtime.failure_kinds import QueryFailedError
from streamproc.sinks.rows import datetime_to_ms
from tests.integration.cli_helpers import BIN, last_line, run_cli, write_config
from tests.integration.pipeline_helpers import make_plan, run_workers
from tests.kafka_io import produce
from tests.reference import Query, assert_tables_equal, expected
from tests.results import read_table
from tests.streams import AGGS, BASE_MS, MINUTE, make_stream

QUERY = Query(("user_id",), AGGS, delay_ms=5 * MINUTE, size_ms=10 * MINUTE, output_mode="update")
#: Messages get fixed timestamps (T0 + index), so that a re-created topic can hold the
#: very same records at the very same offsets.
T0 = 1_000


async def recreate_topic(bootstrap: str, topic: str, partitions: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.delete_topics([topic])
    finally:
        await admin.close()
    await create_topic(bootstrap, topic, partitions)


@pytest.mark.parametrize("mode", ["update", "append"])
async def test_group_values_of_mixed_json_types_are_separate_rows(
    mode: str, kafka_bootstrap: str, pg_dsn: str, pg: Any, unique_name: str, tmp_path: Path
) -> None:
    users = [1, "1", True, "true", 1.0, None, "null", 1, "1", 2.5, False, 0, -0.0]
    records = [
        (i % 2, {"user_id": u, "event_time": BASE_MS + i * 1000, "value": 1})
        for i, u in enumerate(users)
    ]
    records += [(p, {"user_id": "x", "event_time": BASE_MS + 60 * MINUTE}) for p in (0, 1)]
    await create_topic(kafka_bootstrap, unique_name, 2)
    await produce(kafka_bootstrap, unique_name, records, timestamp_ms=T0)
    query = Query(
        ("user_id",),
        (("count", None, "count"),),
        delay_ms=MINUTE,
        size_ms=10 * MINUTE,
        output_mode=mode,
    )
    plan = make_plan(
        name=unique_name, bootstrap=kafka_bootstrap, dsn=pg_dsn, tmp=tmp_path, query=query
    )
    [stats] = await run_workers(plan)
    assert stats.records == len(records) and stats.bad == 0
    rows = await pg.fetch(
        f'SELECT user_id, group_key_types, window_start, count FROM "{unique_name}" '
        "WHERE user_id IS DISTINCT FROM 'x'"
    )
    got = {(r["user_id"], r["group_key_types"]): r["count"] for r in rows}
    assert {datetime_to_ms(r["window_start"]) for r in rows} == {BASE_MS}
    assert got == {
        ("1", "n"): 3,  # 1, 1.0, 1
        ("1", "s"): 2,
        ("true", "b"): 1,
        ("true", "s"): 1,
        (None, "-"): 1,
        ("null", "s"): 1,
        ("2.5", "n"): 1,
        ("false", "b"): 1,
        ("0", "n"): 2,  # 0 and -0.0
    }


async def test_an_edited_config_stops_with_one_line_and_reset_starts_over(
    kafka_bootstrap: str, pg_dsn: str, pg: Any, unique_name: str, tmp_path: Path
) -> None:
    stream = make_stream(800, seed=41)
    await create_topic(kafka_bootstrap, unique_name, 4)
    await produce(kafka_bootstrap, unique_name, stream, timestamp_ms=T0)
    config = write_config(tmp_path, unique_name, kafka_bootstrap, pg_dsn)
    first = run_cli(config, kafka_bootstrap, pg_dsn)
    assert first.returncode == 0, first.stderr[-2000:]
    document = json.loads(config.read_text())
    document["transforms"][0]["parameters"]["aggregations"] = "value:max"
    config.write_text(json.dumps(document))
    refused = run_cli(config, kafka_bootstrap, pg_dsn)
    assert refused.returncode == 1
    # The one error line, last; the warning about dlqType logging may come before it.
    assert last_line(refused.stderr) == (
        f"streamproc: query {unique_name}: its checkpoint was made by another definition "
        "(aggregations changed from [count=*:count, value_sum=value:sum, value_max=value:max] "
        "to [value_max=value:max]), and running on it would give wrong results; start it "
        "under a new queryName, or drop its checkpoint with `streamproc reset CONFIG` (add "
        "--drop-results to drop its result and late tables too)"
    )
    off_terminal = run_cli(config, kafka_bootstrap, pg_dsn, "reset")
    assert off_terminal.returncode == 1 and "confirm with --yes" in off_terminal.stderr
    reset = run_cli(config, kafka_bootstrap, pg_dsn, "reset", "--drop-results", "--yes")
    assert reset.returncode == 0, reset.stderr
    assert f"query {unique_name}: removed 4 position(s)" in reset.stdout
    again = run_cli(config, kafka_bootstrap, pg_dsn)
    assert again.returncode == 0, again.stderr[-2000:]
    model = expected(
        Query(
            ("user_id",),
            (("value_max", "value", "max"),),
            delay_ms=5 * MINUTE,
            size_ms=10 * MINUTE,
            output_mode="append",
        ),
        stream,
    )
    rows = await pg.fetch(
        f'SELECT user_id, window_start, window_end, value_max FROM "{unique_name}"'
    )
    got = {(r[0], datetime_to_ms(r[1]), datetime_to_ms(r[2])): (r[3],) for r in rows}
    assert_tables_equal(got, model.table)


async def test_a_recreated_topic_stops_the_query_instead_of_skipping_it(
    kafka_bootstrap: str, pg_dsn: str, pg: Any, unique_name: str, tmp_path: Path
) -> None:
    stream = make_stream(600, seed=42)
    await create_topic(kafka_bootstrap, unique_name, 4)
    await produce(kafka_bootstrap, unique_name, stream, timestamp_ms=T0)
    config = write_config(tmp_path, unique_name, kafka_bootstrap, pg_dsn)
    assert run_cli(config, kafka_bootstrap, pg_dsn).returncode == 0
    await recreate_topic(kafka_bootstrap, unique_name, 4)
    await produce(kafka_bootstrap, unique_name, make_stream(200, seed=43), timestamp_ms=T0)
    shorter = run_cli(config, kafka_bootstrap, pg_dsn)
    assert shorter.returncode == 1
    line = last_line(shorter.stderr)
    assert line.startswith(f"streamproc: query {unique_name}: partition ")
    assert ", below the checkpoint's next offset " in line
    assert "the topic was re-created or truncated; nothing was skipped or processed" in line
    await produce(kafka_bootstrap, unique_name, make_stream(2_000, seed=44), timestamp_ms=9_000)
    longer = run_cli(config, kafka_bootstrap, pg_dsn)
    assert longer.returncode == 1
    line = last_line(longer.stderr)
    assert "is not the one this query committed: the topic was re-created" in line
    ledger = await pg.fetchval(
        "SELECT sum(records) FROM streamproc_ledger WHERE query = $1", unique_name
    )
    assert ledger == 600  # the stopped runs committed nothing


async def test_partitions_added_between_runs_are_read_and_closed_windows_stay_closed(
    kafka_bootstrap: str, pg_dsn: str, pg: Any, unique_name: str, tmp_path: Path
) -> None:
    # Apache Kafka adds partitions in place; the local broker cannot, so the
    # topic is re-created with one more partition and the very same records
    # (same keys, values, timestamps) at the same offsets of the old ones.
    query = Query(
        ("user_id",), AGGS, delay_ms=5 * MINUTE, size_ms=10 * MINUTE, output_mode="append"
    )
    old = {
        p: [
            {"user_id": f"u{i % 3}", "event_time": BASE_MS + i * MINUTE, "value": i}
            for i in range(p, 40, 2)
        ]
        for p in (0, 1)
    }
    await create_topic(kafka_bootstrap, unique_name, 2)
    await produce(kafka_bootstrap, unique_name, old, timestamp_ms=T0)
    plan = make_plan(
        name=unique_name, bootstrap=kafka_bootstrap, dsn=pg_dsn, tmp=tmp_path, query=query
    )
    await run_workers(plan)
    before = await read_table(pg, unique_name, query)
    w = min(max(r["event_time"] for r in recs) for recs in old.values()) - 5 * MINUTE
    assert before == expected(query, old).table and before
    await recreate_topic(kafka_bootstrap, unique_name, 3)
    await produce(kafka_bootstrap, unique_name, old, timestamp_ms=T0)
    new = [
        {"user_id": "u0", "event_time": BASE_MS + 2 * MINUTE, "value": 1000},  # closed window
        {"user_id": "u0", "event_time": w + 20 * MINUTE, "value": 7},
        {"user_id": "u9", "event_time": w + 40 * MINUTE, "value": 8},
    ]
    await produce(kafka_bootstrap, unique_name, {2: new}, timestamp_ms=50_000)
    [stats] = await run_workers(plan)
    assert stats.records == 3 and stats.late == 1
    late = await pg.fetchrow(
        "SELECT late, aggregated FROM streamproc_ledger WHERE query = $1 AND partition = 2",
        unique_name,
    )
    assert (late["late"], late["aggregated"]) == (1, 2)
    after = await read_table(pg, unique_name, query)
    assert {k: v for k, v in after.items() if k in before} == before  # nothing rewritten


async def test_two_queries_writing_one_table_are_refused(
    kafka_bootstrap: str, pg_dsn: str, pg: Any, unique_name: str, tmp_path: Path
) -> None:
    stream = make_stream(300, seed=45)
    await create_topic(kafka_bootstrap, unique_name, 4)
    await produce(kafka_bootstrap, unique_name, stream, timestamp_ms=T0)
    plan = make_plan(
        name=unique_name, bootstrap=kafka_bootstrap, dsn=pg_dsn, tmp=tmp_path, query=QUERY
    )
    await run_workers(plan)
    second = replace(plan, query_name=f"{unique_name}_2", pipeline_id=f"{unique_name}_2")
    with pytest.raises(
        QueryFailedError, match=f"table {unique_name} belongs to query {unique_name} "
    ):
        await run_workers(second)
    assert_tables_equal(await read_table(pg, unique_name, QUERY), expected(QUERY, stream).table)


async def test_a_ledger_row_deleted_by_hand_stops_the_next_run(
    kafka_bootstrap: str, pg_dsn: str, pg: Any, unique_name: str, tmp_path: Path
) -> None:
    stream = make_stream(600, seed=46)
    await create_topic(kafka_bootstrap, unique_name, 4)
    await produce(kafka_bootstrap, unique_name, stream, timestamp_ms=T0)
    plan = make_plan(
        name=unique_name,
        bootstrap=kafka_bootstrap,
        dsn=pg_dsn,
        tmp=tmp_path,
        query=QUERY,
        max_records=40,
    )
    await run_workers(plan)
    table = await read_table(pg, unique_name, QUERY)
    await pg.execute(
        """DELETE FROM streamproc_ledger WHERE query = $1 AND partition = 2
           AND start_offset = (SELECT max(start_offset) FROM streamproc_ledger
                               WHERE query = $1 AND partition = 2)""",
        unique_name,
    )
    with pytest.raises(
        QueryFailedError,
        match=r"partition 2 of .*: its ledger ends at offset \d+ but its position is at \d+",
    ):
        await run_workers(plan)
    assert await read_table(pg, unique_name, QUERY) == table


def test_reset_by_query_name_needs_a_dsn(tmp_path: Path) -> None:
    done = subprocess.run(
        [str(BIN / "streamproc"), "reset", "no_such_query", "--yes"],
        env={k: v for k, v in os.environ.items() if k != "STREAMPROC_PG_DSN"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert done.stderr.strip() == (
        "streamproc: no_such_query: not a config file; to reset a query by name give --dsn "
        "(or set STREAMPROC_PG_DSN)"
    )


async def test_changes_that_alter_which_records_count_are_said_with_where_they_apply(
    kafka_bootstrap: str, pg_dsn: str, unique_name: str, tmp_path: Path
) -> None:
    # Allowed between runs, yet they change which records are aggregated: each is named
    # at start, with the committed offsets it applies from (STREAMING.md, "What a
    # change alters").
    from tests.integration.cli_helpers import edit, run_to_the_end

    config = await run_to_the_end(
        tmp_path, unique_name, kafka_bootstrap, pg_dsn, make_stream(200, seed=12)
    )
    unchanged = run_cli(config, kafka_bootstrap, pg_dsn)
    assert unchanged.returncode == 0 and "changed since the last run" not in unchanged.stderr

    def change(d: dict[str, Any]) -> None:
        d["streamingConfigJson"]["watermark"]["delayThreshold"] = "10 minutes"
        d["streamingConfigJson"]["watermark"]["maxFutureSkew"] = "1 day"
        d["dataQualityConfig"] = {
            "enabled": True,
            "onFailure": "continue",
            "validateAfterExtract": True,
            "validateAfterTransform": False,
            "rules": [{"ruleType": "not_null", "name": "has_value", "columns": ["value"]}],
        }

    edit(config, change)
    changed = run_cli(config, kafka_bootstrap, pg_dsn)
    assert changed.returncode == 0, changed.stderr[-2000:]
    said = [line for line in changed.stderr.splitlines() if "changed since the last run" in line]
    assert len(said) == 1, changed.stderr[-3000:]
    assert (
        f"query {unique_name}: changed since the last run: watermark delay from 5 minutes to "
        "10 minutes; max future skew from none to 1 day; data-quality rules from none to "
        "has_value: not_null on value, error (onFailure continue); applies from offsets "
        "{0: " in said[0]
    ), said[0]


def test_one_object_spelled_another_way_is_no_change_and_a_real_change_reads_as_the_config(
    pg_dsn: str, unique_name: str, tmp_path: Path
) -> None:
    # Refused before: `table x` then `public.x`; a file source's `data` then `data/`.
    # And a relative extract.path run from another directory (other files) was caught
    # only by "file data/a.jsonl was replaced", when at all.
    first, other = tmp_path / "first", tmp_path / "other"
    for place, value in ((first, 1), (other, 2)):
        (place / "data").mkdir(parents=True)
        (place / "data" / "a.jsonl").write_text(
            json.dumps({"user_id": "u", "event_time": "2026-01-01T00:00:00Z", "value": value})
            + "\n"
        )
    config = write_config(tmp_path, unique_name, "127.0.0.1:1", pg_dsn)

    def run(path: str, table: str, cwd: Path, window: str = "10 minutes") -> Any:
        document = json.loads(config.read_text())
        document["extract"] = {"sourceType": "file", "path": path}
        document["load"]["table"] = table
        document["transforms"][0]["parameters"]["windowDuration"] = window
        config.write_text(json.dumps(document))
        return subprocess.run(
            [str(BIN / "streamproc"), "run", str(config)],
            env={**os.environ, "TEST_PG_DSN": pg_dsn},
            capture_output=True,
            text=True,
            timeout=120,
            cwd=cwd,
        )

    assert run("data", unique_name, first).returncode == 0
    again = run("./data/", f"public.{unique_name}", first)
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"query {unique_name}: 0 record(s) read" in again.stdout
    elsewhere = run("data", unique_name, other)
    assert elsewhere.returncode == 1
    assert (
        f"(source path changed from {first / 'data'} to {other / 'data'}), and running on it "
        "would give wrong results"
    ) in last_line(elsewhere.stderr)
    shorter = run("data", unique_name, first, window="5 minutes")
    assert shorter.returncode == 1
    # It said {slide_ms 600000, duration_ms 600000}: jsonb's key order, in milliseconds.
    assert (
        "(window changed from {duration 10 minutes, slide 10 minutes} to "
        "{duration 5 minutes, slide 5 minutes})"
    ) in last_line(shorter.stderr)

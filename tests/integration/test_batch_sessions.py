"""Batch jobs with session windows (issue 22) end to end: `streamproc run` on a `mode:
batch` config with `gapDuration`, JSON-lines files or the real broker, and PostgreSQL;
the table compared row by row with the independent model (tests/reference_sessions.py:
no watermark, so nothing is late and every session is final at the end)."""

from __future__ import annotations

import json
import os
import random
import subprocess
from pathlib import Path
from typing import Any

from streamproc.local import create_topic
from tests.integration.batch_helpers import NOT_JSON, batch_config, write_lines
from tests.integration.cli_helpers import BIN, REPO, run_cli
from tests.kafka_io import produce_raw
from tests.reference import Query, assert_tables_equal
from tests.reference_sessions import expected_sessions, one_phase
from tests.results import read_table
from tests.streams import AGGS, BASE_MS, MINUTE, make_stream

ALL_AGGS = (
    "count=*:count,value:count,value:sum,value:avg,value:min,value:max,value:first,value:last"
)
#: The model's reading of a batch job: no watermark, complete (every session).
SESSIONS = Query(("user_id",), AGGS, output_mode="complete")
GAP_MS = 20_000


def _sessions(gap: str) -> list[dict[str, Any]]:
    parameters = {
        "groupByColumns": "user_id",
        "windowColumn": "event_time",
        "gapDuration": gap,
        "aggregations": ALL_AGGS,
    }
    return [{"transformType": "aggregation", "parameters": parameters}]


async def test_sessions_of_files_equal_the_model_and_overwrite_follows_new_input(
    pg_dsn: str, pg: Any, unique_name: str, tmp_path: Path
) -> None:
    stream: dict[int, list[Any]] = make_stream(1_200, partitions=3, seed=41)
    stream[0].insert(4, NOT_JSON)
    stream[1].insert(9, {"user_id": "u1", "event_time": "yesterday", "value": 1, "seq": -1})
    data = tmp_path / "in"
    data.mkdir()
    write_lines(data / "a.jsonl", stream[0])
    write_lines(data / "b.jsonl.gz", stream[1])
    config = batch_config(
        tmp_path,
        unique_name,
        {"sourceType": "file", "path": str(data)},
        transforms=_sessions("20 seconds"),
        write_mode="overwrite",
    )
    # Files are the partitions, in path order; a line's index is its offset.
    first = {0: stream[0], 1: stream[1]}
    want = expected_sessions(SESSIONS, GAP_MS, [0, 1], one_phase(first))
    assert len(want.bad) == 2 and not want.late and len(want.table) > 100
    done = run_cli(config, "unused:9092", pg_dsn)
    assert done.returncode == 0, done.stderr[-2000:]
    n = len(stream[0]) + len(stream[1])
    assert f"{n} record(s) read" in done.stdout, done.stdout
    assert f"aggregated {n - 2} into {len(want.table)} row(s), bad 2, filtered 0" in done.stdout
    assert_tables_equal(await read_table(pg, unique_name, SESSIONS, sessions=True), want.table)

    # A third file bridges and grows sessions: overwrite leaves exactly the new sessions
    # (no row of a session that merged or moved), and a rerun gives the same table.
    write_lines(data / "c.jsonl", stream[2])
    want = expected_sessions(SESSIONS, GAP_MS, [0, 1, 2], one_phase(stream))
    for _ in range(2):
        done = run_cli(config, "unused:9092", pg_dsn)
        assert done.returncode == 0, done.stderr[-2000:]
        table = await read_table(pg, unique_name, SESSIONS, sessions=True)
        assert_tables_equal(table, want.table)
    assert f"{len(want.table)} row(s) written, 0 rejected by the table" in done.stdout


#: configs/user-sessions.json as the model reads it (written by hand from the file).
USER_SESSIONS = Query(
    ("user_id",),
    (
        ("events", None, "count"),
        ("page_views_count", "page_views", "count"),
        ("clicks_sum", "clicks", "sum"),
    ),
    output_mode="complete",
)
USER_GAP_MS = 30 * MINUTE


def user_activity(seed: int, users: int = 12) -> list[dict[str, Any]]:
    """Each user's visits: clicks minutes apart, pauses of about the gap, some exactly it."""
    rng = random.Random(seed)
    records: list[dict[str, Any]] = []
    for u in range(users):
        t = BASE_MS + rng.randrange(60 * MINUTE)
        for _ in range(rng.randrange(20, 60)):
            roll = rng.random()
            if roll < 0.7:
                t += rng.randrange(0, 10 * MINUTE)
            elif roll < 0.8:
                t += USER_GAP_MS  # exactly the gap: a new session
            elif roll < 0.95:
                t += rng.randrange(25 * MINUTE, 35 * MINUTE)
            else:
                t += rng.randrange(2 * 60 * MINUTE, 9 * 60 * MINUTE)
            record: dict[str, Any] = {"user_id": f"user-{u}", "event_time": t, "page_views": 1}
            if rng.random() < 0.1:
                record["page_views"] = None
            if rng.random() < 0.9:
                record["clicks"] = rng.randrange(0, 6)
            records.append(record)
    rng.shuffle(records)  # a batch reads the whole input: order does not matter
    return records


async def test_the_user_sessions_example_recomputes_its_table(
    kafka_bootstrap: str, pg_dsn: str, pg: Any, unique_name: str, tmp_path: Path
) -> None:
    # configs/user-sessions.json as shipped, pointed at this test's topic and tables.
    document = json.loads((REPO / "configs" / "user-sessions.json").read_text())
    document["extract"]["topic"] = document["extract"]["connectionParams"]["subscribe"] = (
        unique_name
    )
    document["load"]["table"] = unique_name
    document["errorHandlingConfig"]["dlqConfig"]["table"] = f"{unique_name}_dlq"
    config = tmp_path / "user-sessions.json"
    config.write_text(json.dumps(document))

    values = [json.dumps(r).encode() for r in user_activity(seed=51)]
    values.insert(40, b"{not json")
    values.insert(
        90, json.dumps({"user_id": "user-1", "event_time": BASE_MS, "clicks": "n/a"}).encode()
    )
    # The group key is not the message key: a user's records are on every partition,
    # so partial sessions of three partitions merge into one session.
    await create_topic(kafka_bootstrap, unique_name, 3)
    await produce_raw(
        kafka_bootstrap, unique_name, [(i % 3, None, v) for i, v in enumerate(values)]
    )
    stream: dict[int, list[Any]] = {p: [] for p in range(3)}
    for i, v in enumerate(values):
        stream[i % 3].append(NOT_JSON if v == b"{not json" else json.loads(v))
    want = expected_sessions(USER_SESSIONS, USER_GAP_MS, [0, 1, 2], one_phase(stream))
    assert len(want.bad) == 2 and not want.late and len(want.table) > 40

    for _ in range(2):  # overwrite: a rerun gives the same table
        env = {"STREAMPROC_KAFKA_BOOTSTRAP": kafka_bootstrap, "STREAMPROC_PG_DSN": pg_dsn}
        done = subprocess.run(
            [str(BIN / "streamproc"), "run", str(config)],
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        assert f"{len(values)} record(s) read" in done.stdout, done.stdout
        assert f"into {len(want.table)} row(s), bad 2, filtered 0" in done.stdout, done.stdout
        table = await read_table(pg, unique_name, USER_SESSIONS, sessions=True)
        assert_tables_equal(table, want.table)
        dead = await pg.fetch(
            f'SELECT source_partition, source_offset FROM "{unique_name}_dlq" '
            "ORDER BY source_partition, source_offset"
        )
        # Dead letters are unique on their source position: the rerun adds none.
        assert sorted((r["source_partition"], r["source_offset"]) for r in dead) == sorted(want.bad)


async def test_upsert_of_sessions_is_refused_and_writes_nothing(
    pg_dsn: str, pg: Any, unique_name: str, tmp_path: Path
) -> None:
    # An upsert over a grown input would leave a session's old row beside its new one
    # (STREAMING.md, "Session windows"): the job stops before it reads or writes.
    stream: dict[int, list[Any]] = make_stream(100, partitions=1, seed=43)
    data = tmp_path / "in"
    data.mkdir()
    write_lines(data / "p0.jsonl", stream[0])
    config = batch_config(
        tmp_path,
        unique_name,
        {"sourceType": "file", "path": str(data)},
        transforms=_sessions("20 seconds"),
        write_mode="upsert",
        upsert_keys="window_start,user_id,window_end",
    )
    done = run_cli(config, "unused:9092", pg_dsn)
    assert done.returncode != 0
    lines = [line for line in done.stderr.splitlines() if "writeMode" in line]
    assert len(lines) == 1 and "upsert cannot keep session windows right" in lines[0]
    assert await pg.fetchval("SELECT to_regclass($1)", unique_name) is None

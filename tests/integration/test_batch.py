"""Batch mode end to end: `streamproc run` on a `mode: batch` config, the real broker and
PostgreSQL, tables compared row by row with the model (tests/reference.py)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

from streamproc.config import load_config
from streamproc.demo.events import config_records, stream_spec_for
from streamproc.local import create_topic
from tests.integration.batch_helpers import (
    NOT_JSON,
    aggregation,
    batch_config,
    kafka_extract,
    write_lines,
)
from tests.integration.cli_helpers import BIN, REPO, last_line, run_cli
from tests.kafka_io import produce, produce_raw, read_topic
from tests.reference import Query, assert_tables_equal, expected
from tests.results import read_table
from tests.streams import AGGS, MINUTE, make_stream

ALL_AGGS = (
    "count=*:count,value:count,value:sum,value:avg,value:min,value:max,value:first,value:last"
)
#: Batch mode: no watermark, so nothing is late and every window is final at the end.
WINDOWED = Query(("user_id",), AGGS, size_ms=10 * MINUTE, output_mode="complete")
SLIDING = Query(
    ("user_id",), AGGS, size_ms=10 * MINUTE, slide_ms=4 * MINUTE, output_mode="complete"
)
CLI_AGGS = (("count", None, "count"), ("value_sum", "value", "sum"), ("value_max", "value", "max"))


def file_extract(path: Path | str) -> dict[str, Any]:
    return {"sourceType": "file", "path": str(path)}


async def records_of(pg: Any, table: str) -> list[Any]:
    """The whole-record column of a pass-through table, ordered by seq."""
    rows = await pg.fetch(f'SELECT record::text AS r FROM "{table}"')
    return sorted((json.loads(r["r"]) for r in rows), key=lambda d: (d["seq"], json.dumps(d)))


async def test_windowed_aggregation_over_kafka_matches_the_model(
    kafka_bootstrap: str, pg_dsn: str, pg: Any, unique_name: str, tmp_path: Path
) -> None:
    stream = make_stream(1_500, seed=31)
    # Bad input: an event time that does not parse, a sum over a string.
    stream[0].insert(5, {"user_id": "u1", "event_time": "yesterday", "value": 1, "seq": -1})
    stream[2].append({"user_id": "u2", "event_time": "2025-11-26T10:00:00Z", "value": "x"})
    await create_topic(kafka_bootstrap, unique_name, 4)
    await produce(kafka_bootstrap, unique_name, stream)
    config = batch_config(
        tmp_path,
        unique_name,
        kafka_extract(unique_name),
        transforms=aggregation(ALL_AGGS),
        write_mode="overwrite",
    )
    done = run_cli(config, kafka_bootstrap, pg_dsn)
    assert done.returncode == 0, done.stderr[-2000:]
    want = expected(WINDOWED, stream)
    assert len(want.bad) == 2
    assert f"batch job {unique_name}: 1502 record(s) read from {unique_name}" in done.stdout
    assert f"aggregated 1500 into {len(want.table)} row(s), bad 2, filtered 0" in done.stdout
    assert f"{len(want.table)} row(s) written, 0 rejected by the table" in done.stdout
    assert "(first: partition 0 offset 5)" in done.stdout
    assert_tables_equal(await read_table(pg, unique_name, WINDOWED), want.table)


async def test_file_source_glob_gzip_partial_line_and_bad_lines_match_the_model(
    pg_dsn: str, pg: Any, unique_name: str, tmp_path: Path
) -> None:
    stream = make_stream(900, partitions=3, seed=32)
    data = tmp_path / "in"
    data.mkdir()
    stream[0].insert(3, NOT_JSON)
    stream[1].insert(0, [1, 2])  # JSON, not an object
    write_lines(data / "a.jsonl", stream[0])
    write_lines(data / "b.jsonl.gz", stream[1])
    write_lines(data / "c.jsonl", [*stream[2], {"user_id": "u0"}], complete=False)
    write_lines(data / "notes.txt", ["not matched by the glob"])
    config = batch_config(
        tmp_path,
        unique_name,
        file_extract(data / "*.jsonl*"),
        transforms=aggregation(ALL_AGGS),
    )
    config = _with_slide(config)
    done = run_cli(config, "unused:9092", pg_dsn)
    assert done.returncode == 0, done.stderr[-2000:]
    want = expected(SLIDING, stream)
    assert len(want.bad) == 2
    assert "902 record(s) read" in done.stdout
    assert f"{data / 'a.jsonl'}:4" in done.stdout
    assert f"ignored: {data / 'c.jsonl'}: last line incomplete" in done.stdout
    assert_tables_equal(await read_table(pg, unique_name, SLIDING), want.table)


def _with_slide(config: Path) -> Path:
    document = json.loads(config.read_text())
    document["transforms"][0]["parameters"]["slideDuration"] = "4 minutes"
    config.write_text(json.dumps(document))
    return config


async def test_append_overwrite_and_upsert_of_records_without_aggregation(
    pg_dsn: str, pg: Any, unique_name: str, tmp_path: Path
) -> None:
    first = [{"id": i, "seq": i, "v": f"a{i}"} for i in range(5)]
    second = [{"id": i, "seq": 10 + i, "v": f"b{i}"} for i in range(3, 8)]
    source = write_lines(tmp_path / "in.jsonl", first)

    append = batch_config(tmp_path, f"{unique_name}_a", file_extract(source), batchsize=2)
    for _ in range(2):
        assert run_cli(append, "unused:9092", pg_dsn).returncode == 0
    assert await records_of(pg, f"{unique_name}_a") == sorted(first + first, key=lambda d: d["seq"])
    columns = await pg.fetch(
        "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = $1",
        f"{unique_name}_a",
    )
    assert [(c["column_name"], c["data_type"]) for c in columns] == [("record", "jsonb")]

    overwrite = batch_config(
        tmp_path, f"{unique_name}_o", file_extract(source), write_mode="overwrite"
    )
    assert run_cli(overwrite, "unused:9092", pg_dsn).returncode == 0
    write_lines(source, second)
    for _ in range(2):  # a rerun of the same input gives the same table
        done = run_cli(overwrite, "unused:9092", pg_dsn)
        assert done.returncode == 0, done.stderr
    assert await records_of(pg, f"{unique_name}_o") == second
    assert "5 row(s) written, 0 rejected by the table, 5 previous row(s) deleted" in done.stdout

    upsert = batch_config(
        tmp_path, f"{unique_name}_u", file_extract(source), write_mode="upsert", upsert_keys="id"
    )
    write_lines(source, first + second)  # ids 3 and 4 twice: the last read wins
    for _ in range(2):
        done = run_cli(upsert, "unused:9092", pg_dsn)
        assert done.returncode == 0, done.stderr
    rows = await pg.fetch(f'SELECT id, record::text AS r FROM "{unique_name}_u" ORDER BY id')
    assert [(r["id"], json.loads(r["r"])) for r in rows] == [
        (str(d["id"]), d) for d in first[:3] + second
    ]


async def test_upsert_of_an_aggregation_is_idempotent_and_follows_new_input(
    pg_dsn: str, pg: Any, unique_name: str, tmp_path: Path
) -> None:
    stream = make_stream(600, partitions=2, seed=33)
    data = tmp_path / "in"
    data.mkdir()
    write_lines(data / "p0.jsonl", stream[0])
    config = batch_config(
        tmp_path,
        unique_name,
        file_extract(data),
        transforms=aggregation(),
        write_mode="upsert",
        upsert_keys="window_start,user_id,window_end",
    )
    query = Query(("user_id",), CLI_AGGS, size_ms=10 * MINUTE, output_mode="complete")
    for _ in range(2):
        assert run_cli(config, "unused:9092", pg_dsn).returncode == 0
        want = expected(query, {0: stream[0]})
        assert_tables_equal(await read_table(pg, unique_name, query), want.table)
    write_lines(data / "p1.jsonl", stream[1])
    assert run_cli(config, "unused:9092", pg_dsn).returncode == 0
    assert_tables_equal(await read_table(pg, unique_name, query), expected(query, stream).table)


async def _amounts_table(pg: Any, table: str) -> None:
    await pg.execute(
        f'CREATE TABLE "{table}" (id integer PRIMARY KEY, amount integer CHECK (amount >= 0), '
        "loaded_at timestamptz NOT NULL DEFAULT now())"
    )
    await pg.execute(f'INSERT INTO "{table}" (id, amount) VALUES (100, 1), (101, 2)')


def _some_refused() -> list[Any]:
    """Six records for `_amounts_table`, two the table refuses, and a line that is not JSON."""
    records: list[Any] = [{"id": i, "amount": i} for i in range(6)]
    records[1]["amount"] = -1  # a check constraint
    records[3]["amount"] = "lots"  # a value an integer column cannot hold
    records.insert(4, NOT_JSON)
    return records


async def _amounts(pg: Any, table: str) -> list[tuple[int, int]]:
    rows = await pg.fetch(f'SELECT id, amount FROM "{table}" ORDER BY id')
    return [(r["id"], r["amount"]) for r in rows]


async def test_a_row_the_table_refuses_with_failfast_rolls_back_the_whole_load(
    pg_dsn: str, pg: Any, unique_name: str, tmp_path: Path
) -> None:
    await _amounts_table(pg, unique_name)
    records = [{"id": i, "amount": 10 * i} for i in range(7)]
    records[5]["amount"] = -5  # chunks of 2: the first two chunks went in before this one
    source = write_lines(tmp_path / "in.jsonl", records)
    config = batch_config(
        tmp_path,
        unique_name,
        file_extract(source),
        write_mode="overwrite",
        batchsize=2,
        error_handling={"failFast": True},
    )
    done = run_cli(config, "unused:9092", pg_dsn)
    assert done.returncode == 1
    line = last_line(done.stderr)
    assert line.startswith(f"streamproc: table {unique_name} refused {source}:6: ")
    assert "check constraint" in line and "the table is unchanged" in line
    assert await _amounts(pg, unique_name) == [(100, 1), (101, 2)]


async def test_rows_the_table_refuses_are_rejected_with_reasons_and_dead_lettered(
    kafka_bootstrap: str, pg_dsn: str, pg: Any, unique_name: str, tmp_path: Path
) -> None:
    await _amounts_table(pg, unique_name)
    dlq = f"{unique_name}_dlq"
    await create_topic(kafka_bootstrap, dlq, 1)
    records = _some_refused()
    source = write_lines(tmp_path / "in.jsonl", records)
    config = batch_config(
        tmp_path,
        unique_name,
        file_extract(source),
        batchsize=4,
        error_handling={
            "dlqConfig": {"dlqType": "kafka", "topic": dlq, "bootstrapServers": "${TEST_BOOTSTRAP}"}
        },
    )
    done = run_cli(config, kafka_bootstrap, pg_dsn)
    assert done.returncode == 0, done.stderr[-2000:]
    assert await _amounts(pg, unique_name) == [(0, 0), (2, 2), (4, 4), (5, 5), (100, 1), (101, 2)]
    assert "loaded as rows 6, bad 1, filtered 0" in done.stdout
    assert "4 row(s) written, 2 rejected by the table" in done.stdout
    assert f"dead letters sent to {dlq}: 3" in done.stdout
    letters = await read_topic(kafka_bootstrap, dlq)
    got = {(x.headers["source_offset"], x.value.decode()): x.headers["reason"] for x in letters}
    assert set(got) == {
        ("1", json.dumps(records[1])),
        ("3", json.dumps(records[3])),
        ("4", NOT_JSON),
    }
    assert "check constraint" in got[("1", json.dumps(records[1]))]
    assert 'invalid input syntax for type integer: "lots"' in got[("3", json.dumps(records[3]))]
    assert got[("4", NOT_JSON)].startswith("value: not JSON")
    # A file is named by its path and a digest of its head (its identity).
    assert all(x.headers["source_topic"].startswith(f"{source}#") for x in letters)


async def test_a_postgresql_dlq_holds_bad_refused_and_quarantined_records_once_per_line(
    pg_dsn: str, pg: Any, unique_name: str, tmp_path: Path
) -> None:
    await _amounts_table(pg, unique_name)
    records = _some_refused()
    records[6]["id"] = None  # quarantined by the rule
    source = write_lines(tmp_path / "in.jsonl", records)
    config = batch_config(
        tmp_path,
        unique_name,
        file_extract(source),
        write_mode="overwrite",
        batchsize=4,
        error_handling={"dlqConfig": {"dlqType": "postgresql"}},
    )
    document = json.loads(config.read_text())
    document["dataQualityConfig"] = {
        "enabled": True,
        "onFailure": "continue",
        "validateAfterExtract": True,
        "rules": [{"ruleType": "not_null", "name": "has_id", "columns": ["id"]}],
    }
    config.write_text(json.dumps(document))
    done = run_cli(config, "unused:9092", pg_dsn)
    assert done.returncode == 0, done.stderr[-2000:]
    assert await _amounts(pg, unique_name) == [(0, 0), (2, 2), (4, 4)]
    assert "loaded as rows 5, bad 1, filtered 1" in done.stdout
    assert f"dead letters sent to table {unique_name}_dlq: 4" in done.stdout

    async def dead_letters() -> list[dict[str, Any]]:
        rows = await pg.fetch(f'SELECT * FROM "{unique_name}_dlq" ORDER BY source_offset')
        return [dict(r) for r in rows]

    first = await dead_letters()
    lines = [r if isinstance(r, str) else json.dumps(r) for r in records]
    assert [(r["source_offset"], r["record_value"].decode()) for r in first] == [
        (1, lines[1]),
        (3, lines[3]),
        (4, NOT_JSON),
        (6, lines[6]),
    ]
    reasons = [r["reason"] for r in first]
    assert "check constraint" in reasons[0] and first[0]["error"]
    assert 'invalid input syntax for type integer: "lots"' in reasons[1]
    assert reasons[2].startswith("value: not JSON") and first[2]["error"] is None
    assert reasons[3] == "rule has_id (not_null): id is null"
    assert {
        (r["query"], r["source_topic"].split("#")[0], r["source_partition"]) for r in first
    } == {(unique_name, str(source), 0)}
    # A rerun over the same input overwrites the table and dead-letters the
    # same lines again: the dead-letter table keeps one row per line.
    done = run_cli(config, "unused:9092", pg_dsn)
    assert done.returncode == 0, done.stderr[-2000:]
    assert await _amounts(pg, unique_name) == [(0, 0), (2, 2), (4, 4)]
    assert await dead_letters() == first


async def test_dead_letters_of_files_stay_their_own_when_the_directory_changes(
    pg_dsn: str, pg: Any, unique_name: str, tmp_path: Path
) -> None:
    # Dead letters were keyed by (directory, file index, line): with a file removed,
    # the next file took its index, so one bad line was stored twice and a new one
    # collided and was lost, while the report said it was sent.
    data = tmp_path / "in"
    data.mkdir()
    write_lines(data / "a.jsonl", [{"id": 1}, NOT_JSON])
    write_lines(data / "b.jsonl", [{"id": 2}, "[1]"])
    config = batch_config(
        tmp_path,
        unique_name,
        file_extract(data),
        error_handling={"dlqConfig": {"dlqType": "postgresql"}},
    )
    assert run_cli(config, "unused:9092", pg_dsn).returncode == 0

    async def letters() -> list[tuple[str, int, str]]:
        rows = await pg.fetch(
            f'SELECT source_topic, source_offset, reason FROM "{unique_name}_dlq"'
        )
        return sorted((r["source_topic"], r["source_offset"], r["reason"]) for r in rows)

    first = await letters()
    assert [(t.split("#")[0], o) for t, o, _ in first] == [
        (str(data / "a.jsonl"), 1),
        (str(data / "b.jsonl"), 1),
    ]
    (data / "a.jsonl").unlink()
    write_lines(data / "b.jsonl", [{"id": 2}, "[1]", NOT_JSON])  # grown: a new bad line
    done = run_cli(config, "unused:9092", pg_dsn)
    assert done.returncode == 0, done.stderr
    after = await letters()
    assert [(t.split("#")[0], o) for t, o, _ in after] == [
        (str(data / "a.jsonl"), 1),
        (str(data / "b.jsonl"), 1),
        (str(data / "b.jsonl"), 2),  # stored, not lost to a collision
    ]
    assert after[:2] == first  # and none stored twice


async def test_a_bad_record_with_failfast_stops_before_anything_is_loaded(
    pg_dsn: str, pg: Any, unique_name: str, tmp_path: Path
) -> None:
    source = write_lines(tmp_path / "in.jsonl", [{"id": 1}, "[]", {"id": 2}])
    config = batch_config(
        tmp_path, unique_name, file_extract(source), error_handling={"failFast": True}
    )
    done = run_cli(config, "unused:9092", pg_dsn)
    assert done.returncode == 1
    assert last_line(done.stderr) == (
        f"streamproc: bad record at {source}:2: value: a JSON array, not an object "
        "(errorHandlingConfig.failFast: nothing loaded)"
    )
    assert not await pg.fetchval("SELECT to_regclass($1) IS NOT NULL", unique_name)


async def test_an_unreachable_database_is_one_line_after_the_retries(
    unique_name: str, tmp_path: Path
) -> None:
    source = write_lines(tmp_path / "in.jsonl", [{"id": 1}])
    config = batch_config(
        tmp_path,
        unique_name,
        file_extract(source),
        error_handling={
            "retryConfig": {"strategy": "fixed", "maxAttempts": 2, "initialDelaySeconds": 0.1}
        },
    )
    done = run_cli(config, "unused:9092", "postgresql://u:secret@127.0.0.1:1/db")
    assert done.returncode == 1
    line = last_line(done.stderr)
    assert line.startswith(
        f"streamproc: batch job {unique_name}: cannot connect to PostgreSQL at 127.0.0.1:1: "
        "connection refused"
    )
    assert line.endswith("; nothing was loaded") and "secret" not in done.stderr
    assert "(attempt 1 of 2)" in done.stderr


async def test_a_unique_rule_after_extract_covers_the_whole_input(
    pg_dsn: str, pg: Any, unique_name: str, tmp_path: Path
) -> None:
    data = tmp_path / "in"
    data.mkdir()
    write_lines(data / "a.jsonl", [{"id": 1, "seq": 1}, {"id": 2, "seq": 2}])
    write_lines(data / "b.jsonl", [{"id": 2, "seq": 3}, {"id": 3, "seq": 4}])
    config = batch_config(tmp_path, unique_name, file_extract(data))
    document = json.loads(config.read_text())
    document["dataQualityConfig"] = {
        "enabled": True,
        "validateAfterExtract": True,
        "onFailure": "continue",
        "rules": [{"ruleType": "unique", "name": "one per id", "columns": ["id"]}],
    }
    config.write_text(json.dumps(document))
    done = run_cli(config, "unused:9092", pg_dsn)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "loaded as rows 3, bad 0, filtered 1" in done.stdout
    assert [d["seq"] for d in await records_of(pg, unique_name)] == [1, 2, 4]


DAILY = Query(
    ("store_id", "category"),
    (
        ("orders", None, "count"),
        ("quantity_sum", "quantity", "sum"),
        ("revenue_sum", "revenue", "sum"),
        ("avg_price_avg", "avg_price", "avg"),
        ("revenue_max", "revenue", "max"),
    ),
    size_ms=24 * 60 * MINUTE,
    output_mode="complete",
    time_column="sale_time",
)


async def test_the_daily_sales_report_example_recomputes_its_table(
    kafka_bootstrap: str, pg_dsn: str, pg: Any, unique_name: str, tmp_path: Path
) -> None:
    # configs/sales-daily-report.json as shipped, pointed at this test's topic and tables.
    document = json.loads((REPO / "configs" / "sales-daily-report.json").read_text())
    document["extract"]["topic"] = document["extract"]["connectionParams"]["subscribe"] = (
        unique_name
    )
    document["load"]["table"] = unique_name
    document["errorHandlingConfig"]["dlqConfig"]["table"] = f"{unique_name}_dlq"
    config = tmp_path / "sales-daily-report.json"
    config.write_text(json.dumps(document))
    cfg = load_config(config, env={})
    records = list(config_records(stream_spec_for(cfg, 30), 1_764_151_200_000, 1_500))
    # Two records the not_null rule quarantines, one line that is not JSON.
    records[10] = {**records[10], "store_id": None}
    records[20] = {**records[20], "category": None}
    values = [json.dumps(r).encode() for r in records]
    values.insert(30, b"{not json")
    await create_topic(kafka_bootstrap, unique_name, 3)
    await produce_raw(
        kafka_bootstrap, unique_name, [(i % 3, None, v) for i, v in enumerate(values)]
    )
    stream: dict[int, list[Any]] = {p: [] for p in range(3)}
    for i, v in enumerate(values):
        stream[i % 3].append(json.loads(v) if v != b"{not json" else NOT_JSON)
    kept = {
        p: [
            (o, r)
            for o, r in enumerate(rs)
            if not (isinstance(r, dict) and (r["store_id"] is None or r["category"] is None))
        ]
        for p, rs in stream.items()
    }
    want = expected(DAILY, kept)
    assert len(want.bad) == 1 and len(want.table) > 20
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
        assert_tables_equal(await read_table(pg, unique_name, DAILY), want.table)
        dead = await pg.fetch(
            f'SELECT source_partition, source_offset, reason FROM "{unique_name}_dlq" '
            "ORDER BY source_offset, source_partition"
        )
        # Dead letters are unique on their source position: the rerun adds none.
        assert len(dead) == 3
        assert sorted(r["reason"].split(":")[0] for r in dead) == [
            "rule StoreAndCategory (not_null)",
            "rule StoreAndCategory (not_null)",
            "value",
        ]

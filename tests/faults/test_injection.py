"""No config and no record can inject SQL.

Identifiers from a config (tables, columns, topics, names) are validated:
`streamproc validate` rejects hostile ones, naming the field. Values from
records (group keys, Kafka keys, late records) only ever travel as bind
parameters: a stream whose group keys are SQL payloads lands as data, in a
table whose name is a reserved word in its own schema, and a canary table
the payloads aim at is untouched.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from streamproc.local import create_topic
from streamproc.sinks.layout import quote_ident
from streamproc.sinks.rows import datetime_to_ms
from tests.faults.harness import (
    DELAY_MS,
    Pipeline,
    Worker,
    check_ledger,
    expected_late,
    fault_query,
    produce_raw,
    read_late_table,
)
from tests.integration.expected import Query, expected
from tests.integration.pipeline_helpers import assert_tables_equal, make_stream, with_offsets

BIN = Path(sys.executable).parent
HOSTILE = "x; DROP TABLE canary; --"


def _set(document: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    changed = copy.deepcopy(document)
    node: Any = changed
    *parents, last = path.split("/")
    for part in parents:
        node = node[int(part)] if part.isdigit() else node[part]
    node[last] = value
    return changed


AGG = "transforms/0/parameters"
CONFIG_ATTACKS = [
    ("load/table", HOSTILE, "load.table"),
    ("load/table", 'x"; DROP TABLE canary; --', "load.table"),
    ("load/table", "public.x.canary", "load.table"),
    ("load/table", "x'y", "load.table"),
    (f"{AGG}/groupByColumns", "user_id; DROP TABLE canary", "groupByColumns"),
    (f"{AGG}/groupByColumns", 'user_id,"a"', "groupByColumns"),
    (f"{AGG}/windowColumn", "event_time' OR '1'='1", "windowColumn"),
    (f"{AGG}/aggregations", 'n"; DROP TABLE canary; --=*:count', "aggregations"),
    (f"{AGG}/aggregations", "value); DROP TABLE canary; --:sum", "aggregations"),
    ("streamingConfigJson/watermark/eventTimeColumn", "t; --", "eventTimeColumn"),
    (
        "streamingConfigJson/lateDataConfig",
        {"strategy": "separatestream", "lateDataTable": HOSTILE},
        "lateDataTable",
    ),
    ("streamingConfigJson/queryName", "q'; DROP TABLE canary; --", "queryName"),
    ("extract/connectionParams/subscribe", "t'; DROP TABLE canary; --", "subscribe"),
    ("errorHandlingConfig/dlqConfig", {"dlqType": "kafka", "topic": "dlq; rm -rf /"}, "topic"),
]


def test_validate_rejects_hostile_identifiers(tmp_path: Path) -> None:
    base = Pipeline(
        name="injection",
        topic="events",
        table="results",
        bootstrap="localhost:9092",
        dsn="postgresql://postgres@127.0.0.1:5432/postgres",
        checkpoint=tmp_path / "checkpoints",
    ).document()
    clean = tmp_path / "clean.json"
    clean.write_text(json.dumps(base))
    ok = subprocess.run([str(BIN / "streamproc"), "validate", str(clean)], capture_output=True)
    assert ok.returncode == 0, ok.stdout + ok.stderr  # the attacks below are the only change
    for i, (path, value, field) in enumerate(CONFIG_ATTACKS):
        config = tmp_path / f"attack-{i}.json"
        config.write_text(json.dumps(_set(base, path, value)))
        done = subprocess.run(
            [str(BIN / "streamproc"), "validate", str(config)], capture_output=True, text=True
        )
        output = done.stdout + done.stderr
        assert done.returncode == 1, (path, value, output)
        assert field in output, (path, value, output)


PAYLOADS = [
    "'; DROP TABLE {canary}; --",
    '"; DROP TABLE {canary}; --',
    "'); DELETE FROM streamproc_ledger; --",
    "$$; DROP TABLE {canary}; $$",
    "\\'; DROP TABLE {canary}; --",
    "Robert'); DROP TABLE {canary};--",
    "' OR '1'='1",
    "\"quoted\" and 'single'",
    "back\\slash \\\\ and \\x27",
    "%s %d {} $1 ?",
    "E'\\x27'",
    "multi\nline; -- comment",
    "/* */ ; ; ;",
    "ünïcödé ✓ 漢字",
    "",
]


@pytest.mark.slow
async def test_sql_in_records_lands_as_data(
    kafka_bootstrap: str, pg_dsn: str, pg: Any, unique_name: str, tmp_path: Path
) -> None:
    schema = unique_name
    canary = f"{schema}.canary"
    await pg.execute(f"CREATE SCHEMA {quote_ident(schema)}")
    await pg.execute(f"CREATE TABLE {quote_ident(canary)} (x int)")
    await pg.execute(f"INSERT INTO {quote_ident(canary)} VALUES (42)")
    payloads = [p.replace("{canary}", canary) for p in PAYLOADS]
    stream = make_stream(6_000, partitions=2, seed=88)
    for records in stream.values():
        for rec in records:
            # The group column is named like an SQL keyword; its values are SQL.
            del rec["user_id"]
            rec["from"] = payloads[rec["seq"] % len(payloads)]
    messages = [
        (p, payloads[i % len(payloads)].encode(), json.dumps(rec).encode())
        for p, records in stream.items()
        for i, rec in enumerate(records)
    ]
    await create_topic(kafka_bootstrap, unique_name, 2)
    await produce_raw(kafka_bootstrap, unique_name, messages)
    table, late_table = f"{schema}.order", f"{schema}.group"  # reserved words
    pipeline = Pipeline(
        name=unique_name,
        topic=unique_name,
        table=table,
        bootstrap=kafka_bootstrap,
        dsn=pg_dsn,
        checkpoint=tmp_path / "checkpoints",
        trigger="availablenow",
        group_by="from",
        late={"strategy": "separatestream", "lateDataTable": late_table},
    )
    worker = Worker(pipeline.write(tmp_path), tmp_path / "worker.log")
    try:
        assert await worker.finish() == 0, worker.text()[-3000:]
    finally:
        worker.stop()

    assert await pg.fetchval(f"SELECT x FROM {quote_ident(canary)}") == 42
    produced = {p: len(records) for p, records in stream.items()}
    ledger = await check_ledger(pg, unique_name, unique_name, produced)
    query = fault_query(group_by=("from",))
    model = expected(query, with_offsets(stream))
    got = await read_result(pg, table, query)
    assert_tables_equal(got, model.table)
    assert {key[0] for key in got} == set(payloads)  # every payload is a group, as text
    late = await read_late_table(pg, late_table, unique_name)
    assert late == expected_late(with_offsets(stream), DELAY_MS)
    assert {row[3]["from"] for row in late.values()} <= set(payloads)
    print(
        f"\ninjection: {len(CONFIG_ATTACKS)} hostile configs rejected; {len(payloads)} SQL "
        f"payloads as group keys and message keys over {ledger.records} records landed as "
        f"{len(got)} rows of {table} and {len(late)} late rows; canary intact; 0 differences"
    )


async def read_result(pg: Any, table: str, query: Query) -> dict[tuple[Any, ...], tuple[Any, ...]]:
    """A (possibly schema-qualified) result table as {(*key, start ms, end ms): values}."""
    out: dict[tuple[Any, ...], tuple[Any, ...]] = {}
    for r in await pg.fetch(f"SELECT * FROM {quote_ident(table)}"):
        key = (
            *(r[c] for c in query.group_by),
            datetime_to_ms(r["window_start"]),
            datetime_to_ms(r["window_end"]),
        )
        out[key] = tuple(
            json.loads(r[name]) if func in ("first", "last") and r[name] is not None else r[name]
            for name, _col, func in query.aggregations
        )
    return out

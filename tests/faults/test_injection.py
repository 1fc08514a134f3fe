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
from pathlib import Path
from typing import Any

import pytest

from streamproc.cli import main as streamproc_main
from streamproc.local import create_topic
from streamproc.sinks.layout import quote_ident
from tests.faults.harness import (
    Pipeline,
    PipelineFactory,
    Worker,
    check_ledger,
    fault_query,
)
from tests.kafka_io import produce_raw
from tests.reference import assert_tables_equal, expected
from tests.results import read_late_table, read_table
from tests.streams import make_stream

# The worker joins its group once and its session never expires here: a short one
# shortens the wait for its first assignment (about half of it).
SESSION_MS = 3_000
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


def _clean_document(tmp_path: Path) -> dict[str, Any]:
    return Pipeline(
        name="injection",
        topic="events",
        table="results",
        bootstrap="localhost:9092",
        dsn="postgresql://postgres@127.0.0.1:5432/postgres",
        checkpoint=tmp_path / "checkpoints",
    ).document()


def _validate(
    document: dict[str, Any], path: Path, capsys: pytest.CaptureFixture[str]
) -> tuple[int, str, str]:
    """``streamproc validate PATH`` in this process: (exit code, stdout, stderr)."""
    path.write_text(json.dumps(document))
    capsys.readouterr()
    code = streamproc_main(["validate", str(path)])
    out, err = capsys.readouterr()
    return code, out, err


def test_validate_accepts_the_clean_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The attacks below are the only change to this config.
    code, out, err = _validate(_clean_document(tmp_path), tmp_path / "clean.json", capsys)
    assert code == 0, out + err


@pytest.mark.parametrize(
    ("path", "value", "field"),
    CONFIG_ATTACKS,
    ids=[f"{i}-{field}" for i, (_, _, field) in enumerate(CONFIG_ATTACKS)],
)
def test_validate_rejects_hostile_identifiers(
    path: str, value: Any, field: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    attack = _set(_clean_document(tmp_path), path, value)
    code, out, err = _validate(attack, tmp_path / "attack.json", capsys)
    assert code == 1, (path, value, out + err)
    errors = [line for line in err.splitlines() if ": warning: " not in line]
    assert len(errors) == 1 and field in errors[0], (path, value, out + err)


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
    kafka_bootstrap: str, pg: Any, unique_name: str, tmp_path: Path, pipeline: PipelineFactory
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
    pipe = pipeline(
        table=table,
        trigger="availablenow",
        group_by="from",
        late={"strategy": "separatestream", "lateDataTable": late_table},
    )
    worker = Worker(pipe.write(tmp_path), tmp_path / "worker.log", session_timeout_ms=SESSION_MS)
    try:
        assert await worker.finish() == 0, worker.text()[-3000:]
    finally:
        worker.stop()

    assert await pg.fetchval(f"SELECT x FROM {quote_ident(canary)}") == 42
    produced = {p: len(records) for p, records in stream.items()}
    ledger = await check_ledger(pg, unique_name, unique_name, produced)
    query = fault_query(group_by=("from",))
    model = expected(query, stream)
    got = await read_table(pg, table, query)
    assert_tables_equal(got, model.table)
    assert {key[0] for key in got} == set(payloads)  # every payload is a group, as text
    late = await read_late_table(pg, late_table, unique_name)
    assert late == model.late
    assert {row[3]["from"] for row in late.values()} <= set(payloads)
    print(
        f"\ninjection: {len(CONFIG_ATTACKS)} hostile configs rejected; {len(payloads)} SQL "
        f"payloads as group keys and message keys over {ledger.records} records landed as "
        f"{len(got)} rows of {table} and {len(late)} late rows; canary intact; 0 differences"
    )

"""Poison input: 28 kinds of bad records, each in two partitions, among good records.

With dlqType postgresql the same records land in a dead-letter table, once
each, across a kill -9 and a replay of the whole topic.

Every poison record goes to the DLQ topic with a reason header, the worker
keeps running, and the accounting is exact: records read = aggregated + late
+ bad + filtered, per the ledger and per the DLQ contents. Three kinds pass
the engine but PostgreSQL refuses them (a NUL or a lone surrogate in a group
key, a 1 MB group key): the worker isolates exactly those records, dead-
letters them with the ledger batch in the headers and goes on. With
failFast the same refusal stops `streamproc run` with exit code 1 and one
line, with nothing of the refused batch written.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from streamproc.local import create_topic
from tests.faults.harness import (
    PipelineFactory,
    Worker,
    check_ledger,
    fault_query,
    good_records,
    poison_records,
    wait_for_progress,
    wait_for_records,
    with_poison,
)
from tests.kafka_io import Message, produce_raw, read_topic
from tests.reference import assert_tables_equal, expected
from tests.results import ledger_records, read_table
from tests.streams import make_stream

BIN = Path(sys.executable).parent
# The worker joins its group once and its session never expires here: a short one
# shortens the wait for its first assignment (about half of it).
SESSION_MS = 3_000


@pytest.mark.slow
async def test_poison_goes_to_the_dlq_and_the_accounting_is_exact(
    kafka_bootstrap: str, pg: Any, unique_name: str, tmp_path: Path, pipeline: PipelineFactory
) -> None:
    poisons = poison_records()
    assert len({p.kind for p in poisons}) == len(poisons) >= 15
    stream = make_stream(6_000, partitions=2, seed=55)
    messages, where = with_poison(stream, poisons)
    dlq_topic = f"{unique_name}_dlq"
    await create_topic(kafka_bootstrap, unique_name, 2)
    await create_topic(kafka_bootstrap, dlq_topic, 1)
    await produce_raw(kafka_bootstrap, unique_name, messages)
    total = len(messages)
    pipe = pipeline(max_records=1_000, dlq={"dlqType": "kafka", "topic": dlq_topic})
    worker = Worker(pipe.write(tmp_path), tmp_path / "worker.log", session_timeout_ms=SESSION_MS)
    try:
        await wait_for_records(pg, unique_name, total, [worker], timeout=120)
        assert worker.alive()  # still running after all the poison
        assert await worker.terminate() == 0, worker.text()[-3000:]
    finally:
        worker.stop()

    produced = {p: sum(1 for m in messages if m[0] == p) for p in stream}
    ledger = await check_ledger(pg, unique_name, unique_name, produced)
    rejected = {pos for pos, poison in where.items() if poison.rejected_by_sink}
    assert ledger.bad == len(where) and ledger.dead_lettered == len(rejected) == 6
    assert ledger.filtered == 0
    assert ledger.records == ledger.aggregated + ledger.late + ledger.bad == total

    # The DLQ: every poison record, nothing else, with its reason and its bytes.
    letters = await read_topic(kafka_bootstrap, dlq_topic)
    by_source = {letter.source: letter for letter in letters}
    assert set(by_source) == set(where), set(by_source) ^ set(where)
    value_of = {(p, o): value for o, (p, _k, value) in _offsets(messages)}
    for position, poison in where.items():
        letter = by_source[position]
        assert poison.reason in letter.headers["reason"], (poison.kind, letter.headers)
        assert letter.headers["source_topic"] == unique_name
        assert letter.value == (value_of[position] or b""), poison.kind
        if poison.rejected_by_sink:
            p, offset = position
            assert letter.headers["batch_id"].endswith(f"/{p}/{offset}-{offset + 1}")
            assert letter.headers["batch_start_offset"] == str(offset)
            assert letter.headers["batch_next_offset"] == str(offset + 1)
            assert letter.headers["error"]
    dead_rows = await pg.fetch(
        "SELECT partition, start_offset, next_offset, error FROM streamproc_ledger "
        "WHERE query = $1 AND dead_lettered > 0 ORDER BY partition, start_offset",
        unique_name,
    )
    assert {(r["partition"], r["start_offset"]) for r in dead_rows} == rejected
    assert all(r["next_offset"] == r["start_offset"] + 1 and r["error"] for r in dead_rows)

    # The good records, and only they, are in the table, exactly.
    query = fault_query()
    model = expected(query, good_records(stream, where))
    assert_tables_equal(await read_table(pg, unique_name, query), model.table)
    assert ledger.late == len(model.late)
    assert "Traceback" not in worker.text()
    print(
        f"\npoison: {len(poisons)} kinds x 2 partitions = {len(where)} poison records among "
        f"{total}; DLQ {len(letters)} messages ({len(by_source)} distinct), "
        f"{ledger.dead_lettered} isolated and dead-lettered after the sink refused them; "
        f"ledger {ledger.records} = {ledger.aggregated} aggregated + {ledger.late} late + "
        f"{ledger.bad} bad + {ledger.filtered} filtered; 0 differences"
    )


def _offsets(messages: list[Message]) -> list[tuple[int, Message]]:
    """Messages with the offset each gets (produced in order, one partition after another)."""
    seen: dict[int, int] = {}
    out = []
    for m in messages:
        offset = seen.get(m[0], 0)
        seen[m[0]] = offset + 1
        out.append((offset, m))
    return out


@pytest.mark.slow
async def test_fail_fast_stops_streamproc_run_with_exit_1_and_writes_nothing_of_the_batch(
    kafka_bootstrap: str, pg: Any, unique_name: str, tmp_path: Path, pipeline: PipelineFactory
) -> None:
    nul = next(p for p in poison_records() if p.kind == "NUL in the group key")
    stream = make_stream(2_000, partitions=2, seed=66)
    messages, where = with_poison(stream, [nul])
    await create_topic(kafka_bootstrap, unique_name, 2)
    await produce_raw(kafka_bootstrap, unique_name, messages)
    pipe = pipeline(
        trigger="availablenow",
        max_records=100,
        fail_fast=True,
        retry={"strategy": "fixed", "maxAttempts": 2, "initialDelaySeconds": 0.2},
    )
    done = subprocess.run(
        [str(BIN / "streamproc"), "run", str(pipe.write(tmp_path))],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 1, done.stderr[-3000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"streamproc: query {unique_name}: the sink rejected the batch of ")
    assert "failFast is set" in last and "nothing of it was written" in last

    # Nothing half-written: the ledger stops before the refused record in its
    # partition, and the table holds exactly the records the ledger covers.
    [(nul_partition, nul_offset)] = [pos for pos in where if pos[0] == 0]
    rows = await pg.fetch(
        "SELECT partition, max(next_offset) AS next FROM streamproc_ledger WHERE query = $1 "
        "GROUP BY partition",
        unique_name,
    )
    reached = {r["partition"]: r["next"] for r in rows}
    assert reached.get(nul_partition, 0) <= nul_offset
    assert all(
        reached.get(p, 0) <= o for p, o in where
    )  # the other partition's NUL was never passed either
    covered = {
        p: [(o, r) for o, r in records if o < reached.get(p, 0)]
        for p, records in good_records(stream, where).items()
    }
    query = fault_query()
    assert_tables_equal(await read_table(pg, unique_name, query), expected(query, covered).table)


@pytest.mark.slow
async def test_poison_goes_to_the_dead_letter_table_once_across_a_kill_and_a_replay(
    kafka_bootstrap: str, pg: Any, unique_name: str, tmp_path: Path, pipeline: PipelineFactory
) -> None:
    """dlqType postgresql: every poison record is one row of `<table>_dlq`, with its reason.

    A worker is SIGKILLed half-way, an availablenow run finishes the query, and
    then the query is reset (results kept) and run again from the start: every
    dead letter is written a second time by the replay, and the table still
    holds each one once, as the first commit wrote it.
    """
    poisons = poison_records()
    stream = make_stream(3_000, partitions=2, seed=77)
    messages, where = with_poison(stream, poisons)
    await create_topic(kafka_bootstrap, unique_name, 2)
    await produce_raw(kafka_bootstrap, unique_name, messages)
    total = len(messages)
    pipe = pipeline(max_records=300, dlq={"dlqType": "postgresql"})
    worker = Worker(pipe.write(tmp_path), tmp_path / "worker.log", session_timeout_ms=SESSION_MS)
    try:
        await wait_for_progress(pg, unique_name, total // 2, [worker], timeout=120)
        worker.kill9()
    finally:
        worker.stop()
    rest = pipe.changed(trigger="availablenow").write(tmp_path, "-rest")
    run = [str(BIN / "streamproc"), "run", str(rest)]
    done = subprocess.run(run, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]

    produced = {p: sum(1 for m in messages if m[0] == p) for p in stream}
    ledger = await check_ledger(pg, unique_name, unique_name, produced)
    rejected = {pos for pos, poison in where.items() if poison.rejected_by_sink}
    assert ledger.bad == len(where) and ledger.dead_lettered == len(rejected) == 6

    dlq_table = f"{unique_name}_dlq"
    rows = await pg.fetch(f'SELECT * FROM "{dlq_table}" ORDER BY source_partition, source_offset')
    by_source = {(r["source_partition"], r["source_offset"]): r for r in rows}
    assert len(rows) == len(by_source) and set(by_source) == set(where), set(by_source) ^ set(where)
    ledger_batches = {
        r["batch_id"]
        for r in await pg.fetch(
            "SELECT batch_id FROM streamproc_ledger WHERE query = $1", unique_name
        )
    }
    value_of = {(p, o): value for o, (p, _k, value) in _offsets(messages)}
    for (p, offset), poison in where.items():
        row = by_source[(p, offset)]
        assert poison.reason in row["reason"], (poison.kind, row["reason"])
        assert (row["query"], row["source_topic"]) == (unique_name, unique_name)
        assert row["record_value"] == value_of[(p, offset)], poison.kind
        assert row["record_key"] == f"poison-{p}-{offset}".encode()
        assert row["batch_id"] in ledger_batches and row["dead_lettered_at"] is not None
        if poison.rejected_by_sink:
            assert row["batch_id"].endswith(f"/{p}/{offset}-{offset + 1}")
            assert row["error"] and row["reason"] == f"rejected by the sink: {row['error']}"
        else:
            assert row["error"] is None

    # The replay: the whole topic again under the same query, every poison
    # dead-lettered a second time; the table keeps the first rows, unchanged.
    reset = [str(BIN / "streamproc"), "reset", str(rest), "--yes"]
    done = subprocess.run(reset, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    done = subprocess.run(run, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    assert await ledger_records(pg, unique_name) == total
    again = await pg.fetch(f'SELECT * FROM "{dlq_table}" ORDER BY source_partition, source_offset')
    assert [dict(r) for r in again] == [dict(r) for r in rows]

    query = fault_query()
    model = expected(query, good_records(stream, where))
    assert_tables_equal(await read_table(pg, unique_name, query), model.table)

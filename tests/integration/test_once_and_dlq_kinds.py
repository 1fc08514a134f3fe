"""The `once` trigger run as a user runs it, and bad records under dlqType logging and none."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from streamproc.local import create_topic
from tests.integration.bad_values import BAD, GOOD
from tests.integration.cli_helpers import CLI_QUERY, edit, run_cli, write_config
from tests.integration.pipeline_helpers import make_plan, run_workers
from tests.kafka_io import produce, produce_raw
from tests.reference import Query, assert_tables_equal, expected
from tests.results import read_table
from tests.streams import AGGS, MINUTE, make_stream

QUERY = Query(("user_id",), AGGS, delay_ms=5 * MINUTE, size_ms=10 * MINUTE, output_mode="update")


async def _batches(pg: Any, query: str) -> list[int]:
    """Records per committed micro-batch: a batch's ledger rows (one per partition, each
    with its own batch id) share their transaction's time."""
    rows = await pg.fetch(
        "SELECT sum(records)::int AS n FROM streamproc_ledger WHERE query = $1 "
        "GROUP BY committed_at ORDER BY committed_at",
        query,
    )
    return [r["n"] for r in rows]


async def test_once_reads_everything_there_at_start_in_one_batch_per_run(
    kafka_bootstrap: str, pg_dsn: str, pg: Any, unique_name: str, tmp_path: Path
) -> None:
    # One stream cut in two per partition: the second run reads only the second half.
    whole = make_stream(3_000, seed=41)
    first = {p: records[: len(records) // 2] for p, records in whole.items()}
    second = {p: records[len(records) // 2 :] for p, records in whole.items()}
    await create_topic(kafka_bootstrap, unique_name, 4)
    await produce(kafka_bootstrap, unique_name, first)
    # maxRecordsPerTrigger 400 would cut availablenow into batches; once ignores it (Spark's
    # Trigger.Once: one batch of everything there at start).
    config = write_config(tmp_path, unique_name, kafka_bootstrap, pg_dsn, trigger="once")
    done = run_cli(config, kafka_bootstrap, pg_dsn)
    assert done.returncode == 0, done.stderr[-2000:]
    n_first = sum(len(r) for r in first.values())
    assert f"query {unique_name}: {n_first} record(s) read" in done.stdout, done.stdout
    assert await _batches(pg, unique_name) == [n_first]
    assert_tables_equal(
        await read_table(pg, unique_name, CLI_QUERY), expected(CLI_QUERY, first).table
    )

    await produce(kafka_bootstrap, unique_name, second)
    done = run_cli(config, kafka_bootstrap, pg_dsn)
    assert done.returncode == 0, done.stderr[-2000:]
    n_second = sum(len(r) for r in second.values())
    assert f"query {unique_name}: {n_second} record(s) read" in done.stdout, done.stdout
    assert await _batches(pg, unique_name) == [n_first, n_second]
    assert_tables_equal(
        await read_table(pg, unique_name, CLI_QUERY), expected(CLI_QUERY, whole).table
    )
    # A third run with nothing new commits nothing and still exits 0.
    done = run_cli(edit(config, lambda d: None), kafka_bootstrap, pg_dsn)
    assert done.returncode == 0, done.stderr[-2000:]
    assert len(await _batches(pg, unique_name)) == 2


@pytest.mark.parametrize("dlq_type", ["logging", "none"])
async def test_bad_records_are_counted_and_logged_or_not_per_dlq_type(
    dlq_type: str,
    kafka_bootstrap: str,
    pg_dsn: str,
    pg: Any,
    unique_name: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    await create_topic(kafka_bootstrap, unique_name, 1)
    values = [json.dumps(GOOD).encode(), *(v for v, _ in BAD), json.dumps(GOOD).encode()]
    await produce_raw(kafka_bootstrap, unique_name, [(0, None, v) for v in values])
    plan = make_plan(
        name=unique_name,
        bootstrap=kafka_bootstrap,
        dsn=pg_dsn,
        tmp=tmp_path,
        query=QUERY,
        dlq_type=dlq_type,
    )
    caplog.set_level(logging.WARNING, logger="streamproc.dlq")
    [stats] = await run_workers(plan)
    assert (stats.records, stats.aggregated, stats.bad, stats.late) == (8, 2, 6, 0)
    ledger = await pg.fetchrow(
        "SELECT sum(records) r, sum(aggregated) a, sum(bad) b, sum(dead_lettered) d "
        "FROM streamproc_ledger WHERE query = $1",
        unique_name,
    )
    assert (ledger["r"], ledger["a"], ledger["b"], ledger["d"]) == (8, 2, 6, 0)
    logged = [r.getMessage() for r in caplog.records if r.name == "streamproc.dlq"]
    if dlq_type == "none":
        assert logged == []
    else:
        # One line per bad record (below the rate limit), naming its position and reason.
        assert len(logged) == len(BAD), logged
        for offset, (_, reason) in enumerate(BAD, start=1):
            [line] = [
                m for m in logged if m.startswith(f"bad record: partition 0 offset {offset}:")
            ]
            assert reason in line, line
    # The two good records make the one row of u1's window.
    want = expected(QUERY, {0: [GOOD, GOOD]})
    assert_tables_equal(await read_table(pg, unique_name, QUERY), want.table)

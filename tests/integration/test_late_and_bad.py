"""Late records land exactly where the strategy says; bad records go to the DLQ with a reason."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

import pytest

from streamproc.local import create_topic
from streamproc.runtime.quality import QualityPlan, QualityRule
from streamproc.runtime.query import QueryFailedError
from tests.integration.bad_values import BAD, GOOD
from tests.integration.pipeline_helpers import make_plan, run_workers
from tests.kafka_io import Letter, produce, produce_raw, read_topic
from tests.reference import Query, assert_tables_equal, expected, parse_ts
from tests.results import read_table
from tests.streams import AGGS, MINUTE, make_stream

QUERY = Query(("user_id",), AGGS, delay_ms=5 * MINUTE, size_ms=10 * MINUTE, output_mode="update")


async def setup_stream(bootstrap: str, name: str, n: int = 1_200) -> dict[int, list[Any]]:
    stream = make_stream(n, seed=31)
    await create_topic(bootstrap, name, 4)
    await produce(bootstrap, name, stream)
    return stream


async def test_sendtodlq_puts_each_late_record_on_the_topic_with_headers(
    kafka_bootstrap: str, pg_dsn: str, pg: Any, unique_name: str, tmp_path: Path
) -> None:
    stream = await setup_stream(kafka_bootstrap, unique_name)
    dlq = f"{unique_name}_late"
    await create_topic(kafka_bootstrap, dlq, 1)
    plan = make_plan(
        name=unique_name,
        bootstrap=kafka_bootstrap,
        dsn=pg_dsn,
        tmp=tmp_path,
        query=QUERY,
        late_strategy="sendtodlq",
        late_dlq_topic=dlq,
    )
    [stats] = await run_workers(plan)
    want = expected(QUERY, stream)
    messages = await read_topic(kafka_bootstrap, dlq)
    got: dict[tuple[int, int], tuple[dict[str, str], bytes]] = {}
    for m in messages:
        got[m.source] = (m.headers, m.value)
    assert sorted(got) == sorted(want.late)
    assert stats.late == len(want.late) > 0
    for (p, offset), (h, value) in got.items():
        record = stream[p][offset]
        assert json.loads(value) == record  # the original bytes
        assert h["source_topic"] == unique_name
        assert h["reason"] == "event time older than watermark"
        assert int(h["event_time_ms"]) == parse_ts(record["event_time"])
        assert int(h["partition_watermark_ms"]) > int(h["event_time_ms"])
        assert h["event_time"].startswith(record["event_time"][:19])
    assert_tables_equal(await read_table(pg, unique_name, QUERY), want.table)


async def test_separatestream_writes_each_late_record_to_the_side_table(
    kafka_bootstrap: str, pg_dsn: str, pg: Any, unique_name: str, tmp_path: Path
) -> None:
    stream = await setup_stream(kafka_bootstrap, unique_name)
    side = f"{unique_name}_late"
    plan = make_plan(
        name=unique_name,
        bootstrap=kafka_bootstrap,
        dsn=pg_dsn,
        tmp=tmp_path,
        query=QUERY,
        late_strategy="separatestream",
        late_table=side,
    )
    await run_workers(plan)
    want = expected(QUERY, stream)
    rows = await pg.fetch(f'SELECT * FROM "{side}"')
    got = {(r["source_partition"], r["source_offset"]): r for r in rows}
    assert sorted(got) == sorted(want.late) and len(rows) == len(want.late) > 0
    for (p, offset), r in got.items():
        record = stream[p][offset]
        assert json.loads(r["record"]) == record
        assert r["source_topic"] == unique_name and r["query"] == unique_name
        assert r["reason"] == "event time older than watermark"
        assert int(r["event_time"].timestamp() * 1000) == parse_ts(record["event_time"])
        assert r["watermark"] > r["event_time"]
        assert r["detected_at"] is not None
    assert_tables_equal(await read_table(pg, unique_name, QUERY), want.table)


@pytest.mark.parametrize("strategy", ["drop", "loganddrop"])
async def test_drop_and_loganddrop_count_late_records(
    strategy: str,
    kafka_bootstrap: str,
    pg_dsn: str,
    pg: Any,
    unique_name: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    stream = await setup_stream(kafka_bootstrap, unique_name)
    plan = make_plan(
        name=unique_name,
        bootstrap=kafka_bootstrap,
        dsn=pg_dsn,
        tmp=tmp_path,
        query=QUERY,
        late_strategy=strategy,
    )
    with caplog.at_level(logging.WARNING, logger="streamproc.late"):
        [stats] = await run_workers(plan)
    want = expected(QUERY, stream)
    assert stats.late == len(want.late) > 0
    late_in_ledger = await pg.fetchval(
        "SELECT sum(late) FROM streamproc_ledger WHERE query = $1", unique_name
    )
    assert late_in_ledger == len(want.late)
    logged = [r for r in caplog.records if r.getMessage().startswith("late record dropped")]
    if strategy == "drop":
        assert logged == []
    else:
        # Rate limited: at most 20 lines per 10 s, one per record below that.
        assert len(logged) == min(20, len(want.late))
    assert "Late data: " in stats.late_summary.text()


async def test_bad_records_go_to_the_dlq_with_a_reason_and_are_counted(
    kafka_bootstrap: str, pg_dsn: str, pg: Any, unique_name: str, tmp_path: Path
) -> None:
    await create_topic(kafka_bootstrap, unique_name, 1)
    dlq = f"{unique_name}_dlq"
    await create_topic(kafka_bootstrap, dlq, 1)
    values = [json.dumps(GOOD).encode(), *(v for v, _ in BAD), json.dumps(GOOD).encode()]
    await produce_raw(kafka_bootstrap, unique_name, [(0, None, v) for v in values])
    plan = make_plan(
        name=unique_name,
        bootstrap=kafka_bootstrap,
        dsn=pg_dsn,
        tmp=tmp_path,
        query=QUERY,
        dlq_type="kafka",
        dlq_topic=dlq,
    )
    [stats] = await run_workers(plan)
    assert (stats.records, stats.aggregated, stats.bad, stats.late) == (8, 2, 6, 0)
    messages: list[Letter] = await read_topic(kafka_bootstrap, dlq)
    reasons = {m.source[1]: m.headers["reason"] for m in messages}
    assert sorted(reasons) == [1, 2, 3, 4, 5, 6]
    assert reasons[1].startswith("value: not UTF-8")
    assert reasons[2].startswith("value: not JSON")
    assert reasons[3] == "value: a JSON array, not an object"
    assert reasons[4] == "event_time: missing"
    assert reasons[5].startswith("event_time: 'yesterday'")
    assert reasons[6] == "value: 'abc' is not a number (needed by value:sum)"
    assert {m.value for m in messages} == set(values[1:7])
    ledger = await pg.fetchrow(
        "SELECT sum(records) r, sum(aggregated) a, sum(bad) b FROM streamproc_ledger "
        "WHERE query = $1",
        unique_name,
    )
    assert (ledger["r"], ledger["a"], ledger["b"]) == (8, 2, 6)


async def test_an_incompatible_existing_table_is_refused_with_what_differs(
    kafka_bootstrap: str, pg_dsn: str, pg: Any, unique_name: str, tmp_path: Path
) -> None:
    await create_topic(kafka_bootstrap, unique_name, 1)
    await pg.execute(f'CREATE TABLE "{unique_name}" (user_id integer, count bigint)')
    plan = make_plan(
        name=unique_name, bootstrap=kafka_bootstrap, dsn=pg_dsn, tmp=tmp_path, query=QUERY
    )
    # One line, as `streamproc run` prints it: the query stops before reading.
    with pytest.raises(QueryFailedError) as refused:
        await run_workers(plan)
    message = str(refused.value)
    assert message.startswith(f"table {unique_name} exists with an incompatible layout: ")
    assert "column user_id is integer, expected text" in message
    assert "missing column window_start (timestamp with time zone)" in message
    assert (
        "unique key is (none), expected (user_id, group_key_types, window_start, window_end)"
        in message
    )


async def test_quality_rules_filter_records_and_abort_stops_before_writing(
    kafka_bootstrap: str, pg_dsn: str, pg: Any, unique_name: str, tmp_path: Path
) -> None:
    stream = await setup_stream(kafka_bootstrap, unique_name, n=600)
    rule = QualityRule("Values", "range", ("value",), min=0, max=400)
    plan = dataclasses.replace(
        make_plan(
            name=unique_name, bootstrap=kafka_bootstrap, dsn=pg_dsn, tmp=tmp_path, query=QUERY
        ),
        quality=QualityPlan(rules=(rule,), on_failure="continue", after_extract=True),
    )
    [stats] = await run_workers(plan)
    kept = {
        p: [(o, r) for o, r in enumerate(recs) if r.get("value") is None or 0 <= r["value"] <= 400]
        for p, recs in stream.items()
    }
    n_filtered = 600 - sum(len(v) for v in kept.values())
    assert stats.filtered == n_filtered > 0
    assert stats.records == stats.aggregated + stats.late + stats.bad + stats.filtered
    ledger = await pg.fetchval(
        "SELECT sum(filtered) FROM streamproc_ledger WHERE query = $1", unique_name
    )
    assert ledger == n_filtered
    want = expected(QUERY, kept)
    assert_tables_equal(await read_table(pg, unique_name, QUERY), want.table)

    other = f"{unique_name}_abort"
    await create_topic(kafka_bootstrap, other, 4)
    await produce(kafka_bootstrap, other, stream)
    aborting = dataclasses.replace(
        plan,
        query_name=other,
        topic=other,
        table=other,
        quality=QualityPlan(rules=(rule,), on_failure="abort", after_extract=True),
    )
    with pytest.raises(QueryFailedError, match=r"stopped: data quality: partition \d+ offset"):
        await run_workers(aborting)
    assert await pg.fetchval("SELECT count(*) FROM streamproc_ledger WHERE query = $1", other) == 0

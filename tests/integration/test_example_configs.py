"""Every config in configs/ run end to end by `streamproc run`, checked against the model.

The streaming examples run here; the batch examples (`BATCH_EXAMPLES`) run in the batch
tests named there, and `test_every_config_in_configs_is_run_end_to_end` keeps the two
lists whole.

Each example is loaded as shipped and changed only where a test must: the topics, the
table, the late table, the query name and the checkpoint location get fresh names; the
trigger becomes ``availablenow`` (so that the run ends) and ``startingOffsets``
``earliest`` (the stream is produced before the run; ``latest`` would read none of
it). The servers stay the examples' own ``${STREAMPROC_KAFKA_BOOTSTRAP:-...}`` and
``${STREAMPROC_PG_DSN:-...}``, set in the run's environment. Group-by, window,
aggregates, output mode, watermark, late strategy, quality rules and retries are the
example's: `changed_paths` asserts that nothing else moved.

The stream has the fields the example reads, disorder within the watermark delay,
about 2% records far older than the delay (late), nulls in the aggregated fields, and
one bad record (a summed field that is not a number) for the example's DLQ.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from streamproc.local import create_topic
from tests.integration.cli_helpers import BIN, REPO
from tests.kafka_io import produce, read_topic
from tests.reference import Query, assert_tables_equal, expected
from tests.results import read_late_table, read_table
from tests.streams import BASE_MS, MINUTE, iso

SECOND = 1_000
PARTITIONS = 4
N = 3_000

Record = dict[str, Any]


@dataclass(frozen=True)
class Example:
    """One config of configs/, the model's reading of it, and how to make its records.

    Attributes:
        file: The config's file name in configs/.
        query: The config's query as the model reads it (written by hand from the file).
        step_ms: Event time between consecutive records.
        make: Makes the fields of one good record but its event time (which `time_as`
            encodes).
        time_as: Encodes an event time (ISO-8601 text or epoch ms).
        bad_field: A field the config sums: a record with text there is bad.
        rule_holds: Whether a result row passes the config's after-transform rules.
    """

    file: str
    query: Query
    step_ms: int
    make: Callable[[random.Random], Record]
    time_as: Callable[[int], Any]
    bad_field: str
    rule_holds: Callable[[dict[str, Any]], bool]


def _user_event(rng: random.Random) -> Record:
    record: Record = {"user_id": None if rng.random() < 0.01 else f"u{rng.randrange(9)}"}
    if rng.random() < 0.9:
        record["event_count"] = rng.randrange(1, 5)
    else:
        record["event_count"] = None
    if rng.random() < 0.95:
        record["total_value"] = rng.randrange(-20, 400)
    return record


def _user_activity(rng: random.Random) -> Record:
    record: Record = {"user_id": f"user-{rng.randrange(12)}", "page_views": 1}
    if rng.random() < 0.1:
        record["page_views"] = None
    if rng.random() < 0.95:
        record["clicks"] = rng.randrange(0, 6)
    return record


def _sale(rng: random.Random) -> Record:
    quantity = rng.randrange(1, 10)
    price = round(rng.uniform(0.5, 80.0), 2)
    returns = rng.random() < 0.03  # a returns desk: only negative revenue (NonNegativeRevenue)
    return {
        "store_id": "s9" if returns else f"s{rng.randrange(4)}",
        "category": "returns" if returns else rng.choice(["books", "toys", "food"]),
        "quantity": quantity,
        "revenue": round(quantity * price * (-1 if returns else 1), 2),
        "avg_price": price if rng.random() < 0.95 else None,
    }


def _card_transaction(rng: random.Random) -> Record:
    return {"card_id": f"card-{rng.randrange(25):03d}", "amount": rng.randrange(1, 50_000) / 100}


EXAMPLES = [
    Example(
        "streaming-example.json",
        Query(
            ("user_id",),
            (
                ("event_count_count", "event_count", "count"),
                ("total_value_sum", "total_value", "sum"),
            ),
            delay_ms=10 * MINUTE,
            size_ms=10 * MINUTE,
            slide_ms=5 * MINUTE,
            output_mode="append",
        ),
        step_ms=6 * SECOND,
        make=_user_event,
        time_as=iso,
        bad_field="total_value",
        # not_null user_id/event_time (error, onFailure warn); 0 <= total_value_sum <= 1e6.
        rule_holds=lambda row: (
            row["user_id"] is not None
            and (row["total_value_sum"] is None or 0 <= row["total_value_sum"] <= 1_000_000)
        ),
    ),
    Example(
        "user-analytics.json",
        Query(
            ("user_id",),
            (("page_views_count", "page_views", "count"), ("clicks_sum", "clicks", "sum")),
            delay_ms=15 * MINUTE,
            size_ms=10 * MINUTE,
            output_mode="append",
        ),
        step_ms=9 * SECOND,
        make=_user_activity,
        time_as=lambda ms: ms,  # epoch milliseconds
        bad_field="clicks",
        rule_holds=lambda row: True,  # no dataQualityConfig
    ),
    Example(
        "sales-dashboard.json",
        Query(
            ("store_id", "category"),
            (
                ("quantity_sum", "quantity", "sum"),
                ("revenue_sum", "revenue", "sum"),
                ("avg_price_avg", "avg_price", "avg"),
            ),
            time_column="sale_time",
            delay_ms=30 * MINUTE,
            size_ms=60 * MINUTE,
            slide_ms=15 * MINUTE,
            output_mode="update",
        ),
        step_ms=18 * SECOND,
        make=_sale,
        time_as=iso,
        bad_field="revenue",
        # not_null store_id/category; revenue_sum >= 0 (warning severity).
        rule_holds=lambda row: (
            row["store_id"] is not None
            and row["category"] is not None
            and (row["revenue_sum"] is None or row["revenue_sum"] >= 0)
        ),
    ),
    Example(
        "fraud-detection.json",
        Query(
            ("card_id",),
            (
                ("amount_sum", "amount", "sum"),
                ("amount_max", "amount", "max"),
                ("count", None, "count"),
            ),
            delay_ms=30 * SECOND,
            size_ms=1 * MINUTE,
            output_mode="append",
        ),
        step_ms=300,
        make=_card_transaction,
        time_as=lambda ms: ms,
        bad_field="amount",
        rule_holds=lambda row: True,
    ),
]


#: The batch examples (a job, not a query: no checkpoint, trigger or late data), each run
#: end to end by its own test against the model.
BATCH_EXAMPLES = {
    "sales-daily-report.json": "tests/integration/test_batch.py",
    "user-sessions.json": "tests/integration/test_batch_sessions.py",
}


def test_every_config_in_configs_is_run_end_to_end() -> None:
    names = {path.name for path in (REPO / "configs").glob("*.json")}
    assert names == {e.file for e in EXAMPLES} | set(BATCH_EXAMPLES)
    for name, test in BATCH_EXAMPLES.items():
        assert f'"configs" / "{name}"' in (REPO / test).read_text()


def make_example_stream(example: Example, seed: int) -> dict[int, list[Record]]:
    """N records over the partitions: disorder within a quarter of the delay, ~2% late.

    Returns:
        partition -> records in offset order; one bad record at offset 100 of partition 0.
    """
    query = example.query
    assert query.delay_ms is not None and query.time_column is not None
    rng = random.Random(seed)
    out: dict[int, list[Record]] = {p: [] for p in range(PARTITIONS)}
    for i in range(N):
        base = BASE_MS + i * example.step_ms
        if i > 200 and rng.random() < 0.02:
            ts = base - 2 * query.delay_ms - rng.randrange(query.delay_ms)  # late
        else:
            ts = base - rng.randrange(query.delay_ms // 4)
        record = {**example.make(rng), query.time_column: example.time_as(ts), "seq": i}
        out[rng.randrange(PARTITIONS)].append(record)
    bad = dict(out[0][100], seq=N)
    bad[example.bad_field] = "n/a"
    out[0].insert(100, bad)
    return out


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """A JSON document as {dotted path: leaf value}."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(flatten(v, f"{prefix}{k}."))
        return out
    return {prefix.rstrip("."): value}


def changed_paths(before: dict[str, Any], after: dict[str, Any]) -> set[str]:
    """The dotted paths whose value differs, or that only one of the documents has."""
    a, b = flatten(before), flatten(after)
    return {k for k in a.keys() | b.keys() if a.get(k, object()) != b.get(k, object())}


#: What a test may change in an example: names, where to start reading, the trigger.
ALLOWED_CHANGES = {
    "extract.topic",
    "extract.connectionParams.subscribe",
    "extract.connectionParams.startingOffsets",
    "load.table",
    "streamingConfigJson.queryName",
    "streamingConfigJson.checkpointLocation",
    "streamingConfigJson.triggerMode",
    "streamingConfigJson.lateDataConfig.dlqTopic",
    "streamingConfigJson.lateDataConfig.lateDataTable",
    "errorHandlingConfig.dlqConfig.topic",
}


def point_at_test(document: dict[str, Any], name: str, tmp: Path) -> dict[str, Any]:
    """A copy of an example reading topic `name` into table `name`, with fresh side names."""
    doc = json.loads(json.dumps(document))
    doc["extract"]["topic"] = name
    doc["extract"]["connectionParams"]["subscribe"] = name
    doc["extract"]["connectionParams"]["startingOffsets"] = "earliest"
    doc["load"]["table"] = name
    streaming = doc["streamingConfigJson"]
    streaming["queryName"] = name
    streaming["checkpointLocation"] = str(tmp / "checkpoints")
    streaming["triggerMode"] = "availablenow"
    late = streaming["lateDataConfig"]
    if "dlqTopic" in late:
        late["dlqTopic"] = f"{name}_late"
    if "lateDataTable" in late:
        late["lateDataTable"] = f"{name}_late"
    doc["errorHandlingConfig"]["dlqConfig"]["topic"] = f"{name}_dlq"
    return doc


@pytest.mark.parametrize("example", EXAMPLES, ids=[e.file.removesuffix(".json") for e in EXAMPLES])
async def test_example_config_runs_end_to_end_with_the_models_table(
    example: Example, kafka_bootstrap: str, pg_dsn: str, pg: Any, unique_name: str, tmp_path: Path
) -> None:
    original = json.loads((REPO / "configs" / example.file).read_text())
    document = point_at_test(original, unique_name, tmp_path)
    assert changed_paths(original, document) <= ALLOWED_CHANGES
    servers = flatten(document)
    assert servers["extract.connectionParams.kafka.bootstrap.servers"].startswith(
        "${STREAMPROC_KAFKA_BOOTSTRAP:-"
    )
    assert servers["load.connectionParams.url"].startswith("${STREAMPROC_PG_DSN:-")
    config = tmp_path / example.file
    config.write_text(json.dumps(document, indent=2))

    stream = make_example_stream(example, seed=EXAMPLES.index(example) + 1)
    produced = sum(len(records) for records in stream.values())
    await create_topic(kafka_bootstrap, unique_name, PARTITIONS)
    await create_topic(kafka_bootstrap, f"{unique_name}_dlq", 1)
    late_strategy = original["streamingConfigJson"]["lateDataConfig"]["strategy"]
    if late_strategy == "sendtodlq":
        await create_topic(kafka_bootstrap, f"{unique_name}_late", 1)
    await produce(kafka_bootstrap, unique_name, stream)

    env = {
        **os.environ,
        "STREAMPROC_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "STREAMPROC_PG_DSN": pg_dsn,
    }
    done = subprocess.run(
        [str(BIN / "streamproc"), "run", str(config)],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"query {unique_name}: {produced} record(s) read" in done.stdout, done.stdout[-2000:]
    # A clean run logs no error: not even after its last batch, while it leaves the group.
    logged = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    errors = [line for line in logged if line["level"] in ("ERROR", "CRITICAL")]
    assert errors == [] and "Traceback" not in done.stderr, done.stderr[-3000:]

    want = expected(example.query, stream)
    assert len(want.bad) == 1 and len(want.late) > 10 and want.table
    assert_tables_equal(await read_table(pg, unique_name, example.query), want.table)

    # The ledger counts each produced record once: aggregated, late, bad or filtered.
    ledger = await pg.fetchrow(
        """SELECT sum(records) AS records, sum(aggregated) AS aggregated, sum(late) AS late,
                  sum(bad) AS bad, sum(filtered) AS filtered
           FROM streamproc_ledger WHERE query = $1""",
        unique_name,
    )
    n_late, n_bad = len(want.late), len(want.bad)
    assert dict(ledger) == {
        "records": produced,
        "aggregated": produced - n_late - n_bad,
        "late": n_late,
        "bad": n_bad,
        "filtered": 0,  # the examples' quality rules run after the transform: they only log
    }

    # The bad record is dead-lettered, with its source position.
    letters = await read_topic(kafka_bootstrap, f"{unique_name}_dlq")
    assert [m.source for m in letters] == sorted(want.bad)
    assert json.loads(letters[0].value)[example.bad_field] == "n/a"

    # Late records go where the example's strategy says, each exactly once.
    if late_strategy == "sendtodlq":
        late_letters = await read_topic(kafka_bootstrap, f"{unique_name}_late")
        assert sorted(m.source for m in late_letters) == sorted(want.late)
    elif late_strategy == "separatestream":
        side = await read_late_table(pg, f"{unique_name}_late", unique_name)
        assert sorted(side) == sorted(want.late)
        for position, (event_ms, watermark_ms, reason, record) in side.items():
            late = want.late[position]
            assert (event_ms, watermark_ms, reason, record) == (
                late.event_ms,
                late.watermark_ms,
                late.reason,
                late.record,
            )
    else:
        assert late_strategy == "loganddrop"
        assert "late record dropped" in done.stderr

    # The examples with rules: a final row breaks one, is written (the table matched), and
    # the run said so (onFailure warn).
    columns = (*example.query.group_by, "window_start", "window_end")
    outputs = [out for out, _, _ in example.query.aggregations]
    rows = [dict(zip((*columns, *outputs), (*k, *v), strict=True)) for k, v in want.table.items()]
    if "dataQualityConfig" in original:
        assert not all(example.rule_holds(row) for row in rows)  # the stream breaks a rule
        assert "result row written despite: " in done.stderr
    else:
        assert "result row written despite: " not in done.stderr

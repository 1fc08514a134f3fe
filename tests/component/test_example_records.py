"""The example producer's records fit each example config: the README's commands show real results.

`python -m streamproc.demo.produce CONFIG` makes records from the config itself; here
they run through the config's own query in memory (`run_pipeline`) and the table is
compared row by row with the independent model, with no bad record, some late ones
and, in append mode, windows that closed while the stream ran.
"""

from __future__ import annotations

import zlib

import pytest

from streamproc.config import load_config
from streamproc.demo.events import config_records, stream_spec_for
from streamproc.demo.produce import topics_of
from streamproc.testing import InputRecord, run_pipeline
from tests.integration.test_example_configs import EXAMPLES, Example
from tests.reference import assert_tables_equal, expected

PARTITIONS = 4
SECONDS = 30
RATE = 40  # records per second: 1,200 a config keeps the test quick
START_MS = 1_764_151_200_000  # 2025-11-26T10:00:00Z


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda e: e.file)
def test_produced_records_give_the_models_table(example: Example) -> None:
    file, query = example.file, example.query
    cfg = load_config(f"configs/{file}", env={})
    spec = stream_spec_for(cfg, SECONDS)
    records = list(config_records(spec, START_MS, SECONDS * RATE))
    # Keyed like the producer (by the first group-by value), so partitions see keys whole.
    stream: dict[int, list[dict[str, object]]] = {p: [] for p in range(PARTITIONS)}
    for record in records:
        key = str(record[query.group_by[0]]).encode()
        stream[zlib.crc32(key) % PARTITIONS].append(record)
    inputs = [InputRecord(r, partition=p) for p, rs in stream.items() for r in rs]

    result = run_pipeline(cfg, inputs, partitions=PARTITIONS, env={})

    model = expected(query, stream)
    outputs = [out for out, _, _ in query.aggregations]
    table = {
        (*(r[c] for c in query.group_by), r["window_start_ms"], r["window_end_ms"]): tuple(
            r[o] for o in outputs
        )
        for r in result.rows
    }
    assert_tables_equal(table, model.table)
    assert result.bad == () and model.bad == set()
    assert result.counts.records == len(records)
    assert result.counts.late == len(model.late) > 0
    assert {(x.partition, x.offset) for x in result.late} == set(model.late)
    # Enough event time passes that windows close: append mode has rows to show.
    assert len(result.rows) > 0
    closed = [r for r in result.rows if r["window_end_ms"] <= result.watermark_ms]
    assert len(closed) >= PARTITIONS


def test_the_producer_creates_every_topic_the_config_names() -> None:
    cfg = load_config("configs/streaming-example.json", env={})
    assert topics_of(cfg, 4) == {"user-events": 4, "late-user-events": 1, "failed-events-dlq": 1}
    fraud = load_config("configs/fraud-detection.json", env={})
    assert topics_of(fraud, 2) == {
        "card-transactions": 2,
        "fraud-detection-late": 1,
        "fraud-detection-dlq": 1,
    }

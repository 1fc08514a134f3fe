"""Batch mode runs session windows (issue 22): the pure layer against the model.

A batch job is one bounded input and no watermark: nothing is late, no session closes
before the end, and at the end every session is final (tests/reference_sessions.py
with no delay, complete mode). `BatchCollector` (decode, quality rules, the engine) is
fed the input in chunks cut anywhere, partitions interleaved as the Kafka input hands
them over, and the documents it would load are compared row by row with the model's
sessions; the report's counts are exact.

    gap 2 s, a key's records at  0   1.5   3.5          9   10
                                 [0 ..... 3.5)[3.5 .. 5.5)  [9 ..... 12)
    1.5 and 3.5 are exactly the gap apart: two sessions, which touch; a record at
    2.5 would bridge them into [0, 5.5).
"""

from __future__ import annotations

import json
import random
from datetime import datetime
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest

from streamproc.batch.collect import BatchCollector
from streamproc.batch.plan import BatchPlan, batch_plan_from_config, result_key
from streamproc.batch.report import BatchReport
from streamproc.config import load_config
from streamproc.demo.events import config_records, stream_spec_for
from streamproc.engine import SessionSpec
from streamproc.sources.base import RawRecord
from tests.reference import Query, assert_tables_equal
from tests.reference_sessions import expected_sessions, one_phase
from tests.streams import AGGS, BASE_MS, MINUTE, iso, make_stream

ALL_AGGS = (
    "count=*:count,value:count,value:sum,value:avg,value:min,value:max,value:first,value:last"
)
ROOT = Path(__file__).resolve().parents[2]
#: The model's query: no watermark (nothing late, nothing closes before the end).
QUERY = Query(("user_id",), AGGS, output_mode="complete")


def session_config(gap: str, **load: Any) -> dict[str, Any]:
    """A batch job over Kafka topic `events`: sessions of `gap` per user_id."""
    return {
        "pipelineId": "sessions",
        "mode": "batch",
        "extract": {
            "sourceType": "kafka",
            "connectionParams": {"kafka.bootstrap.servers": "localhost:9092", "subscribe": "e"},
        },
        "transforms": [
            {
                "transformType": "aggregation",
                "parameters": {
                    "groupByColumns": "user_id",
                    "windowColumn": "event_time",
                    "gapDuration": gap,
                    "aggregations": ALL_AGGS,
                },
            }
        ],
        "load": {
            "sinkType": "postgresql",
            "table": "user_sessions",
            "connectionParams": {"url": "postgresql://localhost/x"},
            **load,
        },
        "errorHandlingConfig": {"dlqConfig": {"dlqType": "none"}},
    }


def plan_of(gap: str, **load: Any) -> BatchPlan:
    return batch_plan_from_config(load_config(session_config(gap, **load), env={}))


def run_collector(
    plan: BatchPlan, stream: dict[int, list[Any]], seed: int
) -> tuple[dict[tuple[Any, ...], tuple[Any, ...]], BatchReport]:
    """Feed the stream in random chunks, partitions interleaved; the rows as a table."""
    collector = BatchCollector(plan, BatchReport("e", True))
    raws = {
        p: [
            RawRecord(p, o, None, (r if isinstance(r, str) else json.dumps(r)).encode(), 0)
            for o, r in enumerate(records)
        ]
        for p, records in stream.items()
    }
    rng = random.Random(seed)
    cursor = dict.fromkeys(raws, 0)
    while any(cursor[p] < len(raws[p]) for p in raws):
        chunk: list[RawRecord] = []
        for p in rng.sample(sorted(raws), len(raws)):
            take = rng.randrange(0, 120)
            chunk += raws[p][cursor[p] : cursor[p] + take]
            cursor[p] += take
        collector.add(chunk)
    collector.finish()
    docs, places = collector.rows()
    assert len(docs) == len(places) and collector.report.refused == []
    table: dict[tuple[Any, ...], tuple[Any, ...]] = {}
    outputs = [out for out, _, _ in QUERY.aggregations]
    for _, text in docs:
        doc = json.loads(text)
        start, end = (_ms(doc[c]) for c in ("window_start", "window_end"))
        key = (doc["user_id"], start, end)
        assert key not in table
        table[key] = tuple(doc[o] for o in outputs)
    return table, collector.report


def _ms(text: str) -> int:
    return int(datetime.fromisoformat(text).timestamp() * 1000)


def test_the_plan_runs_sessions_complete_without_a_watermark() -> None:
    plan = plan_of("30 minutes", writeMode="overwrite")
    assert plan.spec is not None
    assert plan.spec.session == SessionSpec(30 * MINUTE) and plan.spec.window is None
    assert (plan.spec.output_mode, plan.spec.delay_ms) == ("complete", None)
    assert result_key(plan.spec) == ("user_id", "window_start", "window_end")


@pytest.mark.parametrize("keys", ["window_end,user_id,window_start", "user_id"])
def test_upsert_of_sessions_is_refused_with_one_line(keys: str) -> None:
    # An upsert over a grown input would leave a session's old row beside its new one.
    with pytest.raises(ValueError) as raised:
        plan_of("30 minutes", writeMode="upsert", upsertKeys=keys)
    assert str(raised.value) == (
        "load.writeMode: upsert cannot keep session windows right (a session's bounds "
        "are its row's key and move when a rerun's input grows or merges sessions); "
        "use overwrite to recompute the sessions, or append"
    )


@pytest.mark.parametrize(
    ("gap", "gap_ms", "seed"),
    [
        pytest.param("2 seconds", 2_000, 1, id="gap-equal-to-the-record-spacing"),
        pytest.param("20 seconds", 20_000, 2, id="gap-20s"),
        pytest.param("3 minutes", 3 * MINUTE, 3, id="gap-3min-bridges-disorder"),
        pytest.param("30 minutes", 30 * MINUTE, 4, id="gap-30min-few-sessions"),
    ],
)
def test_every_session_is_final_at_the_end_and_equals_the_model(
    gap: str, gap_ms: int, seed: int
) -> None:
    stream: dict[int, list[Any]] = make_stream(2_000, partitions=3, seed=seed)
    # Bad input: not JSON, an unparsable event time, a sum over a string.
    stream[0].insert(7, "{not json")
    stream[1].insert(3, {"user_id": "u1", "event_time": "yesterday", "value": 1, "seq": -1})
    stream[2].append({"user_id": "u2", "event_time": iso(BASE_MS), "value": "x", "seq": -2})
    # Records far behind the rest (late for any watermark): a batch has none, so they
    # are aggregated where their event time puts them, here bridging two sessions.
    old = BASE_MS - 60 * MINUTE
    stream[1] += [
        {"user_id": "u9", "event_time": iso(old), "value": 1, "seq": -3},
        {"user_id": "u9", "event_time": iso(old + 2 * gap_ms - 2), "value": 2, "seq": -4},
    ]
    stream[0].append({"user_id": "u9", "event_time": iso(old + gap_ms - 1), "value": 4, "seq": -5})

    table, report = run_collector(plan_of(gap), stream, seed)

    model = expected_sessions(QUERY, gap_ms, sorted(stream), one_phase(stream))
    assert model.late == {} and len(model.bad) == 3
    assert_tables_equal(table, model.table)
    assert model.table[("u9", old, old + 3 * gap_ms - 2)][:3] == (3, 3, 7)
    n = sum(len(records) for records in stream.values())
    assert (report.read, report.used, len(report.bad), report.filtered) == (n, n - 3, 3, 0)
    # Two sessions of a key may touch (one's end is the next's start), never overlap.
    by_key: dict[Any, list[tuple[int, int]]] = {}
    for user, start, end in sorted(table):
        by_key.setdefault(user, []).append((start, end))
    for bounds in by_key.values():
        assert all(a[1] <= b[0] for a, b in pairwise(bounds))


def test_the_example_producer_gives_each_user_a_few_sessions() -> None:
    # `python -m streamproc.demo.produce configs/user-sessions.json --seconds 5` (the
    # README's command): 1,000 records spread so that users pause, not one long session.
    cfg = load_config(ROOT / "configs" / "user-sessions.json", env={})
    spec = stream_spec_for(cfg, 5, 1_000)
    records = list(config_records(spec, BASE_MS, 1_000))
    query = Query(
        ("user_id",),
        (("events", None, "count"), ("page_views_count", "page_views", "count")),
        output_mode="complete",
    )
    model = expected_sessions(query, 30 * MINUTE, [0], one_phase({0: records}))
    per_user: dict[Any, int] = {}
    for user, _, _ in model.table:
        per_user[user] = per_user.get(user, 0) + 1
    assert len(per_user) == 8 and all(2 <= n <= 15 for n in per_user.values()), per_user

"""Windowed stateTimeout through the whole runtime, one worker and two, against the model.

Every key's records are spread over all four partitions (message keys are not group
keys), so with two workers no worker sees a (key, window)'s whole activity and the
checkpoint decides; with one worker its engine decides. The stream comes in three runs
(one bounded run each, the next started after the previous committed everything):

    run 1   t0 .. t0+19s: keys k0..k3 last active before t0+15s, k4..k7 after;
            then one record at t0+35s per partition: W = t0+25s, and with a 10 s
            timeout (k0..k3, [t0, t0+60s)) expire (before that W < t0+10s: nothing
            can expire, however the run is cut into batches)
    run 2   every key again at t0+25s..t0+34s: W does not move; records of expired
            (key, window)s are late, "state expired" (or go into their live windows)
    run 3   one record at t0+100s per partition: W = t0+90s closes the windows

so the outcome does not depend on batch boundaries, and the model runs with one
trigger per run (`expected_in_phases`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from streamproc.testing import MemoryDatabase, MemoryTopic
from tests.component.harness import TOPIC, make_plan, run_to_end, table_of
from tests.reference import EXPIRED_REASON, Query, assert_tables_equal, expected_in_phases

T0 = 1_700_000_040_000  # a multiple of 60 s
S = 1_000
PARTITIONS = 4
Phase = Mapping[int, Sequence[Mapping[str, Any]]]


def query(mode: str, slide_ms: int | None) -> Query:
    return Query(
        group_by=("user",),
        aggregations=(("n", None, "count"), ("amount_sum", "amount", "sum")),
        delay_ms=10 * S,
        size_ms=60 * S,
        slide_ms=slide_ms,
        output_mode=mode,
        state_timeout_ms=10 * S,
    )


def rec(user: str, at_s: float, amount: int) -> dict[str, Any]:
    return {"user": user, "event_time": T0 + int(at_s * S), "amount": amount}


def phases() -> list[Phase]:
    first: dict[int, list[dict[str, Any]]] = {}
    second: dict[int, list[dict[str, Any]]] = {}
    for p in range(PARTITIONS):
        early = [rec(f"k{i}", 1 + 3 * p + i, p + i) for i in range(4)]  # t0+1s .. t0+13s
        later = [rec(f"k{i}", 15.5 + p + (i - 4) / 2, 1) for i in range(4, 8)]  # to t0+19s
        first[p] = [*early, *later]
        if p == 0:
            first[p].append(rec("k5", 5, 100))  # 19.5 - 10 > 5: late by the watermark
        first[p].append(rec("adv", 35, 0))
        second[p] = [rec(f"k{i}", 25 + p + i, 10) for i in range(8)] + [rec("new", 30, 7)]
    third = {p: [rec("adv", 100, 0)] for p in range(PARTITIONS)}
    return [first, second, third]


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize(
    ("mode", "slide_ms"), [("append", None), ("update", None), ("append", 20 * S)]
)
async def test_idle_key_windows_expire_like_the_model(
    mode: str, slide_ms: int | None, workers: int
) -> None:
    model_query = query(mode, slide_ms)
    plan = make_plan(model_query, max_records_per_trigger=3)
    topic = MemoryTopic(TOPIC, PARTITIONS)
    db = MemoryDatabase()
    stream = phases()
    seq = 0
    for phase in stream:
        for p, records in phase.items():
            for record in records:
                topic.produce_json(p, record, key=f"msg-{seq}".encode())
                seq += 1
        stats = await run_to_end(plan, topic, db, workers=workers)
        assert len(stats) == workers
    model = expected_in_phases(model_query, stream)
    expired_late = [r for r in model.late.values() if r.reason == EXPIRED_REASON]
    if slide_ms is None:
        assert len(expired_late) == 16  # k0..k3 in each of the four partitions
    assert_tables_equal(table_of(db, plan), model.table)
    ledger = db.ledger_rows(plan.query_name, TOPIC)
    assert sum(r.records for r in ledger) == seq
    assert sum(r.late for r in ledger) == len(model.late)
    assert sum(r.aggregated for r in ledger) == seq - len(model.late) - len(model.bad)
    registered = db.queries[plan.query_name]
    assert registered.global_watermark_ms == model.watermark_ms == T0 + 90 * S

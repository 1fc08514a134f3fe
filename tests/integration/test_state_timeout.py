"""Windowed stateTimeout on the real broker and PostgreSQL: two workers, keys over every partition.

The component test (tests/component/test_state_timeout.py) runs the same three-phase
stream on the in-memory ports; here the expiry is decided in PostgreSQL's commit (no
worker owns every partition), the tombstones live in the real state table, and the
records come through Kafka in batches of 3, so the checks under the lock run often.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from streamproc.local import create_topic
from tests.component.test_state_timeout import PARTITIONS, T0, phases, query
from tests.integration.pipeline_helpers import make_plan, run_workers
from tests.kafka_io import produce_raw
from tests.reference import EXPIRED_REASON, assert_tables_equal, expected_in_phases
from tests.results import read_table


@pytest.mark.parametrize("mode", ["append", "update"])
async def test_two_workers_expire_idle_windows_like_the_model(
    mode: str, kafka_bootstrap: str, pg_dsn: str, pg: Any, unique_name: str, tmp_path: Path
) -> None:
    model_query = query(mode, None)
    await create_topic(kafka_bootstrap, unique_name, PARTITIONS)
    plan = make_plan(
        name=unique_name,
        bootstrap=kafka_bootstrap,
        dsn=pg_dsn,
        tmp=tmp_path,
        query=model_query,
        max_records=3,
    )
    stream = phases()
    seq = 0
    for phase in stream:
        messages = []
        for p, records in phase.items():
            for record in records:
                # Message keys unrelated to the group key.
                messages.append((p, f"msg-{seq}".encode(), json.dumps(record).encode()))
                seq += 1
        await produce_raw(kafka_bootstrap, unique_name, messages)
        stats = await run_workers(plan, workers=2)
        assert sum(s.records for s in stats) == sum(len(r) for r in phase.values())
    model = expected_in_phases(model_query, stream)
    assert len([r for r in model.late.values() if r.reason == EXPIRED_REASON]) == 16
    assert_tables_equal(await read_table(pg, unique_name, model_query), model.table)
    ledger = await pg.fetchrow(
        "SELECT sum(records) r, sum(late) l, sum(aggregated) a FROM streamproc_ledger "
        "WHERE query = $1",
        unique_name,
    )
    assert (ledger["r"], ledger["l"], ledger["a"]) == (seq, len(model.late), seq - len(model.late))
    w = await pg.fetchval(
        "SELECT global_watermark_ms FROM streamproc_queries WHERE query = $1", unique_name
    )
    assert w == model.watermark_ms == T0 + 90_000
    # Every window W passed is gone, its tombstones (partition -1) with it; what is left
    # is the open window of "adv" (t0+100s), one partial per partition.
    left = await pg.fetch(
        "SELECT partition, window_start_ms FROM streamproc_state WHERE query = $1 "
        "ORDER BY partition",
        unique_name,
    )
    assert [(r["partition"], r["window_start_ms"]) for r in left] == [
        (p, T0 + 60_000) for p in range(PARTITIONS)
    ]

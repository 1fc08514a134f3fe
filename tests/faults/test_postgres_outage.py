"""PostgreSQL stopped for 30 s in the middle of a run, then started again.

The sink is unavailable, not the batch: nothing may be dropped or
dead-lettered. The circuit breaker opens (metrics and log say so), the worker
waits without spinning, probes, and when PostgreSQL is back it replays from
the ledger by itself. Records produced during the outage are not lost either.
"""

from __future__ import annotations

import asyncio
import math
import time
from pathlib import Path

import asyncpg
import pytest

from streamproc.local import StackInfo, create_topic, free_port, start_postgres, stop_postgres
from tests.faults.harness import (
    PipelineFactory,
    Worker,
    check_ledger,
    fault_query,
    scrape,
    wait_for_progress,
    wait_for_records,
)
from tests.kafka_io import produce
from tests.reference import assert_tables_equal, expected
from tests.results import read_late_table, read_table
from tests.streams import halves, make_stream

OUTAGE_S = 30.0
BEFORE, DURING = 30_000, 10_000
# The worker joins its group once and its session never expires here: a short one
# shortens the wait for its first assignment (about half of it).
SESSION_MS = 3_000


@pytest.mark.slow
async def test_postgres_down_30s_breaker_opens_and_query_resumes(
    own_stack: StackInfo, unique_name: str, tmp_path: Path, own_pipeline: PipelineFactory
) -> None:
    bootstrap, dsn = own_stack.bootstrap, own_stack.dsn
    stream = make_stream(BEFORE + DURING, partitions=4, seed=44)
    first, second = halves(stream, 0.75)
    await create_topic(bootstrap, unique_name, 4)
    await produce(bootstrap, unique_name, first)
    late_table = f"{unique_name}_late"
    pipe = own_pipeline(
        trigger="processingtime=500 milliseconds",
        max_records=1_000,
        late={"strategy": "separatestream", "lateDataTable": late_table},
        # Two attempts 0.5 s apart per batch; the breaker opens after 3
        # consecutive failures and probes every 3 s.
        retry={"strategy": "fixed", "maxAttempts": 2, "initialDelaySeconds": 0.5},
        breaker={"failureThreshold": 3, "resetTimeoutSeconds": 3},
    )
    port = free_port()
    worker = Worker(
        pipe.write(tmp_path),
        tmp_path / "worker.log",
        env={"STREAMPROC_METRICS_PORT": str(port)},
        session_timeout_ms=SESSION_MS,
    )
    gauge_seen: list[float] = []
    try:
        pg = await asyncpg.connect(dsn)
        try:
            before = await wait_for_progress(pg, unique_name, 5_000, [worker])
        finally:
            await pg.close()
        assert scrape(port, "streamproc_circuit_breaker_open") == 0.0

        stop_postgres(own_stack)
        outage_started = time.monotonic()
        # New records keep arriving while the sink is down.
        await produce(bootstrap, unique_name, second)
        while time.monotonic() - outage_started < OUTAGE_S:
            assert worker.alive(), worker.text()[-3000:]
            gauge_seen.append(scrape(port, "streamproc_circuit_breaker_open"))
            await asyncio.sleep(1.0)
        start_postgres(own_stack)

        pg = await asyncpg.connect(dsn)
        try:
            await wait_for_records(pg, unique_name, BEFORE + DURING, [worker])
        finally:
            await pg.close()
        # Closed again once a probe went through.
        assert scrape(port, "streamproc_circuit_breaker_open") == 0.0
        assert await worker.terminate() == 0, worker.text()[-3000:]
    finally:
        worker.stop()

    log = worker.text()
    name = f"circuit breaker '{unique_name} sink'"
    assert f"{name}: closed -> open" in log
    assert f"{name}: open -> half_open" in log
    assert f"{name}: half_open -> closed" in log
    assert "sink unavailable" in log and "sink reachable again: replaying from the ledger" in log
    assert 1.0 in gauge_seen and not any(math.isnan(v) for v in gauge_seen)
    # Waiting, not spinning: tries are spaced by the 3 s reset timeout (at least
    # 1 s apart in any case), so a 30 s outage sees a few dozen at most.
    tries = log.count("next try in")
    assert 1 <= tries <= 40, tries
    assert "dead-lettered partition" not in log and "dead-lettered 0)" in log

    pg = await asyncpg.connect(dsn)
    try:
        produced = {p: len(records) for p, records in stream.items()}
        ledger = await check_ledger(pg, unique_name, unique_name, produced)
        assert ledger.bad == 0 and ledger.dead_lettered == 0
        query = fault_query()
        model = expected(query, stream)
        assert_tables_equal(await read_table(pg, unique_name, query), model.table)
        late = await read_late_table(pg, late_table, unique_name)
        assert late == model.late
    finally:
        await pg.close()
    print(
        f"\npostgres outage {OUTAGE_S:.0f}s after {before} records, {DURING} produced during it: "
        f"breaker gauge seen {sorted(set(gauge_seen))}, {tries} waits logged; "
        f"{ledger.records} records, {len(model.table)} result rows, {len(late)} late rows; "
        "0 differences"
    )

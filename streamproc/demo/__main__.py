"""`make demo`: the seed's pipeline, end to end, on the embedded stack.

1. start the embedded broker and PostgreSQL (or use STREAMPROC_KAFKA_BOOTSTRAP /
   STREAMPROC_PG_DSN when set);
2. run configs/streaming-example.json as one worker while a generator
   produces ~20 s of user events, some of them late;
3. print the result table, the late-data summary, the dead-letter topic and
   the ledger, and where to look next; stop the stack.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

CONFIG = Path("configs/streaming-example.json")
TOPICS = {"user-events": 4, "late-user-events": 1, "failed-events-dlq": 1}
GENERATE_SECONDS = 20.0
EVENTS_PER_SECOND = 400


def _say(text: str = "") -> None:
    print(text, flush=True)


def _show(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.2f}"
    if hasattr(value, "strftime"):
        return str(value.strftime("%H:%M"))
    return str(value)


async def _generate(bootstrap: str, seconds: float) -> int:
    from aiokafka import AIOKafkaProducer

    from streamproc.demo.events import EventStreamSpec, user_events

    # Event time runs 120x faster than wall time, so 10-minute windows close
    # within the demo: 400 events/s, 300 ms of event time apart.
    spec = EventStreamSpec(start_ms=int(time.time() * 1000), event_step_ms=300, late_fraction=0.01)
    events = user_events(spec, int(seconds * EVENTS_PER_SECOND))
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, enable_idempotence=False)
    await producer.start()
    sent = 0
    started = time.monotonic()
    try:
        for event in events:
            await producer.send(
                "user-events", json.dumps(event).encode(), key=event["user_id"].encode()
            )
            sent += 1
            if sent % EVENTS_PER_SECOND == 0:
                await producer.flush()
                ahead = sent / EVENTS_PER_SECOND - (time.monotonic() - started)
                if ahead > 0:
                    await asyncio.sleep(ahead)
        # Two poison records, to show the dead-letter queue at work.
        await producer.send("user-events", b"{not json", key=b"poison")
        await producer.send("user-events", json.dumps({"user_id": "u1"}).encode(), key=b"poison")
        sent += 2
        await producer.flush()
    finally:
        await producer.stop()
    return sent


async def _count_messages(bootstrap: str, topic: str) -> list[Any]:
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    try:
        batches = await consumer.getmany(timeout_ms=2000)
        return [r for recs in batches.values() for r in recs]
    finally:
        await consumer.stop()


async def _wait_for_ledger(dsn: str, query: str, records: int, timeout_s: float) -> None:
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            done = await conn.fetchval(
                "SELECT coalesce(sum(records), 0) FROM streamproc_ledger WHERE query = $1", query
            )
            if done >= records:
                return
            await asyncio.sleep(0.5)
    finally:
        await conn.close()


async def _report(plan: Any, bootstrap: str, dsn: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            f'SELECT * FROM "{plan.table}" ORDER BY window_start, user_id LIMIT 12'
        )
        total = await conn.fetchval(f'SELECT count(*) FROM "{plan.table}"')
        _say(f"\n== result table {plan.table}: {total} row(s), first 12 ==")
        if rows:
            _say(" | ".join(rows[0].keys()))
            for r in rows:
                _say(" | ".join(_show(v) for v in r.values()))
        ledger = await conn.fetch(
            """SELECT partition, count(*) AS batches, max(next_offset) AS next_offset,
                      sum(records) AS records, sum(aggregated) AS aggregated, sum(late) AS late,
                      sum(bad) AS bad, max(watermark) AS watermark
               FROM streamproc_ledger WHERE query = $1 GROUP BY partition ORDER BY partition""",
            plan.query_name,
        )
        _say("\n== ledger (streamproc_ledger), per partition ==")
        _say("partition | batches | next_offset | records | aggregated | late | bad | watermark")
        for r in ledger:
            _say(" | ".join(_show(v) for v in r.values()))
    finally:
        await conn.close()
    late = await _count_messages(bootstrap, "late-user-events")
    bad = await _count_messages(bootstrap, "failed-events-dlq")
    _say(
        f"\n== dead letters: {len(late)} late record(s) on late-user-events, "
        f"{len(bad)} bad record(s) on failed-events-dlq =="
    )
    for r in bad:
        headers = dict(r.headers)
        partition = headers.get("source_partition", b"").decode()
        _say(f"  partition {partition}: {headers.get('reason', b'').decode()}")


async def _demo(bootstrap: str, dsn: str, workdir: Path) -> int:
    from streamproc.commands.run import store_factory_for, summary_lines
    from streamproc.config import load_config
    from streamproc.local import create_topic
    from streamproc.runtime.planner import plan_from_config
    from streamproc.runtime.query import StreamingQuery

    for topic, partitions in TOPICS.items():
        await create_topic(bootstrap, topic, partitions)
    os.environ["STREAMPROC_CHECKPOINT_DIR"] = str(workdir / "checkpoints")
    plan = plan_from_config(load_config(CONFIG))
    _say(
        f"pipeline {plan.pipeline_id}: {plan.topic} -> {plan.table}, trigger "
        f"{plan.trigger} {plan.trigger_interval_ms or ''} ms, output mode {plan.spec.output_mode}"
    )
    query = StreamingQuery(plan, store_factory_for(plan))
    started = time.monotonic()
    run = asyncio.ensure_future(query.run())
    await query.wait_until_assigned()
    _say(f"worker joined; producing user events for {GENERATE_SECONDS:.0f} s ...")
    sent = await _generate(bootstrap, GENERATE_SECONDS)
    _say(f"produced {sent} event(s); waiting for the last micro-batches to commit ...")
    await _wait_for_ledger(dsn, plan.query_name, sent, timeout_s=60)
    query.request_stop()
    stats = await run
    _say("")
    for line in summary_lines(plan, stats, time.monotonic() - started):
        _say(line)
    await _report(plan, bootstrap, dsn)
    return 0


def main() -> int:
    """Run the demo; returns the exit code."""
    from streamproc.commands.run import configure_logging
    from streamproc.local import start_stack, stop_stack

    configure_logging("WARNING")
    workdir = Path(tempfile.mkdtemp(prefix="streamproc-demo-"))
    bootstrap = os.environ.get("STREAMPROC_KAFKA_BOOTSTRAP")
    dsn = os.environ.get("STREAMPROC_PG_DSN")
    started_stack = False
    try:
        if not (bootstrap and dsn):
            t0 = time.monotonic()
            info = start_stack(workdir / "stack")
            started_stack = True
            bootstrap = bootstrap or info.bootstrap
            dsn = dsn or info.dsn
            _say(f"embedded stack up in {time.monotonic() - t0:.1f} s: broker {bootstrap}, {dsn}")
        os.environ["STREAMPROC_KAFKA_BOOTSTRAP"] = bootstrap
        os.environ["STREAMPROC_PG_DSN"] = dsn
        code = asyncio.run(_demo(bootstrap, dsn, workdir))
        _say("\nWhere to look next: STREAMING.md (how it works), configs/ (more pipelines),")
        _say("`.venv/bin/streamproc local up` to keep a stack running and query it with psql.")
        return code
    finally:
        if started_stack:
            stop_stack(workdir / "stack")
            _say("embedded stack stopped.")


if __name__ == "__main__":
    sys.exit(main())

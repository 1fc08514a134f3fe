"""End-to-end latency of a continuous query: produce time to visible in PostgreSQL.

One `streamproc run` worker, `triggerMode: continuous`, update mode, a
non-windowed `value:max` per key over 100 keys. Each record's value is its
produce time in epoch ms, so a key's max in the result table is the newest
produce time of that key that streamproc committed. A poller reads the table every
10 ms and, each time a key's max changes to v, takes (now - v) as one sample.

Start-up is excluded: a trickle of priming records (10/s) runs until the worker
wrote its first row; then the steady phase sends 5K records/s for 60 s (--quick:
15 s), and samples of its first 2 s (warm-up) are dropped. Afterwards the harness
waits until the ledger counts every produced record, stops the worker with
SIGTERM and checks that it exits 0 and that the ledger counted every record once.
Results: benchmarks/results/latency.json and lines on stdout.
"""

from __future__ import annotations

import asyncio
import json
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncpg
from aiokafka import AIOKafkaProducer

from benchmarks import processes, report, workloads
from benchmarks.bench_pipeline import warn
from benchmarks.services import Services, ledger_count

KEYS = 100
RATE = 5_000  # records per second in the steady phase
TICK_S = 0.01  # the producer sends RATE * TICK_S records per tick; the poller polls per tick
WARMUP_S = 2.0


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def _record(i: int) -> tuple[bytes, bytes]:
    t = now_ms()
    key = f"k{i % KEYS}"
    return key.encode(), json.dumps({"user_id": key, "event_time": t, "value": t}).encode()


class Poller:
    """Reads the result table every tick; samples (now - v) when a key's max moves to v."""

    def __init__(self, dsn: str, table: str) -> None:
        self.dsn, self.table = dsn, table
        self.first_row_at: float | None = None  # monotonic
        self.samples: list[tuple[float, int]] = []  # (monotonic time, latency ms)
        self._maxima: dict[str, float] = {}
        self.stop = asyncio.Event()

    async def run(self) -> None:
        conn = await asyncpg.connect(self.dsn)
        try:
            while not await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", f'"{self.table}"'):
                if self.stop.is_set():
                    return
                await asyncio.sleep(TICK_S)
            sql = f'SELECT user_id, value_max FROM "{self.table}"'
            while not self.stop.is_set():
                rows = await conn.fetch(sql)
                t, at = now_ms(), time.monotonic()
                for key, v in rows:
                    if v is None or self._maxima.get(key) == v:
                        continue
                    if self.first_row_at is None:
                        self.first_row_at = at
                    self._maxima[key] = v
                    self.samples.append((at, t - int(v)))
                await asyncio.sleep(TICK_S)
        finally:
            await conn.close()


async def _produce(
    bootstrap: str, topic: str, poller: Poller, steady_s: float
) -> tuple[int, int, float, float]:
    """Priming until the first row, then the steady phase.

    Returns (records sent, of them in the steady phase, its start, its end), monotonic.
    """
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=False)
    await producer.start()
    sent = 0
    try:
        deadline = time.monotonic() + 120
        while poller.first_row_at is None:
            if time.monotonic() > deadline:
                raise TimeoutError("no result row 120 s after the worker started")
            key, value = _record(sent)
            await producer.send_and_wait(topic, value, key=key)
            sent += 1
            await asyncio.sleep(0.1)
        steady_start = time.monotonic()
        primed = sent
        per_tick = int(RATE * TICK_S)
        tick = 0
        pending = []
        while tick * TICK_S < steady_s:
            for _ in range(per_tick):
                key, value = _record(sent)
                pending.append(await producer.send(topic, value, key=key))
                sent += 1
            tick += 1
            # An absolute schedule: a tick that ran late is made up, the rate stays RATE.
            delay = steady_start + tick * TICK_S - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            if len(pending) > 5_000:
                await asyncio.gather(*pending)
                pending = []
        await asyncio.gather(*pending)
        return sent, sent - primed, steady_start, time.monotonic()
    finally:
        await producer.stop()


def percentile(sorted_values: list[int], p: float) -> float | None:
    """Nearest-rank percentile."""
    if not sorted_values:
        return None
    rank = max(1, min(len(sorted_values), round(p / 100 * len(sorted_values) + 0.5)))
    return float(sorted_values[rank - 1])


async def _measure(svc: Services, steady_s: float, work: Path) -> dict[str, Any]:
    stamp = time.strftime("%H%M%S")
    name = f"bench_latency_{stamp}"
    from streamproc.local import create_topic

    await create_topic(svc.bootstrap, name, workloads.PARTITIONS)
    query = workloads.Query(
        "latency",
        trigger="continuous",
        aggregations="value:max",
        max_records_per_trigger=None,
        late_table=False,
    )
    document = workloads.config_document(
        query,
        name=name,
        topic=name,
        bootstrap=svc.bootstrap,
        dsn=svc.dsn,
        checkpoint=work / "checkpoints" / name,
    )
    params = document["transforms"][0]["parameters"]
    del params["windowColumn"], params["windowDuration"]  # one max per key, no window
    del document["streamingConfigJson"]["watermark"]
    config = workloads.write_config(work / "configs", document)
    worker = processes.Running(processes.streamproc_command(config), work / f"{name}.log")
    poller = Poller(svc.dsn, name)
    polling = asyncio.ensure_future(poller.run())
    try:
        sent, steady, steady_start, steady_end = await _produce(
            svc.bootstrap, name, poller, steady_s
        )
        deadline = time.monotonic() + 120
        while await ledger_count(svc.dsn, name) < sent and time.monotonic() < deadline:
            if worker.proc.poll() is not None:
                break
            await asyncio.sleep(0.1)
    finally:
        poller.stop.set()
        await polling
        worker.signal(signal.SIGTERM)
        done = await asyncio.to_thread(worker.wait, 60)
    ledger = await ledger_count(svc.dsn, name)
    valid = done.exit_code == 0 and ledger == sent
    if not valid:
        warn(
            f"latency ({name}): exit code {done.exit_code} after SIGTERM, ledger counts "
            f"{ledger} of {sent} records; result INVALID; see {worker.log_path}"
        )
    cutoff = max(steady_start, (poller.first_row_at or steady_start) + WARMUP_S)
    samples = sorted(ms for at, ms in poller.samples if at >= cutoff)
    return {
        "query_name": name,
        "keys": KEYS,
        "rate_per_s": RATE,
        "steady_seconds": steady_s,
        "records": sent,
        "steady_records": steady,
        "steady_actual_seconds": steady_end - steady_start,
        "steady_actual_rate_per_s": steady / (steady_end - steady_start),
        "samples": len(samples),
        "p50_ms": percentile(samples, 50),
        "p99_ms": percentile(samples, 99),
        "max_ms": float(samples[-1]) if samples else None,
        "worker_max_rss_mib": done.max_rss_mib,
        "exit_code": done.exit_code,
        "ledger_records": ledger,
        "valid": valid,
    }


def main(svc: Services, *, quick: bool = False) -> dict[str, Any]:
    """Run the latency measurement; print it and write results/latency.json."""
    work = Path(tempfile.mkdtemp(prefix="bench-latency-"))
    steady_s = 15.0 if quick else 60.0
    result = asyncio.run(_measure(svc, steady_s, work))
    out = {"benchmark": "latency", "quick": quick, **result}
    path = report.write_json("latency-quick" if quick else "latency", out)

    def ms(x: float | None) -> str:
        return "n/a" if x is None else f"{x:,.0f} ms"

    print(
        f"\nlatency: continuous, update, {KEYS} keys, max per key, {RATE:,} records/s for "
        f"{steady_s:.0f} s (sent {result['steady_records']:,} in "
        f"{result['steady_actual_seconds']:.1f} s, {result['records']:,} with the priming)"
    )
    print(
        f"  p50 {ms(result['p50_ms'])}, p99 {ms(result['p99_ms'])}, max {ms(result['max_ms'])} "
        f"over {result['samples']:,} samples (first {WARMUP_S:.0f} s excluded); worker peak RSS "
        f"{result['worker_max_rss_mib']:.0f} MiB; SIGTERM exit code {result['exit_code']}; "
        f"{'ok' if result['valid'] else 'INVALID'}"
    )
    print(f"(log and config in {work}; results in {path})", flush=True)
    return out

"""Engine throughput: records per second through `Engine.process` + `Engine.emit`.

Workload (generation is not timed): 1M decoded records (dicts), 10K keys, 4 partitions
(a key always goes to the same partition, as with Kafka's key partitioner), event time
advancing 10K records per second of event time with +-500 ms of disorder, about 1% of
records late (2 s delay), a tumbling 10 s window, count(*) + sum + avg + max, batches of
5,000 records (1,250 per partition), an emit() every 20 batches.

Reported: the median of several runs for update and append mode, memory and RocksDB
state, and a baseline: a plain Python loop that only buckets records by (key, window)
and sums one field, on the same batches. Results go to benchmarks/results/engine.json.
"""

from __future__ import annotations

import gc
import json
import platform
import random
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

from streamproc.engine import AggSpec, Engine, QuerySpec, WindowSpec
from streamproc.state import memory_store_factory, rocks_store_factory

Batch = list[tuple[int, int, Mapping[str, Any]]]

RESULTS = Path(__file__).parent / "results" / "engine.json"
PARTITIONS = 4
KEYS = 10_000
BATCH = 5_000
EMIT_EVERY = 20
WINDOW_MS = 10_000
DELAY_MS = 2_000
T0_MS = 1_700_000_000_000


def make_batches(n_records: int, seed: int = 7) -> list[Batch]:
    """Pre-generated batches of (partition, offset, record), per-partition chunks."""
    rng = random.Random(seed)
    streams: list[list[tuple[int, int, Mapping[str, Any]]]] = [[] for _ in range(PARTITIONS)]
    for i in range(n_records):
        k = rng.randrange(KEYS)
        ts = T0_MS + i // 10 + rng.randint(-500, 500)
        if rng.random() < 0.01:
            ts -= DELAY_MS + 1_000 + rng.randrange(5_000)
        record = {"user": f"user-{k}", "ts": ts, "amount": round(rng.random() * 100, 2)}
        part = streams[k % PARTITIONS]
        part.append((k % PARTITIONS, len(part), record))
    per = BATCH // PARTITIONS
    batches: list[Batch] = []
    for start in range(0, max(map(len, streams)), per):
        batch: Batch = []
        for stream in streams:
            batch.extend(stream[start : start + per])
        batches.append(batch)
    return batches


def spec(mode: str) -> QuerySpec:
    """The benchmark query in an output mode."""
    return QuerySpec(
        group_by=("user",),
        aggregations=(
            AggSpec("count", None, "count"),
            AggSpec("amount_sum", "amount", "sum"),
            AggSpec("amount_avg", "amount", "avg"),
            AggSpec("amount_max", "amount", "max"),
        ),
        output_mode=mode,  # type: ignore[arg-type]
        event_time_column="ts",
        delay_ms=DELAY_MS,
        window=WindowSpec(WINDOW_MS, WINDOW_MS),
    )


def run_engine(batches: Sequence[Batch], mode: str, state: str) -> dict[str, Any]:
    """One timed run; returns seconds, records and output counts."""
    tmp = tempfile.mkdtemp(prefix="bench-engine-") if state == "rocksdb" else None
    factory = memory_store_factory if tmp is None else rocks_store_factory(tmp)
    engine = Engine(spec(mode), factory, clock=lambda: 0)
    engine.assign(range(PARTITIONS))
    records = rows = late = 0
    try:
        start = time.perf_counter()
        for i, batch in enumerate(batches, 1):
            result = engine.process(batch)
            records += result.records
            late += len(result.late)
            if i % EMIT_EVERY == 0 or i == len(batches):
                rows += len(engine.emit().rows)
        seconds = time.perf_counter() - start
    finally:
        engine.close()
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    return {"seconds": seconds, "records": records, "rows": rows, "late": late}


def run_baseline(batches: Sequence[Batch]) -> dict[str, Any]:
    """A plain loop that only buckets by (key, window) and sums one field."""
    start = time.perf_counter()
    sums: dict[tuple[Any, int], float] = {}
    get = sums.get
    records = 0
    for batch in batches:
        records += len(batch)
        for _, _, rec in batch:
            ts = rec["ts"]
            bucket = (rec["user"], ts - ts % WINDOW_MS)
            sums[bucket] = get(bucket, 0.0) + rec["amount"]
    return {"seconds": time.perf_counter() - start, "records": records, "rows": len(sums)}


def median_rate(run: Callable[[], dict[str, Any]], runs: int) -> dict[str, Any]:
    """Median records/s over runs (plus the last run's counts)."""
    results = [run() for _ in range(runs)]
    rates = [r["records"] / r["seconds"] for r in results]
    out = dict(results[-1])
    out["records_per_s"] = statistics.median(rates)
    out["runs_records_per_s"] = [round(r) for r in rates]
    return out


def main(quick: bool = False) -> dict[str, Any]:
    """Run the engine benchmark, print a table and write the JSON results."""
    n_records = 200_000 if quick else 1_000_000
    runs = 3 if quick else 5
    batches = make_batches(n_records)
    # The pre-generated records are a benchmark artefact (a runtime holds one batch at a
    # time): keep the cyclic GC from rescanning a million dicts in every timed run.
    gc.collect()
    gc.freeze()
    baseline = median_rate(partial(run_baseline, batches), runs)
    cases: dict[str, dict[str, Any]] = {}
    for state in ("memory", "rocksdb"):
        for mode in ("update", "append"):
            cases[f"{state}/{mode}"] = median_rate(partial(run_engine, batches, mode, state), runs)
    base_rate = baseline["records_per_s"]
    print(f"engine benchmark: {n_records:,} records, median of {runs} runs")
    print(f"{'case':<18}{'records/s':>12}{'vs baseline':>13}{'rows':>10}{'late':>8}")
    print(f"{'baseline':<18}{base_rate:>12,.0f}{1.0:>13.2f}{baseline['rows']:>10,}{'':>8}")
    for name, case in cases.items():
        rate = case["records_per_s"]
        ratio = rate / base_rate
        print(f"{name:<18}{rate:>12,.0f}{ratio:>13.2f}{case['rows']:>10,}{case['late']:>8,}")
    report = {
        "benchmark": "engine",
        "quick": quick,
        "records": n_records,
        "runs": runs,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "workload": {
            "partitions": PARTITIONS,
            "keys": KEYS,
            "batch": BATCH,
            "emit_every_batches": EMIT_EVERY,
            "window_ms": WINDOW_MS,
            "delay_ms": DELAY_MS,
            "aggregations": ["*:count", "amount:sum", "amount:avg", "amount:max"],
        },
        "baseline": baseline,
        "cases": cases,
        "ratio_to_baseline": {k: v["records_per_s"] / base_rate for k, v in cases.items()},
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    return report

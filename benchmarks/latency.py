"""End-to-end latency of a continuous query: produce time to visible in PostgreSQL.

Two cases, each one `streamproc run` worker, `triggerMode: continuous`, update
mode, `value:max` per key over 100 keys:

- latency: non-windowed, one result row per key;
- latency/windowed: a tumbling 1 hour window on event_time, watermark delay 5 s,
  so one row per (key, window), and every batch goes through the windowed path
  (watermark, window bounds in the row key).

Each record's value (and event time) is its produce time in epoch ms, so a key's
max in the result table is the newest produce time of that key that streamproc
committed. A poller reads the table every 10 ms (windowed: the max over the key's
windows, since an hour boundary may fall inside the run) and, each time a key's
max changes to v, takes (now - v) as one sample.

Start-up is excluded: a trickle of priming records (10/s) runs until the worker
wrote its first row; then the steady phase sends 5K records/s for 60 s (--quick:
15 s), and samples of its first 2 s (warm-up) are dropped. Afterwards the harness
waits until the ledger counts every produced record, stops the worker with
SIGTERM and checks that it exits 0 and that the ledger counted every record once.
`--runs` rounds, each running every case once on a fresh topic and query; a case
reports the median over its runs of p50, p99 and max (and every run's figures).
Results: benchmarks/results/latency.json and lines on stdout.
"""

from __future__ import annotations

import asyncio
import json
import signal
import tempfile
import time
from dataclasses import dataclass
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
DELAY = workloads.DELAY  # the windowed case's watermark delay ("5 seconds")


@dataclass(frozen=True)
class Case:
    """One latency query: its label and its window (None: one max per key, no window)."""

    label: str
    window: str | None

    @property
    def poll_sql(self) -> str:
        """What the poller reads, with {table} to fill in: one (key, max) row per key."""
        if self.window is None:
            return 'SELECT user_id, value_max FROM "{table}"'
        # One row per (key, window): the key's max is the max over its windows, so it
        # keeps moving when the run crosses a window boundary.
        return 'SELECT user_id, max(value_max) FROM "{table}" GROUP BY user_id'

    def describe(self) -> str:
        """The query in words, for the printed summary."""
        shape = "non-windowed" if self.window is None else f"tumbling {self.window}, delay {DELAY}"
        return f"continuous, update, {KEYS} keys, max per key, {shape}"


CASES = (Case("latency", None), Case("latency/windowed", "1 hour"))


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def _record(i: int) -> tuple[bytes, bytes]:
    t = now_ms()
    key = f"k{i % KEYS}"
    return key.encode(), json.dumps({"user_id": key, "event_time": t, "value": t}).encode()


class Poller:
    """Reads the result table every tick; samples (now - v) when a key's max moves to v."""

    def __init__(self, dsn: str, table: str, sql: str) -> None:
        self.dsn, self.table, self.sql = dsn, table, sql
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
            while not self.stop.is_set():
                rows = await conn.fetch(self.sql)
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


def _config(case: Case, svc: Services, name: str, work: Path) -> Path:
    """The config of one run of a case: the benchmark query made continuous, value:max."""
    query = workloads.Query(
        case.label,
        trigger="continuous",
        window=case.window or workloads.Query.window,
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
    if case.window is None:
        params = document["transforms"][0]["parameters"]
        del params["windowColumn"], params["windowDuration"]  # one max per key, no window
        del document["streamingConfigJson"]["watermark"]
    return workloads.write_config(work / "configs", document)


async def _measure(
    svc: Services, case: Case, steady_s: float, work: Path, tag: str
) -> dict[str, Any]:
    """One run of one case on a fresh topic and query: its samples' percentiles, checked."""
    name = f"bench_{case.label.replace('/', '_')}_{tag}"
    from streamproc.local import create_topic

    await create_topic(svc.bootstrap, name, workloads.PARTITIONS)
    config = _config(case, svc, name, work)
    worker = processes.Running(processes.streamproc_command(config), work / f"{name}.log")
    poller = Poller(svc.dsn, name, case.poll_sql.format(table=name))
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
            f"{case.label} ({name}): exit code {done.exit_code} after SIGTERM, ledger counts "
            f"{ledger} of {sent} records; result INVALID; see {worker.log_path}"
        )
    cutoff = max(steady_start, (poller.first_row_at or steady_start) + WARMUP_S)
    samples = sorted(ms for at, ms in poller.samples if at >= cutoff)
    return {
        "query_name": name,
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
        "round_trips": processes.parse_round_trips(done.output),
        "ledger_records": ledger,
        "valid": valid,
        "log": str(worker.log_path),
    }


def _median_of(runs: list[dict[str, Any]], key: str) -> float | None:
    """Median of one figure over the runs that have it (a run without samples has None)."""
    return report.median([r[key] for r in runs if r[key] is not None])


def summarize(case: Case, steady_s: float, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One case's entry of the results: its shape, every run, and the medians over runs."""
    return {
        "case": case.label,
        "window": case.window,
        "delay": DELAY if case.window else None,
        "keys": KEYS,
        "rate_per_s": RATE,
        "steady_seconds": steady_s,
        "runs": runs,
        "median_p50_ms": _median_of(runs, "p50_ms"),
        "median_p99_ms": _median_of(runs, "p99_ms"),
        "median_max_ms": _median_of(runs, "max_ms"),
        "median_worker_max_rss_mib": _median_of(runs, "worker_max_rss_mib"),
        "median_round_trips": _median_of(runs, "round_trips"),
        "valid": all(r["valid"] for r in runs),
    }


def _ms(x: float | None) -> str:
    return "n/a" if x is None else f"{x:,.0f} ms"


def run_line(r: dict[str, Any]) -> str:
    """One run's figures on one line."""
    return (
        f"p50 {_ms(r['p50_ms'])}, p99 {_ms(r['p99_ms'])}, max {_ms(r['max_ms'])} over "
        f"{r['samples']:,} samples; sent {r['steady_records']:,} in "
        f"{r['steady_actual_seconds']:.1f} s ({r['records']:,} with the priming); worker "
        f"peak RSS {r['worker_max_rss_mib']:.0f} MiB; SIGTERM exit code {r['exit_code']}; "
        f"{'ok' if r['valid'] else 'INVALID'}"
    )


def case_lines(c: dict[str, Any], runs: int) -> list[str]:
    """A case's summary: what it is, each run, the medians."""
    case = Case(c["case"], c["window"])
    rt = c["median_round_trips"]
    lines = [
        f"{c['case']}: {case.describe()}, {RATE:,} records/s for {c['steady_seconds']:.0f} s, "
        f"median of {runs} run(s) (first {WARMUP_S:.0f} s of each excluded)"
    ]
    lines += [f"  run {i + 1}: {run_line(r)}" for i, r in enumerate(c["runs"])]
    lines.append(
        f"  median p50 {_ms(c['median_p50_ms'])}, p99 {_ms(c['median_p99_ms'])}, max "
        f"{_ms(c['median_max_ms'])}; round trips per commit "
        f"{'n/a' if rt is None else f'{rt:.2f}'}; {'ok' if c['valid'] else 'INVALID'}"
    )
    return lines


def main(svc: Services, *, quick: bool = False, runs: int = 1) -> dict[str, Any]:
    """Run every case `runs` times; print them and write results/latency.json."""
    work = Path(tempfile.mkdtemp(prefix="bench-latency-"))
    steady_s = 15.0 if quick else 60.0
    stamp = time.strftime("%H%M%S")
    per_case: dict[str, list[dict[str, Any]]] = {c.label: [] for c in CASES}
    # Rounds, not case after case: a slow spell of the machine then lands on every
    # case alike instead of on one case's runs.
    for i in range(runs):
        for case in CASES:
            r = asyncio.run(_measure(svc, case, steady_s, work, f"{stamp}_{i}"))
            per_case[case.label].append(r)
            print(f"  run {i + 1}/{runs} {case.label}: {run_line(r)}", flush=True)
    cases = [summarize(c, steady_s, per_case[c.label]) for c in CASES]
    out = {"benchmark": "latency", "quick": quick, "runs": runs, "cases": cases}
    path = report.write_json("latency-quick" if quick else "latency", out)
    print()
    for c in cases:
        print("\n".join(case_lines(c, runs)))
    print(f"(logs and configs in {work}; results in {path})", flush=True)
    return out

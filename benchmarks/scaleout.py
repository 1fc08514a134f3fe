"""Scale-out: 1, 2 and 4 `streamproc run` workers on one query, sparse and dense workloads.

The workers of one measurement are separate processes started together on one
config (so one queryName and one consumer group); the measurement is timed from
the start of the first to the exit of the last. availablenow ends a worker when
every partition of the topic reached the end offsets of the run, whichever worker
read it (STREAMING.md, "Triggers"), so all of them exit. Checked like every streamproc
run: all exit codes 0, and the ledger counts every produced record once.

Speed alone hides where the work went: two workers can finish sooner and still
cost more CPU per record, in themselves or in PostgreSQL (every partition's
states merged under the query's lock). So each measurement also counts CPU:
the workers' user + system seconds (os.wait4's rusage) and PostgreSQL's, all its
processes over the measurement (benchmarks/pgcpu.py; n/a for an external
database), per record. Where the workers print `lock share: <fraction>` and
`round trips per commit: <n>`, the medians over workers and runs are reported.
On this 2-core machine 4 workers share 2 cores with the broker and PostgreSQL:
read the speed-up with that in mind; the CPU per record is the steadier figure.
Results: benchmarks/results/scaleout.json and one table per workload on stdout.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import pgcpu, processes, report, workloads
from benchmarks.bench_pipeline import RUN_TIMEOUT_S, warn
from benchmarks.services import Services, ledger_count

WORKERS = (1, 2, 4)
US = 1_000_000  # microseconds per second


def per_record_us(seconds: float | None, records: int) -> float | None:
    """CPU seconds spread over the records, in µs per record; None stays None."""
    return None if seconds is None else seconds / records * US


def run_workers(
    svc: Services,
    w: workloads.Workload,
    topic: str,
    produced: int,
    workers: int,
    work: Path,
    tag: str,
) -> dict[str, Any]:
    """One measurement: `workers` processes on a fresh query; timed, CPU counted, checked."""
    name = f"bench_scale_{w.name}{workers}_{tag}"
    document = workloads.config_document(
        workloads.Query(f"{w.name} x{workers}"),
        name=name,
        topic=topic,
        bootstrap=svc.bootstrap,
        dsn=svc.dsn,
        checkpoint=work / "checkpoints" / name,
    )
    config = workloads.write_config(work / "configs", document)
    argvs = [processes.streamproc_command(config)] * workers
    # Sampled just outside the run: the few ms of a /proc walk stay out of its time.
    pg_before = pgcpu.server_seconds(svc.postgres_pid)
    seconds, done = processes.run_together(argvs, work / "logs", name, RUN_TIMEOUT_S)
    pg_after = pgcpu.server_seconds(svc.postgres_pid)
    pg_cpu = None if pg_before is None or pg_after is None else pg_after - pg_before
    ledger = asyncio.run(ledger_count(svc.dsn, name))
    codes = [d.exit_code for d in done]
    valid = all(c == 0 for c in codes) and ledger == produced
    if not valid:
        warn(
            f"scale-out {w.name} {workers} worker(s) ({name}): exit codes {codes}, ledger "
            f"counts {ledger} of {produced} records; result INVALID; logs in {work / 'logs'}"
        )
    worker_cpu = sum(d.cpu_seconds for d in done)
    total_cpu = None if pg_cpu is None else worker_cpu + pg_cpu
    return {
        "query_name": name,
        "seconds": seconds,
        "records_per_s": produced / seconds,
        "max_rss_mib": max(d.max_rss_mib for d in done),
        "worker_seconds": [d.seconds for d in done],
        "worker_cpu_seconds": [d.cpu_seconds for d in done],
        "postgres_cpu_seconds": pg_cpu,
        "worker_cpu_us_per_record": per_record_us(worker_cpu, produced),
        "postgres_cpu_us_per_record": per_record_us(pg_cpu, produced),
        "total_cpu_us_per_record": per_record_us(total_cpu, produced),
        "exit_codes": codes,
        "lock_shares": [processes.parse_lock_share(d.output) for d in done],
        "round_trips_per_worker": [processes.parse_round_trips(d.output) for d in done],
        "phases": None,
        "ledger_records": ledger,
        "valid": valid,
    }


def _median_of(runs: list[dict[str, Any]], key: str) -> float | None:
    return report.median([r[key] for r in runs if r[key] is not None])


def _median_per_worker(runs: list[dict[str, Any]], key: str) -> float | None:
    """Median over every worker of every run (a worker that printed nothing: skipped)."""
    return report.median([v for r in runs for v in r[key] if v is not None])


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def summarize(
    w: workloads.Workload, produced: int, per_count: dict[int, list[dict[str, Any]]]
) -> list[dict[str, Any]]:
    """One case per worker count: medians, and the speed-up and CPU ratio to 1 worker."""
    cases = []
    for k in WORKERS:
        runs = per_count[k]
        cases.append(
            {
                "case": f"{w.name} x{k}",
                "workload_name": w.name,
                "workers": k,
                "records": produced,
                "workload": w.describe(),
                **report.summarize_runs(runs),
                "lock_shares_per_run": [r["lock_shares"] for r in runs],
                "median_lock_share": _median_per_worker(runs, "lock_shares"),
                "median_round_trips": _median_per_worker(runs, "round_trips_per_worker"),
                "median_worker_cpu_us_per_record": _median_of(runs, "worker_cpu_us_per_record"),
                "median_postgres_cpu_us_per_record": _median_of(runs, "postgres_cpu_us_per_record"),
                "median_total_cpu_us_per_record": _median_of(runs, "total_cpu_us_per_record"),
            }
        )
    base = cases[0]  # 1 worker
    for c in cases:
        c["speed_up"] = _ratio(c["median_records_per_s"], base["median_records_per_s"])
        c["total_cpu_ratio"] = _ratio(
            c["median_total_cpu_us_per_record"], base["median_total_cpu_us_per_record"]
        )
    return cases


def main(svc: Services, *, quick: bool = False, runs: int = 3) -> dict[str, Any]:
    """Run the scale-out measurements; print the tables and write results/scaleout.json."""
    n = 100_000 if quick else 1_000_000
    work = Path(tempfile.mkdtemp(prefix="bench-scaleout-"))
    (work / "logs").mkdir()
    stamp = time.strftime("%H%M%S")
    produced: dict[str, int] = {}
    topics: dict[str, str] = {}
    shapes = (workloads.sparse(n), workloads.dense(n))
    for w in shapes:
        topics[w.name] = f"bench_scaleout_{w.name}_{stamp}"
        produced[w.name] = asyncio.run(workloads.produce(svc.bootstrap, topics[w.name], w))
        print(f"scale-out: produced {produced[w.name]:,} records to {topics[w.name]}", flush=True)
    if svc.postgres_pid is None:
        print("scale-out: PostgreSQL is external, its CPU is n/a", flush=True)
    per_count: dict[str, dict[int, list[dict[str, Any]]]] = {
        w.name: {k: [] for k in WORKERS} for w in shapes
    }
    # Rounds of every (workload, workers) measurement, so that a slow spell of the
    # machine lands on all of them rather than on one worker count's runs.
    for i in range(runs):
        for w in shapes:
            for k in WORKERS:
                r = run_workers(svc, w, topics[w.name], produced[w.name], k, work, f"{stamp}_{i}")
                per_count[w.name][k].append(r)
                print(
                    f"  run {i + 1}/{runs} {w.name} {k} worker(s): "
                    f"{r['records_per_s']:,.0f} rec/s ({r['seconds']:.1f}s), CPU µs/record "
                    f"workers {report.fmt(r['worker_cpu_us_per_record'], '.1f')} + PostgreSQL "
                    f"{report.fmt(r['postgres_cpu_us_per_record'], '.1f')}"
                    f"{'' if r['valid'] else ' INVALID'}",
                    flush=True,
                )
    cases = [c for w in shapes for c in summarize(w, produced[w.name], per_count[w.name])]
    out = {"benchmark": "scaleout", "quick": quick, "runs": runs, "cases": cases}
    path = report.write_json("scaleout-quick" if quick else "scaleout", out)
    for w in shapes:
        print(f"\nscale-out: {w.name} workload, update mode, median of {runs} run(s)")
        print(report.scaleout_table([c for c in cases if c["workload_name"] == w.name]))
    print(f"(logs and configs in {work}; results in {path})", flush=True)
    return out

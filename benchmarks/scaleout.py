"""Scale-out: 1, 2 and 4 `streamproc run` workers on the same query of the sparse workload.

The workers of one measurement are separate processes started together on one
config (so one queryName and one consumer group); the measurement is timed from
the start of the first to the exit of the last. availablenow ends a worker when
every partition of the topic reached the end offsets of the run, whichever worker
read it (STREAMING.md, "Triggers"), so all of them exit. Checked like every streamproc
run: all exit codes 0, and the ledger counts every produced record once. Where the
workers print `lock share: <fraction>`, each worker's share is reported with the
bound it sets on scale-out (1 / share). On this 2-core machine 4 workers share 2
cores with the broker and PostgreSQL: read the speed-up with that in mind.
Results: benchmarks/results/scaleout.json and a table on stdout.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import processes, report, workloads
from benchmarks.bench_pipeline import RUN_TIMEOUT_S, warn
from benchmarks.services import Services, ledger_count

WORKERS = (1, 2, 4)


def run_workers(
    svc: Services, topic: str, produced: int, workers: int, work: Path, tag: str
) -> dict[str, Any]:
    """One measurement: `workers` processes on a fresh query; timed and checked."""
    name = f"bench_scale{workers}_{tag}"
    document = workloads.config_document(
        workloads.Query(f"sparse x{workers}"),
        name=name,
        topic=topic,
        bootstrap=svc.bootstrap,
        dsn=svc.dsn,
        checkpoint=work / "checkpoints" / name,
    )
    config = workloads.write_config(work / "configs", document)
    argvs = [processes.streamproc_command(config)] * workers
    seconds, done = processes.run_together(argvs, work / "logs", name, RUN_TIMEOUT_S)
    ledger = asyncio.run(ledger_count(svc.dsn, name))
    codes = [d.exit_code for d in done]
    valid = all(c == 0 for c in codes) and ledger == produced
    if not valid:
        warn(
            f"scale-out {workers} worker(s) ({name}): exit codes {codes}, ledger counts "
            f"{ledger} of {produced} records; result INVALID; logs in {work / 'logs'}"
        )
    return {
        "query_name": name,
        "seconds": seconds,
        "records_per_s": produced / seconds,
        "max_rss_mib": max(d.max_rss_mib for d in done),
        "worker_seconds": [d.seconds for d in done],
        "exit_codes": codes,
        "lock_shares": [processes.parse_lock_share(d.output) for d in done],
        "phases": None,
        "ledger_records": ledger,
        "valid": valid,
    }


def main(svc: Services, *, quick: bool = False, runs: int = 3) -> dict[str, Any]:
    """Run the scale-out measurements; print the table and write results/scaleout.json."""
    n = 100_000 if quick else 1_000_000
    work = Path(tempfile.mkdtemp(prefix="bench-scaleout-"))
    (work / "logs").mkdir()
    w = workloads.sparse(n)
    stamp = time.strftime("%H%M%S")
    topic = f"bench_scaleout_{stamp}"
    produced = asyncio.run(workloads.produce(svc.bootstrap, topic, w))
    print(f"scale-out: produced {produced:,} records to {topic}", flush=True)
    per_count: dict[int, list[dict[str, Any]]] = {k: [] for k in WORKERS}
    for i in range(runs):
        for k in WORKERS:
            r = run_workers(svc, topic, produced, k, work, f"{stamp}_{i}")
            per_count[k].append(r)
            print(
                f"  run {i + 1}/{runs} {k} worker(s): {r['records_per_s']:,.0f} rec/s "
                f"({r['seconds']:.1f}s){'' if r['valid'] else ' INVALID'}",
                flush=True,
            )
    cases = []
    for k in WORKERS:
        summary = report.summarize_runs(per_count[k])
        all_shares = [s for r in per_count[k] for s in r["lock_shares"] if s is not None]
        cases.append(
            {
                "workers": k,
                "records": produced,
                "workload": w.describe(),
                **summary,
                "lock_shares_per_run": [r["lock_shares"] for r in per_count[k]],
                "median_lock_share": report.median(all_shares),
            }
        )
    out = {"benchmark": "scaleout", "quick": quick, "runs": runs, "cases": cases}
    path = report.write_json("scaleout-quick" if quick else "scaleout", out)
    print(f"\nscale-out: sparse workload, update mode, median of {runs} run(s)")
    print(report.scaleout_table(cases))
    print(f"(logs and configs in {work}; results in {path})", flush=True)
    return out

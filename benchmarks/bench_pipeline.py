"""Whole-process throughput: the floor and `streamproc run` on the same records.

For each workload (benchmarks/workloads.py: dense, sparse; 1M records, --quick
100K) the records are produced once (not timed) to a 4-partition topic. Then, per
round (--runs, default 3), the floor process (benchmarks/floor.py) and one
`streamproc run CONFIG` per query on that topic run one after the other, each timed
as a whole process from start to exit (start-up, group join and shut-down
included), with its peak RSS. Queries: update mode, tumbling 10 s, on both
workloads; append mode and a sliding 60 s / 10 s window on the sparse one (they
share the sparse floor). Every streamproc run has a fresh queryName, table and
checkpoint directory, and is checked: exit code 0 and the ledger counting every
produced record once; otherwise a warning is printed and the case is INVALID.
Results: benchmarks/results/pipeline.json and a table on stdout.
"""

from __future__ import annotations

import asyncio
import re
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import processes, report, workloads
from benchmarks.services import Services, bytes_per_row, ledger_count, ledger_late

CASES: dict[str, list[workloads.Query]] = {
    "dense": [workloads.Query("dense"), workloads.Query("dense/sessions", gap="30 seconds")],
    "sparse": [
        workloads.Query("sparse"),
        workloads.Query("sparse/append", output_mode="append"),
        workloads.Query("sparse/sliding", window="60 seconds", slide="10 seconds"),
        workloads.Query("sparse/sessions", gap="30 seconds"),
    ],
}
RUN_TIMEOUT_S = 3_600.0
_FLOOR = re.compile(r"^floor: (\d+) records$", re.MULTILINE)


def warn(text: str) -> None:
    print(f"WARNING: {text}", flush=True)


def run_floor(svc: Services, topic: str, produced: int, log: Path) -> dict[str, Any]:
    """One floor process over the topic; its measurement, checked."""
    done = processes.run(processes.floor_command(svc.bootstrap, topic), log, RUN_TIMEOUT_S)
    found = _FLOOR.search(done.output)
    counted = int(found.group(1)) if found else None
    valid = done.exit_code == 0 and counted == produced
    if not valid:
        warn(
            f"floor on {topic}: exit code {done.exit_code}, counted {counted} of {produced} "
            f"records; see {log}"
        )
    return {
        "seconds": done.seconds,
        "records_per_s": produced / done.seconds,
        "max_rss_mib": done.max_rss_mib,
        "exit_code": done.exit_code,
        "records_counted": counted,
        "valid": valid,
    }


def check_streamproc(
    svc: Services, name: str, produced: int, done: processes.Finished, log: Path, what: str
) -> dict[str, Any]:
    """The checks made after every streamproc run: exit code 0, ledger == produced."""
    ledger = asyncio.run(ledger_count(svc.dsn, name))
    late = asyncio.run(ledger_late(svc.dsn, name)) if ledger else 0
    valid = done.exit_code == 0 and ledger == produced
    if not valid:
        warn(
            f"{what} ({name}): exit code {done.exit_code}, ledger counts {ledger} of "
            f"{produced} records; result INVALID; see {log}"
        )
    return {"ledger_records": ledger, "ledger_late": late, "valid": valid}


def run_streamproc(
    svc: Services, q: workloads.Query, topic: str, produced: int, work: Path, tag: str
) -> dict[str, Any]:
    """One `streamproc run` of query q over topic, fresh query name; measured and checked."""
    name = f"bench_{q.label.replace('/', '_')}_{tag}"
    document = workloads.config_document(
        q,
        name=name,
        topic=topic,
        bootstrap=svc.bootstrap,
        dsn=svc.dsn,
        checkpoint=work / "checkpoints" / name,
    )
    config = workloads.write_config(work / "configs", document)
    log = work / "logs" / f"{name}.log"
    done = processes.run(processes.streamproc_command(config), log, RUN_TIMEOUT_S)
    checks = check_streamproc(svc, name, produced, done, log, f"streamproc {q.label}")
    footprint = asyncio.run(bytes_per_row(svc.dsn, name, name))
    return {
        "query_name": name,
        "seconds": done.seconds,
        "records_per_s": produced / done.seconds,
        "max_rss_mib": done.max_rss_mib,
        "exit_code": done.exit_code,
        "phases": processes.parse_phases(done.output),
        "lock_share": processes.parse_lock_share(done.output),
        "round_trips": processes.parse_round_trips(done.output),
        **footprint,
        **checks,
    }


def bench_workload(
    svc: Services, w: workloads.Workload, runs: int, work: Path
) -> list[dict[str, Any]]:
    """Produce one workload, then `runs` rounds of floor + each of its queries."""
    stamp = time.strftime("%H%M%S")
    topic = f"bench_{w.name}_{stamp}"
    started = time.monotonic()
    produced = asyncio.run(workloads.produce(svc.bootstrap, topic, w))
    print(
        f"{w.name}: produced {produced:,} records to {topic} in {time.monotonic() - started:.1f}s",
        flush=True,
    )
    floors: list[dict[str, Any]] = []
    per_query: dict[str, list[dict[str, Any]]] = {q.label: [] for q in CASES[w.name]}
    for i in range(runs):
        floor = run_floor(svc, topic, produced, work / "logs" / f"floor_{topic}_{i}.log")
        floors.append(floor)
        print(f"  run {i + 1}/{runs} floor: {floor['records_per_s']:,.0f} rec/s", flush=True)
        for q in CASES[w.name]:
            r = run_streamproc(svc, q, topic, produced, work, f"{stamp}_{i}")
            per_query[q.label].append(r)
            print(
                f"  run {i + 1}/{runs} streamproc {q.label}: {r['records_per_s']:,.0f} rec/s "
                f"({r['seconds']:.1f}s){'' if r['valid'] else ' INVALID'}",
                flush=True,
            )
    floor_summary = report.summarize_runs(floors)
    out = []
    for q in CASES[w.name]:
        sp = report.summarize_runs(per_query[q.label])
        ratio = (
            sp["median_records_per_s"] / floor_summary["median_records_per_s"]
            if sp["median_records_per_s"] and floor_summary["median_records_per_s"]
            else None
        )
        out.append(
            {
                "case": q.label,
                "workload": w.describe(),
                "records": produced,
                "topic": topic,
                "query": {
                    "outputMode": q.output_mode,
                    "window": q.window,
                    "slide": q.slide or q.window,
                    "trigger": q.trigger,
                    "aggregations": q.aggregations,
                    "delay": workloads.DELAY,
                    "maxRecordsPerTrigger": q.max_records_per_trigger,
                    "late": "separatestream" if q.late_table else "drop",
                },
                "floor": floor_summary,
                "streamproc": sp,
                "ratio": ratio,
                "valid": floor_summary["valid"] and sp["valid"],
            }
        )
    return out


def main(
    svc: Services, *, quick: bool = False, runs: int = 3, only: list[str] | None = None
) -> dict[str, Any]:
    """Run the pipeline cases; print the table and write results/pipeline.json."""
    n = 100_000 if quick else 1_000_000
    work = Path(tempfile.mkdtemp(prefix="bench-pipeline-"))
    (work / "logs").mkdir()
    cases: list[dict[str, Any]] = []
    for w in (workloads.dense(n), workloads.sparse(n)):
        if only and w.name not in only:
            continue
        cases.extend(bench_workload(svc, w, runs, work))
    out = {"benchmark": "pipeline", "quick": quick, "runs": runs, "cases": cases}
    path = report.write_json("pipeline-quick" if quick else "pipeline", out)
    print(f"\npipeline: whole processes, median of {runs} run(s), {n:,} records per workload")
    print(report.pipeline_table(cases))
    print(f"(logs and configs in {work}; results in {path})", flush=True)
    return out

"""Stress: several workers of one query started together, checked against one worker.

    python -m benchmarks.stress [--workers 4] [--repeat 3] [--records 1000000]
                                [--shapes sparse dense sliding sessions] [--faust] [--seed N]

Not part of `make test` (minutes per run): a script for anyone to run after a
change to the commit, the restore or the group handling. Per shape and repeat, a
fresh topic is produced with a random seed (printed, so a failure can be run
again with --seed), then:

1. one `streamproc run` worker makes the reference table;
2. N workers (`streamproc run`, or `faust -A agents.app worker` with --faust) are
   started together on a second query over the same topic;

and each run is checked: every worker exited 0 within the timeout (a bounded run
always ends), the ledger counts every produced record once, the table's
`sum(count)` equals what the ledger says was aggregated (times windows per record),
and the table equals the reference row by row (floats to 1e-9 relative). Exit 1
when any run was wrong; the logs of a wrong run are kept and named.

Shapes (benchmarks/workloads.py): sparse and dense are the benchmark workloads
(update mode, tumbling 10 s, count/sum/avg/max per user); sliding is the sparse
stream with a region per record, sliding 30 s / 10 s windows and nine aggregates
per (user_id, region); sessions is the sparse stream in session windows of a 30 s
gap with the nine aggregates per user (merges across partitions: users are spread
over every partition).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import random
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import asyncpg

from benchmarks import processes, workloads
from benchmarks.services import Services, ledger_count, services

RUN_TIMEOUT_S = 900.0
NINE = (
    "value:count,value:sum,value:avg,value:min,value:max,value:first,value:last,"
    "*:count,event_time:max"
)


@dataclass(frozen=True)
class Shape:
    """A workload and the query run over it."""

    name: str
    workload: workloads.Workload
    query: workloads.Query
    group_by: str = "user_id"
    windows_per_record: int = 1


def shapes(records: int, seed: int, users: int) -> dict[str, Shape]:
    sparse = replace(workloads.sparse(records), seed=seed, users=users)
    dense = replace(workloads.dense(records), seed=seed, users=users)
    return {
        "sparse": Shape("sparse", sparse, workloads.Query("sparse")),
        "dense": Shape("dense", dense, workloads.Query("dense")),
        "sliding": Shape(
            "sliding",
            replace(sparse, regions=True),
            workloads.Query("sliding", window="30 seconds", slide="10 seconds", aggregations=NINE),
            group_by="user_id,region",
            windows_per_record=3,
        ),
        "sessions": Shape(
            "sessions",
            sparse,
            workloads.Query("sessions", gap="30 seconds", aggregations=NINE),
        ),
    }


def config_for(svc: Services, shape: Shape, name: str, topic: str, work: Path) -> Path:
    document = workloads.config_document(
        shape.query,
        name=name,
        topic=topic,
        bootstrap=svc.bootstrap,
        dsn=svc.dsn,
        checkpoint=work / "checkpoints" / name,
    )
    document["transforms"][0]["parameters"]["groupByColumns"] = shape.group_by
    return workloads.write_config(work / "configs", document)


def faust_command() -> list[str]:
    script = Path(sys.executable).with_name("faust")
    return [str(script), "-A", "agents.app", "worker", "-l", "info"]


def start_workers(
    config: Path, count: int, faust: bool, log_dir: Path, stem: str
) -> list[processes.Running]:
    procs = []
    for i in range(count):
        log = log_dir / f"{stem}-{i}.log"
        if faust:
            env = {"STREAMPROC_CONFIG": str(config)}
            procs.append(processes.Running(faust_command(), log, env))
        else:
            procs.append(processes.Running(processes.streamproc_command(config), log))
    return procs


def wait_all(procs: list[processes.Running]) -> list[processes.Finished]:
    import threading

    results: list[processes.Finished | None] = [None] * len(procs)

    def reap(i: int) -> None:
        results[i] = procs[i].wait(RUN_TIMEOUT_S)

    threads = [threading.Thread(target=reap, args=(i,)) for i in range(len(procs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return [r for r in results if r is not None]


# A result table's rows by their key (group-by values, then the window bounds).
Rows = dict[tuple[Any, ...], dict[str, Any]]


async def table_rows(dsn: str, table: str, keys: list[str]) -> Rows:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(f'SELECT * FROM "{table}"')
    finally:
        await conn.close()
    out = {}
    for r in rows:
        d = dict(r)
        out[tuple(d[k] for k in (*keys, "window_start", "window_end"))] = d
    return out


async def aggregated(dsn: str, query: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        n = await conn.fetchval(
            "SELECT coalesce(sum(aggregated), 0) FROM streamproc_ledger WHERE query = $1", query
        )
    finally:
        await conn.close()
    return int(n)


async def count_sum(dsn: str, table: str, column: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        n = await conn.fetchval(f'SELECT coalesce(sum("{column}"), 0) FROM "{table}"')
    finally:
        await conn.close()
    return int(n)


def same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)
    return bool(a == b)


def differences(ref: Rows, got: Rows, limit: int = 5) -> list[str]:
    out = []
    for key in sorted(set(ref) | set(got), key=repr):
        r, g = ref.get(key), got.get(key)
        if r is None or g is None:
            out.append(f"{key}: {'missing' if g is None else 'extra'}")
        else:
            bad = [c for c in r if not same(r[c], g[c])]
            if bad:
                out.append(f"{key}: " + ", ".join(f"{c} {g[c]!r} != {r[c]!r}" for c in bad))
        if len(out) >= limit:
            break
    return out


def check(
    svc: Services,
    shape: Shape,
    name: str,
    produced: int,
    done: list[processes.Finished],
    reference: Rows | None,
) -> list[str]:
    """What is wrong with one run ([] when it is exact)."""
    problems = []
    codes = [d.exit_code for d in done]
    if any(c != 0 for c in codes):
        problems.append(f"exit codes {codes} (negative: killed after {RUN_TIMEOUT_S:.0f}s)")
    counted = asyncio.run(ledger_count(svc.dsn, name))
    if counted != produced:
        problems.append(f"the ledger counts {counted:,} of {produced:,} records")
    agg = asyncio.run(aggregated(svc.dsn, name))
    column = "count" if "*:count" in shape.query.aggregations else "value_count"
    total = asyncio.run(count_sum(svc.dsn, name, column))
    if total != agg * shape.windows_per_record:
        problems.append(
            f"sum({column}) is {total:,}; the ledger aggregated {agg:,} "
            f"(x{shape.windows_per_record} windows = {agg * shape.windows_per_record:,})"
        )
    if reference is not None:
        keys = shape.group_by.split(",")
        got = asyncio.run(table_rows(svc.dsn, name, keys))
        diff = differences(reference, got)
        if diff:
            wrong = sum(
                1
                for k in set(reference) | set(got)
                if k not in got
                or k not in reference
                or any(not same(reference[k][c], got[k][c]) for c in reference[k])
            )
            problems.append(f"{wrong:,} row(s) differ from one worker's table, e.g. {diff}")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.stress", description=__doc__)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument(
        "--shapes",
        nargs="+",
        choices=("sparse", "dense", "sliding", "sessions"),
        default=["sparse", "dense"],
    )
    parser.add_argument("--faust", action="store_true", help="Faust worker processes")
    parser.add_argument("--seed", type=int, default=None, help="first seed (default: random)")
    parser.add_argument("--users", type=int, default=workloads.USERS, help="distinct users")
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.randrange(1_000_000)
    work = Path(tempfile.mkdtemp(prefix="stress-"))
    (work / "logs").mkdir()
    kind = "faust" if args.faust else "streamproc run"
    failures = runs = 0
    with services() as svc:
        print(f"broker {svc.bootstrap}, database {svc.dsn}; work in {work}", flush=True)
        for i in range(args.repeat):
            for shape_name in args.shapes:
                s = seed + i
                shape = shapes(args.records, s, args.users)[shape_name]
                stamp = f"{shape_name}_{s}_{time.strftime('%H%M%S')}"
                topic = f"stress_{stamp}"
                produced = asyncio.run(workloads.produce(svc.bootstrap, topic, shape.workload))
                ref_name = f"stress_ref_{stamp}"
                ref_cfg = config_for(svc, shape, ref_name, topic, work)
                started = time.monotonic()
                ref_done = wait_all(start_workers(ref_cfg, 1, False, work / "logs", ref_name))
                ref_s = time.monotonic() - started
                ref_problems = check(svc, shape, ref_name, produced, ref_done, None)
                reference = asyncio.run(table_rows(svc.dsn, ref_name, shape.group_by.split(",")))
                name = f"stress_n{args.workers}_{stamp}"
                cfg = config_for(svc, shape, name, topic, work)
                started = time.monotonic()
                done = wait_all(start_workers(cfg, args.workers, args.faust, work / "logs", name))
                seconds = time.monotonic() - started
                problems = ref_problems + check(svc, shape, name, produced, done, reference)
                runs += 1
                verdict = "exact" if not problems else "WRONG"
                print(
                    f"run {runs}: {shape_name} seed {s}, {produced:,} records, "
                    f"{len(reference):,} rows: 1 worker {ref_s:.1f}s, {args.workers} {kind} "
                    f"workers {seconds:.1f}s: {verdict}",
                    flush=True,
                )
                for p in problems:
                    print(f"  {p}", flush=True)
                if problems:
                    failures += 1
                    print(f"  logs: {work / 'logs'}/{name}-*.log", flush=True)
    print(f"{runs} run(s), {runs - failures} exact, {failures} wrong", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())

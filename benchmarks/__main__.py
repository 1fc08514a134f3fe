"""Run the benchmarks: `python -m benchmarks [PART ...] [--quick] [--runs N]`.

Parts: engine (in-process engine benchmark, bench_engine.py), pipeline (floor vs
`streamproc run` as whole processes on the dense and sparse workloads), latency
(continuous trigger, produce-to-PostgreSQL latency), scaleout (1, 2, 4 workers).
No part given: all of them. The parts that need a broker and PostgreSQL share one
(STREAMPROC_KAFKA_BOOTSTRAP / STREAMPROC_PG_DSN, else the embedded stack, started
and stopped here). These are benchmarks: they print and record numbers, they
never fail on a speed; they do fail (exit 1) when a result was wrong. At the end,
the issue's targets (benchmarks/targets.py) of the parts that ran: each with the
median measured and met / NOT met.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from benchmarks import bench_engine, bench_pipeline, latency, scaleout, targets
from benchmarks.services import services

PARTS = ("engine", "pipeline", "latency", "scaleout")


def main(argv: list[str] | None = None) -> int:
    """Parse arguments and run the chosen parts in turn; 1 if a result was INVALID."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("parts", nargs="*", metavar="PART", help=f"any of {', '.join(PARTS)}")
    parser.add_argument(
        "--quick", action="store_true", help="100K records per workload, 15 s of latency"
    )
    parser.add_argument("--runs", type=int, default=3, help="runs per measurement (median)")
    parser.add_argument(
        "--workloads",
        nargs="+",
        choices=("dense", "sparse"),
        default=None,
        help="pipeline part: only these workloads",
    )
    args = parser.parse_args(argv)
    unknown = set(args.parts) - set(PARTS)
    if unknown:
        parser.error(f"unknown part(s) {', '.join(sorted(unknown))}; choose from {PARTS}")
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    parts = args.parts or list(PARTS)
    by_part: dict[str, dict[str, Any]] = {}  # each part's output: its cases, each `valid`
    if "engine" in parts:
        bench_engine.main(quick=args.quick)
    needs_services = [p for p in parts if p != "engine"]
    if needs_services:
        with services() as svc:
            print(f"broker {svc.bootstrap}, database {svc.dsn}", flush=True)
            if "pipeline" in parts:
                by_part["pipeline"] = bench_pipeline.main(
                    svc, quick=args.quick, runs=args.runs, only=args.workloads
                )
            if "latency" in parts:
                by_part["latency"] = latency.main(svc, quick=args.quick, runs=args.runs)
            if "scaleout" in parts:
                by_part["scaleout"] = scaleout.main(svc, quick=args.quick, runs=args.runs)
    table = targets.summary(by_part)
    if table:
        quick = " (--quick: short runs, start-up weighs more)" if args.quick else ""
        print(f"\ntargets, medians of this run{quick}\n{table}", flush=True)
    invalid = [c for out in by_part.values() for c in out["cases"] if not c["valid"]]
    if invalid:
        print(f"\n{len(invalid)} INVALID result(s): see the WARNING lines above", flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

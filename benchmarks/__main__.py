"""Run the benchmarks: `python -m benchmarks [PART ...] [--quick] [--runs N]`.

Parts: engine (in-process engine benchmark, bench_engine.py), pipeline (floor vs
`streamproc run` as whole processes on the dense and sparse workloads), latency
(continuous trigger, produce-to-PostgreSQL latency), scaleout (1, 2, 4 workers).
No part given: all of them. The parts that need a broker and PostgreSQL share one
(STREAMPROC_KAFKA_BOOTSTRAP / STREAMPROC_PG_DSN, else the embedded stack, started
and stopped here). These are benchmarks: they print and record numbers, they
never fail on a speed; they do fail (exit 1) when a result was wrong.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from benchmarks import bench_engine, bench_pipeline, latency, scaleout
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
    results: list[dict[str, Any]] = []
    if "engine" in parts:
        bench_engine.main(quick=args.quick)
    needs_services = [p for p in parts if p != "engine"]
    if needs_services:
        with services() as svc:
            print(f"broker {svc.bootstrap}, database {svc.dsn}", flush=True)
            if "pipeline" in parts:
                out = bench_pipeline.main(
                    svc, quick=args.quick, runs=args.runs, only=args.workloads
                )
                results.extend(out["cases"])
            if "latency" in parts:
                results.extend(latency.main(svc, quick=args.quick, runs=args.runs)["cases"])
            if "scaleout" in parts:
                results.extend(scaleout.main(svc, quick=args.quick, runs=args.runs)["cases"])
    invalid = [r for r in results if not r["valid"]]
    if invalid:
        print(f"\n{len(invalid)} INVALID result(s): see the WARNING lines above", flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

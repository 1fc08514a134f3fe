"""Run every benchmark: `python -m benchmarks [--quick]`."""

from __future__ import annotations

import argparse

from benchmarks import bench_engine, bench_pipeline


def main() -> None:
    """Parse arguments and run the benchmarks in turn."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer records and runs")
    parser.add_argument(
        "which", nargs="*", default=["engine", "pipeline"], help="engine and/or pipeline"
    )
    args = parser.parse_args()
    if "engine" in args.which:
        bench_engine.main(quick=args.quick)
    if "pipeline" in args.which:
        bench_pipeline.main(quick=args.quick)


if __name__ == "__main__":
    main()

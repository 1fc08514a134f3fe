"""Run every benchmark: `python -m benchmarks [--quick]`."""

from __future__ import annotations

import argparse

from benchmarks import bench_engine


def main() -> None:
    """Parse arguments and run the benchmarks in turn."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer records and runs")
    args = parser.parse_args()
    bench_engine.main(quick=args.quick)


if __name__ == "__main__":
    main()

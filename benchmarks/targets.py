"""The issue's targets, checked against what a benchmark run measured.

Pure: `evaluate` takes the results dicts the parts return (keyed by part name,
only the parts that ran) and gives one `Outcome` per target; `summary` makes
the lines printed at the end of `python -m benchmarks`. The targets live here and
nowhere else, so a changed target is one edit, and the unit tests
(tests/unit/test_bench_targets.py) check the verdicts without a broker.

A target is judged on the median the part reports, compared unrounded (the
printed value is rounded). It is n/a when its figure is missing (a part not run,
a worker that did not print its lock share, PostgreSQL's CPU of an external
database) or when the measurement it comes from is INVALID: a speed measured on
a wrong result says nothing. Targets are never a failure of the run: only an
INVALID result makes `python -m benchmarks` exit 1.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from benchmarks import report

LOCK_SHARE_MAX = 0.10  # with 1, 2 and 4 workers, each scale-out workload
SPEED_UP_2_MIN = 1.0  # 2 workers' rate over 1 worker's, each scale-out workload
CPU_RATIO_4_MAX = 1.2  # total CPU per record, 4 workers over 1 worker
LATENCY_P99_MS_BELOW = 50.0  # continuous trigger, 5K records/s, each latency case
PIPELINE_RATIO_MIN = {"sparse": 0.33, "dense": 0.6}  # streamproc rec/s over the floor's
# Peak RSS of the streamproc process, on the cases the ratio targets name (the
# sliding variant keeps 6 windows per record and is not held to it). MiB, as every
# RSS figure the benchmarks print.
RSS_MIB_BELOW = 300.0


@dataclass(frozen=True)
class Outcome:
    """One target and what this run measured for it."""

    target: str
    measured: float | None
    spec: str  # how `measured` is printed (a format spec)
    met: bool | None  # None: n/a (figure missing or from an INVALID result)
    invalid: bool = False

    def line(self) -> list[str]:
        """The cells of this target's row: target, measured, verdict."""
        if self.invalid:
            verdict = "n/a (INVALID result)"
        elif self.met is None:
            verdict = "n/a"
        else:
            verdict = "met" if self.met else "NOT met"
        return [self.target, report.fmt(self.measured, self.spec), verdict]


def _judge(
    target: str,
    measured: float | None,
    spec: str,
    compare: Callable[[float, float], bool],
    bound: float,
    valid: bool = True,
) -> Outcome:
    if not valid:
        return Outcome(target, measured, spec, None, invalid=True)
    met = None if measured is None else compare(measured, bound)
    return Outcome(target, measured, spec, met)


def _scaleout(cases: Sequence[Mapping[str, Any]]) -> list[Outcome]:
    out = []
    workloads = list(dict.fromkeys(c["workload_name"] for c in cases))
    by = {(c["workload_name"], c["workers"]): c for c in cases}
    for w in workloads:
        for k in (1, 2, 4):
            c = by.get((w, k))
            if c is not None:
                out.append(
                    _judge(
                        f"scale-out {w}, {k} worker(s): lock share <= {LOCK_SHARE_MAX:.2f}",
                        c.get("median_lock_share"),
                        ".3f",
                        operator.le,
                        LOCK_SHARE_MAX,
                        c["valid"],
                    )
                )
    for w in workloads:
        one, two = by.get((w, 1)), by.get((w, 2))
        if one is not None and two is not None:
            out.append(
                _judge(
                    f"scale-out {w}: 2 workers >= {SPEED_UP_2_MIN:.1f}x the rate of 1",
                    two.get("speed_up"),
                    ".2f",
                    operator.ge,
                    SPEED_UP_2_MIN,
                    one["valid"] and two["valid"],
                )
            )
    for w in workloads:
        one, four = by.get((w, 1)), by.get((w, 4))
        if one is not None and four is not None:
            out.append(
                _judge(
                    f"scale-out {w}: CPU per record, 4 workers <= {CPU_RATIO_4_MAX:.1f}x 1 worker",
                    four.get("total_cpu_ratio"),
                    ".2f",
                    operator.le,
                    CPU_RATIO_4_MAX,
                    one["valid"] and four["valid"],
                )
            )
    return out


def _latency(cases: Sequence[Mapping[str, Any]]) -> list[Outcome]:
    return [
        _judge(
            f"{c['case']}: p99 < {LATENCY_P99_MS_BELOW:.0f} ms produce to row (ms)",
            c.get("median_p99_ms"),
            ",.0f",
            operator.lt,
            LATENCY_P99_MS_BELOW,
            c["valid"],
        )
        for c in cases
    ]


def _pipeline(cases: Sequence[Mapping[str, Any]]) -> list[Outcome]:
    out = []
    by = {c["case"]: c for c in cases}
    for name, bound in PIPELINE_RATIO_MIN.items():
        c = by.get(name)
        if c is not None:
            out.append(
                _judge(
                    f"pipeline {name}: ratio to the floor >= {bound}",
                    c.get("ratio"),
                    ".3f",
                    operator.ge,
                    bound,
                    c["valid"],
                )
            )
    for name in PIPELINE_RATIO_MIN:
        c = by.get(name)
        if c is not None:
            out.append(
                _judge(
                    f"pipeline {name}: streamproc peak RSS < {RSS_MIB_BELOW:.0f} MiB",
                    c["streamproc"].get("median_max_rss_mib"),
                    ".0f",
                    operator.lt,
                    RSS_MIB_BELOW,
                    c["valid"],
                )
            )
    return out


def evaluate(results: Mapping[str, Mapping[str, Any]]) -> list[Outcome]:
    """Every target whose part ran, in the order scale-out, latency, pipeline.

    `results` maps a part name ("pipeline", "latency", "scaleout") to what that
    part's `main` returned (a dict with its "cases").
    """
    out: list[Outcome] = []
    if "scaleout" in results:
        out += _scaleout(results["scaleout"]["cases"])
    if "latency" in results:
        out += _latency(results["latency"]["cases"])
    if "pipeline" in results:
        out += _pipeline(results["pipeline"]["cases"])
    return out


def summary(results: Mapping[str, Mapping[str, Any]]) -> str:
    """The targets table (target, measured median, met / NOT met); "" when none applies."""
    outcomes = evaluate(results)
    if not outcomes:
        return ""
    return report.table(["target", "measured", "verdict"], [o.line() for o in outcomes])

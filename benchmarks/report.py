"""Summaries and the human tables: medians, phase shares, the results JSON files.

Every number in a table is a median over the runs of one harness run; the ratio
is streamproc's median records/s over the floor's median records/s of the same
harness run. A case with any invalid run (wrong exit code, ledger count differing
from the records produced, floor count differing) is shown as INVALID.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"


def median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def summarize_runs(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Medians of a list of per-run dicts (records_per_s, seconds, max_rss_mib, phases, lock)."""
    out: dict[str, Any] = {
        "runs": list(runs),
        "valid": all(r["valid"] for r in runs),
        "median_records_per_s": median([r["records_per_s"] for r in runs]),
        "median_seconds": median([r["seconds"] for r in runs]),
        "median_max_rss_mib": median([r["max_rss_mib"] for r in runs]),
    }
    with_phases = [r for r in runs if r.get("phases")]
    if with_phases:
        names = sorted({k for r in with_phases for k in r["phases"]})
        out["median_phases_s"] = {
            k: median([r["phases"][k] for r in with_phases if k in r["phases"]]) for k in names
        }
        out["median_phase_shares"] = {
            k: median([r["phases"][k] / r["seconds"] for r in with_phases if k in r["phases"]])
            for k in names
        }
    locks = [r["lock_share"] for r in runs if r.get("lock_share") is not None]
    if locks:
        out["median_lock_share"] = median(locks)
    trips = [r["round_trips"] for r in runs if r.get("round_trips") is not None]
    out["median_round_trips"] = median(trips)
    for key in ("result_bytes_per_row", "state_bytes_per_row"):
        sizes = [r[key] for r in runs if r.get(key) is not None]
        out[f"median_{key}"] = median(sizes)
    return out


def machine() -> dict[str, Any]:
    """The machine a run was made on."""
    model = "unknown"
    mem_kib = 0
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    except OSError:
        pass
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "memory_gib": round(mem_kib / 1024 / 1024, 1),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
    }


def write_json(name: str, data: dict[str, Any]) -> Path:
    """Write benchmarks/results/<name>.json."""
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"machine": machine(), **data}, indent=2) + "\n")
    return path


def fmt(x: float | None, spec: str = ",.0f") -> str:
    """A figure formatted with `spec`, or n/a when it is missing."""
    return "n/a" if x is None else format(x, spec)


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain text table, first column left-aligned, the others right-aligned."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    return "\n".join([line(headers), line(["-" * w for w in widths]), *map(line, rows)])


def phase_line(summary: dict[str, Any]) -> str:
    """``fetch 1.23s (12%), ...`` from median phases, or n/a."""
    phases = summary.get("median_phases_s")
    if not phases:
        return "n/a"
    shares = summary["median_phase_shares"]
    return ", ".join(f"{k} {v:.2f}s ({shares[k]:.0%})" for k, v in phases.items())


def lock_line(share: float | None) -> str:
    """``0.42 (scale-out bound 2.4x)`` or n/a."""
    if share is None:
        return "n/a"
    bound = f"{1 / share:.1f}x" if share > 0 else "unbounded"
    return f"{share:.2f} (scale-out bound {bound})"


def pipeline_table(cases: Sequence[dict[str, Any]]) -> str:
    """The throughput table of the pipeline cases, then phases and lock share per case."""
    headers = [
        "case",
        "records",
        "floor rec/s",
        "streamproc rec/s",
        "ratio",
        "floor s",
        "streamproc s",
        "floor RSS MiB",
        "streamproc RSS MiB",
        "valid",
    ]
    rows = []
    notes = []
    for c in cases:
        f, s = c["floor"], c["streamproc"]
        rows.append(
            [
                c["case"],
                f"{c['records']:,}",
                fmt(f["median_records_per_s"]),
                fmt(s["median_records_per_s"]),
                fmt(c["ratio"], ".3f"),
                fmt(f["median_seconds"], ".1f"),
                fmt(s["median_seconds"], ".1f"),
                fmt(f["median_max_rss_mib"], ".0f"),
                fmt(s["median_max_rss_mib"], ".0f"),
                "ok" if c["valid"] else "INVALID",
            ]
        )
        notes.append(f"  {c['case']}: phases {phase_line(s)}")
        notes.append(
            f"  {c['case']}: lock share {lock_line(s.get('median_lock_share'))}; round trips "
            f"per commit {fmt(s.get('median_round_trips'), '.2f')}; bytes per result row "
            f"{fmt(s.get('median_result_bytes_per_row'), '.0f')} (table and indexes), per "
            f"state row {fmt(s.get('median_state_bytes_per_row'), '.0f')}"
        )
    return table(headers, rows) + "\n" + "\n".join(notes)


def scaleout_table(cases: Sequence[dict[str, Any]]) -> str:
    """One workload's 1, 2, 4 workers: rate, CPU per record, lock share, round trips."""
    headers = [
        "workers",
        "records",
        "seconds",
        "rec/s",
        "speed-up",
        "worker CPU µs/rec",
        "PG CPU µs/rec",
        "total CPU µs/rec",
        "CPU vs 1",
        "lock share",
        "round trips",
        "max RSS MiB",
        "valid",
    ]
    rows = []
    notes = []
    for c in cases:
        rows.append(
            [
                str(c["workers"]),
                f"{c['records']:,}",
                fmt(c["median_seconds"], ".1f"),
                fmt(c["median_records_per_s"]),
                fmt(c["speed_up"], ".2f"),
                fmt(c["median_worker_cpu_us_per_record"], ".1f"),
                fmt(c["median_postgres_cpu_us_per_record"], ".1f"),
                fmt(c["median_total_cpu_us_per_record"], ".1f"),
                fmt(c["total_cpu_ratio"], ".2f"),
                fmt(c["median_lock_share"], ".2f"),
                fmt(c["median_round_trips"], ".2f"),
                fmt(c["median_max_rss_mib"], ".0f"),
                "ok" if c["valid"] else "INVALID",
            ]
        )
        per_run = c.get("lock_shares_per_run") or []
        if any(s is not None for run in per_run for s in run):
            text = "; ".join(
                "run " + ", ".join("n/a" if s is None else f"{s:.2f}" for s in run)
                for run in per_run
            )
            text += f"; median {lock_line(c.get('median_lock_share'))}"
        else:
            text = "n/a"
        notes.append(f"  {c['workers']} worker(s): lock share per worker: {text}")
    return table(headers, rows) + "\n" + "\n".join(notes)

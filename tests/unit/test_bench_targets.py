"""The benchmarks' targets summary, the round-trips parser and PostgreSQL CPU from /proc.

Pure: synthetic results dicts and a fake /proc; no speed is measured or asserted.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from benchmarks import pgcpu, targets
from benchmarks.processes import parse_round_trips

# ----------------------------------------------------------------------------- round trips


def test_round_trips_line_is_parsed() -> None:
    out = (
        "phases: fetch=1.0s\n"
        "  lock share: 0.42 (locks ...)\n"
        "  round trips per commit: 1.00 (PostgreSQL; 57 commits)\n"
    )
    assert parse_round_trips(out) == 1.0
    assert parse_round_trips("round trips per commit: 12.5\n") == 12.5


def test_round_trips_last_line_wins_and_absent_is_none() -> None:
    assert (
        parse_round_trips("round trips per commit: 3.00\nround trips per commit: 2.50 (x)") == 2.5
    )
    assert parse_round_trips("query q: 1 record(s)\n") is None
    assert parse_round_trips("round trips per commit: .\n") is None


# ----------------------------------------------------------------------------- targets


def _scale(workload: str, workers: int, **figures: Any) -> dict[str, Any]:
    return {"workload_name": workload, "workers": workers, "valid": True, **figures}


def _verdicts(results: dict[str, Any]) -> dict[str, tuple[float | None, bool | None]]:
    return {o.target: (o.measured, o.met) for o in targets.evaluate(results)}


def test_scaleout_targets_per_workload() -> None:
    cases = [
        _scale("sparse", 1, median_lock_share=0.10, speed_up=1.0, total_cpu_ratio=1.0),
        _scale("sparse", 2, median_lock_share=0.11, speed_up=1.0, total_cpu_ratio=1.1),
        _scale("sparse", 4, median_lock_share=None, speed_up=0.5, total_cpu_ratio=1.2),
        _scale("dense", 1, median_lock_share=0.0, speed_up=1.0, total_cpu_ratio=1.0),
        _scale("dense", 2, median_lock_share=0.05, speed_up=0.99, total_cpu_ratio=1.0),
        _scale("dense", 4, median_lock_share=0.05, speed_up=2.0, total_cpu_ratio=1.21),
    ]
    v = _verdicts({"scaleout": {"cases": cases}})
    assert v["scale-out sparse, 1 worker(s): lock share <= 0.10"] == (0.10, True)  # bound met
    assert v["scale-out sparse, 2 worker(s): lock share <= 0.10"] == (0.11, False)
    assert v["scale-out sparse, 4 worker(s): lock share <= 0.10"] == (None, None)  # not printed
    assert v["scale-out sparse: 2 workers >= 1.0x the rate of 1"] == (1.0, True)
    assert v["scale-out dense: 2 workers >= 1.0x the rate of 1"] == (0.99, False)
    assert v["scale-out sparse: CPU per record, 4 workers <= 1.2x 1 worker"] == (1.2, True)
    assert v["scale-out dense: CPU per record, 4 workers <= 1.2x 1 worker"] == (1.21, False)
    assert len(v) == 2 * (3 + 1 + 1)


def test_latency_targets_are_strictly_below_50_ms() -> None:
    cases = [
        {"case": "latency", "median_p99_ms": 49.0, "valid": True},
        {"case": "latency/windowed", "median_p99_ms": 50.0, "valid": True},
    ]
    v = _verdicts({"latency": {"cases": cases}})
    assert v == {
        "latency: p99 < 50 ms produce to row (ms)": (49.0, True),
        "latency/windowed: p99 < 50 ms produce to row (ms)": (50.0, False),
    }


def test_pipeline_targets_ratio_and_rss() -> None:
    def case(name: str, ratio: float, rss: float) -> dict[str, Any]:
        return {
            "case": name,
            "ratio": ratio,
            "streamproc": {"median_max_rss_mib": rss},
            "valid": True,
        }

    cases = [
        case("dense", 0.6, 299.9),
        case("sparse", 0.329, 300.0),
        case("sparse/sliding", 0.05, 480.0),  # held to no target
    ]
    v = _verdicts({"pipeline": {"cases": cases}})
    assert v == {
        "pipeline sparse: ratio to the floor >= 0.33": (0.329, False),
        "pipeline dense: ratio to the floor >= 0.6": (0.6, True),
        "pipeline sparse: streamproc peak RSS < 300 MiB": (300.0, False),
        "pipeline dense: streamproc peak RSS < 300 MiB": (299.9, True),
    }


def test_only_parts_that_ran_and_invalid_is_na() -> None:
    assert targets.evaluate({}) == []
    assert targets.summary({}) == ""
    bad = {"case": "latency", "median_p99_ms": 10.0, "valid": False}
    (outcome,) = targets.evaluate({"latency": {"cases": [bad]}})
    assert outcome.met is None and outcome.invalid
    assert outcome.line() == [
        "latency: p99 < 50 ms produce to row (ms)",
        "10",
        "n/a (INVALID result)",
    ]
    text = targets.summary({"latency": {"cases": [bad]}})
    assert text.splitlines()[0].split() == ["target", "measured", "verdict"]


# ----------------------------------------------------------------------------- /proc


def _stat(pid: int, ppid: int, utime: int, stime: int, cutime: int = 0, cstime: int = 0) -> str:
    # proc(5): pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt
    # cmajflt utime stime cutime cstime ...; a comm with a space and a ')' in it.
    return (
        f"{pid} (postgres: a) b) S {ppid} 1 1 0 -1 4194304 10 0 0 0 "
        f"{utime} {stime} {cutime} {cstime} 20 0 1 0 100 1000 10\n"
    )


def _proc(root: Path, stats: dict[int, str]) -> Path:
    for pid, text in stats.items():
        (root / str(pid)).mkdir(parents=True, exist_ok=True)
        (root / str(pid) / "stat").write_text(text)
    (root / "self").mkdir(exist_ok=True)  # not a pid: skipped
    return root


def test_parse_stat_counts_fields_after_the_command_name() -> None:
    s = pgcpu.parse_stat(_stat(42, 7, 11, 12, 13, 14))
    assert s == pgcpu.ProcStat(pid=42, ppid=7, utime=11, stime=12, cutime=13, cstime=14)


def test_server_ticks_sums_postmaster_reaped_and_live_children(tmp_path: Path) -> None:
    proc = _proc(
        tmp_path,
        {
            100: _stat(100, 1, 5, 3, cutime=20, cstime=10),  # the postmaster
            101: _stat(101, 100, 7, 2),  # a backend
            102: _stat(102, 100, 1, 1),  # walwriter
            200: _stat(200, 1, 1000, 1000),  # not PostgreSQL
            201: _stat(201, 101, 500, 500),  # a grandchild: not a direct child, left out
        },
    )
    assert pgcpu.server_ticks(100, proc) == 5 + 3 + 20 + 10 + 7 + 2 + 1 + 1
    assert pgcpu.server_ticks(999, proc) is None
    assert pgcpu.server_seconds(None, proc) is None


def test_a_backend_that_ended_moves_into_cutime(tmp_path: Path) -> None:
    proc = _proc(tmp_path, {100: _stat(100, 1, 5, 3), 101: _stat(101, 100, 7, 2)})
    before = pgcpu.server_ticks(100, proc)
    # The backend used 4 more ticks, then ended and was reaped by the postmaster.
    (proc / "101" / "stat").unlink()
    (proc / "101").rmdir()
    (proc / "100" / "stat").write_text(_stat(100, 1, 5, 3, cutime=10, cstime=3))  # 7+2, +4
    after = pgcpu.server_ticks(100, proc)
    assert before is not None and after is not None
    assert after - before == 4


def test_a_walk_during_which_a_child_is_reaped_is_repeated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    proc = _proc(tmp_path, {100: _stat(100, 1, 0, 0), 101: _stat(101, 100, 7, 2)})
    walks = []
    real = pgcpu._children_ticks

    def walk(parent: int, root: Path) -> int:
        ticks = real(parent, root)
        walks.append(ticks)
        if len(walks) == 1:  # counted 101, then it ended and the postmaster reaped it
            (root / "101" / "stat").unlink()
            (root / "101").rmdir()
            (root / "100" / "stat").write_text(_stat(100, 1, 0, 0, cutime=7, cstime=2))
        return ticks

    monkeypatch.setattr(pgcpu, "_children_ticks", walk)
    assert pgcpu.server_ticks(100, proc) == 9  # not 18: 101 counted once
    assert walks == [9, 0]

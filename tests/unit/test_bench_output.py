"""The benchmark harness reads what `streamproc run` prints; no speed is asserted here."""

from __future__ import annotations

import pytest

from benchmarks.processes import parse_lock_share, parse_phases
from benchmarks.report import lock_line, phase_line, summarize_runs

SUMMARY = (
    "query q: 100 record(s) read in 1 batch(es), 1.0s (100 records/s)\n"
    "phases: fetch=1.234s decode=0.456s engine=2.345s checkpoint=3.456s sink=1.234s "
    "commit=0.123s lock=2.000s\n"
    "lock share: 0.42\n"
)


def test_phases_line_is_parsed_whatever_the_keys() -> None:
    assert parse_phases(SUMMARY) == {
        "fetch": 1.234,
        "decode": 0.456,
        "engine": 2.345,
        "checkpoint": 3.456,
        "sink": 1.234,
        "commit": 0.123,
        "lock": 2.0,
    }
    assert parse_phases("phases: other_phase=5s x.y=1e-3s\n") == {"other_phase": 5.0, "x.y": 0.001}


def test_absent_lines_are_none() -> None:
    assert parse_phases("query q: 1 record(s)\n") is None
    assert parse_lock_share("query q: 1 record(s)\n") is None
    assert phase_line({}) == "n/a"
    assert lock_line(None) == "n/a"


def test_lock_share_and_its_scale_out_bound() -> None:
    assert parse_lock_share(SUMMARY) == 0.42
    assert lock_line(0.5) == "0.50 (scale-out bound 2.0x)"


def test_phase_shares_are_of_the_whole_run() -> None:
    runs = [
        {
            "valid": True,
            "seconds": 10.0,
            "records_per_s": 1.0,
            "max_rss_mib": 1.0,
            "phases": {"fetch": 1.0, "sink": 5.0},
            "lock_share": 0.2,
        },
        {
            "valid": True,
            "seconds": 20.0,
            "records_per_s": 1.0,
            "max_rss_mib": 1.0,
            "phases": {"fetch": 4.0, "sink": 5.0},
            "lock_share": 0.4,
        },
    ]
    summary = summarize_runs(runs)
    assert summary["median_phases_s"] == {"fetch": 2.5, "sink": 5.0}
    assert summary["median_phase_shares"] == pytest.approx({"fetch": 0.15, "sink": 0.375})
    assert summary["median_lock_share"] == pytest.approx(0.3)
    assert phase_line(summary) == "fetch 2.50s (15%), sink 5.00s (38%)"

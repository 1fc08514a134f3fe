"""Session windows in the config (issue 22, phase 1): `gapDuration` with `windowColumn`.

The key parses and validates; with `windowDuration`/`slideDuration` it is one error
line naming both; changing the gap is a definition change. Batch mode runs them
(`validate` accepts a batch config with a gap); until the streaming runtime commits
sessions, planning a streaming run with them stops with one line (through `preflight`
and `streamproc validate`), never a traceback.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from streamproc import cli
from streamproc.batch.plan import BatchPlan
from streamproc.commands.preflight import preflight
from streamproc.config import validate_config
from streamproc.engine import SessionSpec
from streamproc.sinks.definition import definition_changes, query_definition
from tests.unit.test_config_broken import DELETE, mutate
from tests.unit.test_definition import SPEC

P = "transforms[0].parameters"
S = "streamingConfigJson"
#: BASE (test_config_broken.py) with sessions of a 30 second gap instead of windows.
SESSIONS = {
    ("transforms", 0, "parameters", "windowDuration"): DELETE,
    ("transforms", 0, "parameters", "gapDuration"): "30 seconds",
}
REFUSED = (
    "session windows (30 seconds gap) are not yet supported by the {kind} runtime (they "
    "run in batch mode: mode batch); use windowDuration for tumbling or sliding windows"
)


def test_a_gap_parses_to_milliseconds_and_makes_a_windowed_aggregation() -> None:
    report = validate_config(mutate(SESSIONS), env={})
    assert report.errors == [] and report.config is not None
    agg = report.config.aggregation
    assert agg is not None
    assert agg.gap_duration_ms == 30_000 and agg.window_size_ms is None
    assert agg.sessions and agg.windowed
    assert agg.output_columns == ("user_id", "window_start", "window_end", "amount_sum", "count")


@pytest.mark.parametrize(
    ("changes", "errors"),
    [
        pytest.param(
            {("transforms", 0, "parameters", "gapDuration"): "30 seconds"},
            [
                f"{P}.gapDuration: gapDuration (session windows) and windowDuration (fixed "
                "windows) are mutually exclusive; give one"
            ],
            id="gap-and-window",
        ),
        pytest.param(
            {**SESSIONS, ("transforms", 0, "parameters", "slideDuration"): "1 minute"},
            [
                f"{P}.gapDuration: gapDuration (session windows) and slideDuration (fixed "
                "windows) are mutually exclusive; give one"
            ],
            id="gap-and-slide",
        ),
        pytest.param(
            {**SESSIONS, ("transforms", 0, "parameters", "windowColumn"): DELETE},
            [f"{P}.windowColumn: required when gapDuration is set"],
            id="gap-without-column",
        ),
        pytest.param(
            {**SESSIONS, ("transforms", 0, "parameters", "gapDuration"): "0 seconds"},
            [f"{P}.gapDuration: '0 seconds' is not positive; expected a duration greater than 0"],
            id="gap-not-positive",
        ),
        pytest.param(
            {
                **SESSIONS,
                (S, "outputMode"): "update",
                ("transforms", 0, "parameters", "stateTimeout"): "1 hour",
            },
            [
                f"{P}.stateTimeout: does not apply to session windows (the gap ends a "
                "session); remove it"
            ],
            id="gap-and-state-timeout",
        ),
    ],
)
def test_broken_session_config_reports_exactly_one_line(
    changes: dict[tuple[Any, ...], Any], errors: list[str]
) -> None:
    report = validate_config(mutate(changes), env={})
    assert report.errors == errors
    assert report.config is None


def test_streaming_plan_of_sessions_stops_with_one_line() -> None:
    checked = preflight(mutate(SESSIONS), env={})
    assert checked.plan is None
    assert checked.errors == [f"{P}.gapDuration: " + REFUSED.format(kind="streaming")]


def test_batch_plan_of_sessions_runs_them() -> None:
    config = mutate({**SESSIONS, ("mode",): "batch", (S,): DELETE})
    checked = preflight(config, env={})
    assert checked.errors == []
    assert isinstance(checked.plan, BatchPlan) and checked.plan.spec is not None
    assert checked.plan.spec.session == SessionSpec(30_000)


def test_cli_validate_accepts_a_batch_session_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ORDERS_PG_PASSWORD", raising=False)
    path = tmp_path / "sessions.json"
    path.write_text(json.dumps(mutate({**SESSIONS, ("mode",): "batch", (S,): DELETE})))
    assert cli.main(["validate", str(path)]) == 0
    assert capsys.readouterr().err == ""


def test_cli_validate_prints_the_refusal_on_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ORDERS_PG_PASSWORD", raising=False)
    path = tmp_path / "sessions.json"
    path.write_text(json.dumps(mutate(SESSIONS)))
    assert cli.main(["validate", str(path)]) == 1
    err = capsys.readouterr().err
    assert err.splitlines() == [f"{path}: {P}.gapDuration: " + REFUSED.format(kind="streaming")]
    assert "Traceback" not in err


def test_a_gap_is_part_of_the_definition() -> None:
    sessions = replace(SPEC, window=None, session=SessionSpec(30_000))
    fixed = query_definition(SPEC, topic="t", sink={"table": "x"})
    thirty = query_definition(sessions, topic="t", sink={"table": "x"})
    longer = replace(sessions, session=SessionSpec(60_000))
    minute = query_definition(longer, topic="t", sink={"table": "x"})
    assert definition_changes(thirty, minute) == [
        "window changed from {gap 30 seconds} to {gap 1 minute}"
    ]
    assert definition_changes(fixed, thirty) == [
        "window changed from {duration 10 minutes, slide 10 minutes} to {gap 30 seconds}"
    ]
    assert definition_changes(thirty, dict(thirty)) == []

"""The `streamproc` command line: --version, `local --help`, a config file that is missing."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from streamproc import __version__
from streamproc.cli import main


def test_version_prints_the_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out == f"streamproc {__version__}\n"


def test_local_help_prints_the_local_commands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["local", "--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: streamproc local ")
    for command in ("up", "down", "status"):
        assert command in out


@pytest.mark.parametrize("path", ["missing.json", "./missing.json", "nodir/../missing.json"])
def test_run_on_a_missing_file_names_it_once(
    path: str,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["run", path]) == 1
    err = capsys.readouterr().err
    assert err == f"{path}: cannot read the file: No such file or directory\n"


def _help(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as done:
        main([*argv, "--help"])
    out = capsys.readouterr().out
    assert done.value.code == 0, (argv, out)
    return out


def test_every_command_and_group_has_help_listing_its_exit_status(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Walked as a user would: each group's usage line names its commands ({a,b,c}).
    seen: list[str] = []
    todo: list[list[str]] = [[]]
    while todo:
        argv = todo.pop(0)
        out = _help(argv, capsys)
        seen.append(" ".join(argv))
        assert out.startswith(f"usage: {' '.join(['streamproc', *argv])} "), out
        text = " ".join(out.split())  # argparse wraps the epilog anywhere
        assert re.search(r"exit status: .*\b0 ", text), (argv, out)
        assert "2 a usage error" in text or "2 is also a usage error" in text, (argv, out)
        usage = out.split("\n\n")[0]
        if "{" in usage:
            commands = usage[usage.index("{") + 1 : usage.index("}")].split(",")
            todo += [[*argv, command] for command in commands]
    groups = ["", "local"]
    commands = ["validate", "schema", "run", "reset", "status", "local up", "local down"]
    assert sorted(seen) == sorted([*groups, *commands, "local status"])


@pytest.mark.parametrize(
    ("argv", "command", "complaint"),
    [
        (["reset", "--force", "q"], "reset", "unrecognized arguments: --force"),
        (["status", "--jsn", "c.json"], "status", "unrecognized arguments: --jsn"),
        (["validate", "--strict", "c.json"], "validate", "unrecognized arguments: --strict"),
        (["run", "--max-seconds", "-1", "c.json"], "run", "argument --max-seconds: '-1'"),
        (["run", "--max-seconds", "0", "c.json"], "run", "argument --max-seconds: '0'"),
        (["status", "--batches", "0", "c.json"], "status", "argument --batches: '0'"),
        (["status", "--batches", "-3", "c.json"], "status", "argument --batches: '-3'"),
    ],
)
def test_a_bad_option_prints_the_commands_own_usage(
    argv: list[str], command: str, complaint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # An unknown flag printed the top-level usage ({validate,schema,run,...}), which
    # says nothing of the command's options; negative counts and durations were taken.
    with pytest.raises(SystemExit) as done:
        main(argv)
    assert done.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"usage: streamproc {command} "), err
    assert f"streamproc {command}: error: {complaint}" in err


def test_reset_reads_a_config_as_run_does(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    Path("notjson.json").write_text("{not json")
    assert main(["reset", "--yes", "notjson.json"]) == 1
    # It said "notjson.json: notjson.json: not valid JSON ...".
    assert capsys.readouterr().err == (
        "notjson.json: not valid JSON: Expecting property name enclosed in double quotes "
        "at line 1, column 2\n"
    )
    config = {
        "pipelineId": "p",
        "extract": {"sourceType": "file", "path": "data"},
        "load": {
            "sinkType": "postgresql",
            "table": "t",
            "connectionParams": {"url": "postgresql://u@127.0.0.1:1/db", "truncate": True},
        },
        "errorHandlingConfig": {"dlqConfig": {"dlqType": "postgresql"}},
    }
    Path("job.json").write_text(json.dumps(config))
    assert main(["run", "job.json"]) == 1
    run_warnings = [x for x in capsys.readouterr().err.splitlines() if ": warning: " in x]
    assert run_warnings
    assert main(["reset", "--yes", "job.json"]) == 1
    err = capsys.readouterr().err.splitlines()
    # The same warnings as run, with its `PATH: warning:` prefix (reset printed them bare).
    assert err[: len(run_warnings)] == run_warnings
    assert err[-1].startswith("streamproc: reset of query p failed: cannot connect to ")

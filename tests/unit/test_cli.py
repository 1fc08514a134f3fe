"""The `streamproc` command line: --version, `local --help`, a config file that is missing."""

from __future__ import annotations

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

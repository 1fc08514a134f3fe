"""pyproject.toml: what the wheel installs, its license and its one version."""

from __future__ import annotations

import importlib.metadata
import tomllib
from pathlib import Path
from typing import Any

from setuptools import find_namespace_packages, find_packages

import streamproc

ROOT = Path(__file__).resolve().parents[2]


def pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def wheel_packages() -> list[str]:
    """The packages setuptools puts in the wheel, found as `[tool.setuptools.packages.find]` says.

    (With `namespaces` unset setuptools looks for namespace packages too, so
    the include patterns alone decide.)
    """
    find = pyproject()["tool"]["setuptools"]["packages"]["find"]
    finder = find_namespace_packages if find.get("namespaces", True) else find_packages
    (where,) = find.get("where", ["."])
    return sorted(
        finder(
            where=str(ROOT / where),
            include=find.get("include", ("*",)),
            exclude=find.get("exclude", ()),
        )
    )


def test_the_wheel_installs_streamproc_and_no_agents_package() -> None:
    packages = wheel_packages()
    assert "streamproc" in packages
    assert "streamproc.runtime" in packages
    assert "agents" not in packages
    # Nothing else at the top level either (tests, benchmarks, configs).
    assert {name.split(".")[0] for name in packages} == {"streamproc"}
    # Every directory of streamproc with modules is a package of the wheel.
    module_dirs = {
        ".".join(path.parent.relative_to(ROOT).parts)
        for path in (ROOT / "streamproc").rglob("*.py")
        if "__pycache__" not in path.parts
    }
    assert module_dirs <= set(packages)


def test_the_agents_app_stays_at_the_top_of_the_repository() -> None:
    # `faust -A agents.app` imports it from the working directory.
    assert (ROOT / "agents" / "app.py").is_file()


def test_the_license_is_an_spdx_expression_with_its_file() -> None:
    project = pyproject()["project"]
    assert project["license"] == "Apache-2.0"
    assert project["license-files"] == ["LICENSE"]
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    # An SPDX expression and a License classifier together are refused by setuptools.
    assert not [c for c in project["classifiers"] if c.startswith("License ::")]


def test_the_version_has_one_source() -> None:
    document = pyproject()
    assert "version" not in document["project"]
    assert "version" in document["project"]["dynamic"]
    dynamic = document["tool"]["setuptools"]["dynamic"]["version"]
    assert dynamic == {"attr": "streamproc.__version__"}
    # The installed metadata (what pip shows) is that version too.
    assert importlib.metadata.version("streamproc") == streamproc.__version__

"""``${NAME}`` / ``${NAME:-default}`` in config strings."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from streamproc.config import load_config, validate_config
from streamproc.config.interpolation import InterpolationError, expand, interpolate
from streamproc.config.messages import Problem

CONFIG: dict[str, Any] = {
    "pipelineId": "batch-copy",
    "extract": {
        "sourceType": "file",
        "path": "${DATA_DIR:-/var/data}/in",
    },
    "load": {
        "sinkType": "postgresql",
        "table": "copied",
        "connectionParams": {
            "host": "${PG_HOST:-localhost}",
            "port": "${PG_PORT:-5432}",
            "database": "analytics",
            "user": "${PG_USER}",
            "password": "${PG_PASSWORD}",
        },
    },
}


@pytest.mark.parametrize(
    ("text", "env", "result"),
    [
        ("${A}", {"A": "x"}, "x"),
        ("${A:-d}", {}, "d"),
        ("${A:-d}", {"A": "x"}, "x"),
        ("${A:-d}", {"A": ""}, "d"),  # as in the shell: empty counts as unset for ':-'
        ("${A}", {"A": ""}, ""),
        ("${A:-}", {}, ""),
        ("${H}:${P}", {"H": "db", "P": "5432"}, "db:5432"),
        ("pre-${A}-post", {"A": "x"}, "pre-x-post"),
        ("${A:-host:9092}", {}, "host:9092"),
        ("$HOME and $ alone", {}, "$HOME and $ alone"),
        ("no references", {}, "no references"),
        ("${A}", {"A": "${B}"}, "${B}"),  # a value is not expanded again
    ],
)
def test_expand(text: str, env: dict[str, str], result: str) -> None:
    assert expand(text, env) == result


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "${PG_PASSWORD}",
            "environment variable 'PG_PASSWORD' is not set (and no ${PG_PASSWORD:-default} given)",
        ),
        ("a${X}b${Y}", "environment variable 'X' is not set (and no ${X:-default} given)"),
        (
            "${A",
            "'${A' holds a malformed reference; expected ${NAME} or ${NAME:-default} "
            "with NAME of letters, digits and '_'",
        ),
        (
            "${1A}",
            "'${1A}' holds a malformed reference; expected ${NAME} or ${NAME:-default} "
            "with NAME of letters, digits and '_'",
        ),
        (
            "${A:default}",
            "'${A:default}' holds a malformed reference; expected ${NAME} or "
            "${NAME:-default} with NAME of letters, digits and '_'",
        ),
    ],
)
def test_expand_errors(text: str, message: str) -> None:
    with pytest.raises(InterpolationError) as raised:
        expand(text, {})
    assert str(raised.value) == message


def test_interpolate_walks_every_string_and_names_paths() -> None:
    document = {"a": [{"b": "${X}"}, "${Y:-y}"], "n": 5, "t": True, "${K}": "v"}
    value, problems = interpolate(document, {})
    assert value == {"a": [{"b": "${X}"}, "y"], "n": 5, "t": True, "${K}": "v"}
    assert problems == [
        Problem("a[0].b", "environment variable 'X' is not set (and no ${X:-default} given)")
    ]


def test_interpolate_leaves_its_input_alone() -> None:
    original = copy.deepcopy(CONFIG)
    interpolate(CONFIG, {"PG_USER": "u", "PG_PASSWORD": "p"})
    assert original == CONFIG


def test_values_from_env_are_validated_and_typed() -> None:
    env = {"PG_USER": "etl", "PG_PASSWORD": "p@ss:w/rd", "PG_PORT": "6543"}
    cfg = load_config(CONFIG, env=env)
    params = cfg.load.connection_params
    assert params.port == 6543
    assert cfg.extract.path == "/var/data/in"
    assert cfg.load.dsn() == "postgresql://etl:p%40ss%3Aw%2Frd@localhost:6543/analytics"


def test_every_unset_variable_is_reported() -> None:
    report = validate_config(CONFIG, env={})
    assert report.errors == [
        "load.connectionParams.user: environment variable 'PG_USER' is not set "
        "(and no ${PG_USER:-default} given)",
        "load.connectionParams.password: environment variable 'PG_PASSWORD' is not set "
        "(and no ${PG_PASSWORD:-default} given)",
    ]


def test_a_bad_value_from_env_is_reported_at_its_path() -> None:
    env = {"PG_USER": "etl", "PG_PASSWORD": "p", "PG_PORT": "not-a-port"}
    assert validate_config(CONFIG, env=env).errors == [
        "load.connectionParams.port: 'not-a-port' is not a whole number; expected an integer "
        "from 1 to 65535 (a number or a string holding one)"
    ]


def test_env_defaults_to_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PG_USER", "from-os")
    monkeypatch.setenv("PG_PASSWORD", "secret")
    cfg = load_config(CONFIG)
    assert cfg.load.connection_params.user == "from-os"

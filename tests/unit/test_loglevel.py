"""loggingConfig.logLevel applied inside a host that configured logging (the Faust worker)."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from streamproc.runtime.loglevel import STREAMPROC_LOGGERS, apply_log_level, level_number


@pytest.fixture
def host_root() -> Iterator[logging.Logger]:
    """A root logger as Faust leaves it after `-l info`, and the loggers' levels restored."""
    saved = {name: logging.getLogger(name).level for name in STREAMPROC_LOGGERS}
    root = logging.Logger("host-root", logging.INFO)
    root.addHandler(logging.NullHandler(logging.INFO))
    yield root
    for name, level in saved.items():
        logging.getLogger(name).setLevel(level)


@pytest.mark.parametrize(
    ("level", "number", "handler"),
    [
        ("DEBUG", logging.DEBUG, logging.DEBUG),  # the handler must let debug lines through
        ("INFO", logging.INFO, logging.INFO),
        ("WARN", logging.WARNING, logging.INFO),  # the host's INFO lines still pass
        ("ERROR", logging.ERROR, logging.INFO),
    ],
)
def test_streamproc_loggers_take_the_level_and_the_handlers_pass_it(
    host_root: logging.Logger, level: str, number: int, handler: int
) -> None:
    assert apply_log_level(level, host_root) == number
    assert logging.getLogger("streamproc.progress").getEffectiveLevel() == number
    assert logging.getLogger("agents.app").getEffectiveLevel() == number
    assert [h.level for h in host_root.handlers] == [handler]


def test_an_unknown_level_name_is_info() -> None:
    assert level_number("LOUD") == logging.INFO
    assert level_number("warn") == logging.WARNING

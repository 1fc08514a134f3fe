"""`loggingConfig.logLevel` for streamproc's own loggers in a process whose host set up logging.

`streamproc run` configures logging itself (`commands.run.configure_logging`). Under
the Faust worker, Faust has already configured it from its `-l` option: its
root handlers pass only records at that level or above. `apply_log_level`
sets streamproc's loggers to the config's level and lowers the root handlers
just enough to pass them, so DEBUG shows streamproc's debug lines and WARN
hides its progress lines, while the host's own loggers keep the `-l` level
(their effective level is still the root logger's).
"""

from __future__ import annotations

import logging

#: The loggers whose level `loggingConfig.logLevel` sets (and their children).
STREAMPROC_LOGGERS = ("streamproc", "agents")


def level_number(level: str) -> int:
    """``"WARN"`` -> 30; an unknown name is INFO (the config allows only known ones)."""
    number = logging.getLevelName(level.upper())
    return number if isinstance(number, int) else logging.INFO


def apply_log_level(level: str, root: logging.Logger | None = None) -> int:
    """Set streamproc's loggers to `level`; let the root handlers pass it. Returns the number."""
    number = level_number(level)
    for name in STREAMPROC_LOGGERS:
        logging.getLogger(name).setLevel(number)
    for handler in (root or logging.getLogger()).handlers:
        if handler.level > number:
            handler.setLevel(number)
    return number

"""How `streamproc run` writes its log: key=value lines on a terminal, JSON lines otherwise.

    kv    2026-12-02T10:00:00.123Z INFO streamproc.query pipelineId=p query=q: assigned ...
    json  {"time": "2026-12-02T10:00:00.123Z", "level": "INFO", "logger": "streamproc.query",
           "pipelineId": "p", "query": "q", "msg": "assigned ..."}

A kv line keeps the message whole after the first ": " that follows the
fields, so whatever greps message texts finds them as before; a field value
with a space, a quote, '=' or ':' is written as a JSON string. A JSON line
is one object per line (a traceback goes in "exc"), for log shippers.
`STREAMPROC_LOG_FORMAT` (kv, json, auto) chooses; auto, the default, is kv
when stderr is a terminal.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Literal, TextIO

from streamproc.runtime.logcontext import RECORD_ATTRIBUTE, ContextFilter, current_context

LogFormat = Literal["kv", "json"]

#: The environment variable that chooses the format.
LOG_FORMAT_ENV = "STREAMPROC_LOG_FORMAT"

_BARE = re.compile(r"[^\s\"=:]+")


def choose_format(value: str | None, *, is_terminal: bool) -> LogFormat:
    """The format `STREAMPROC_LOG_FORMAT` asks for (auto: kv on a terminal, else json).

    Raises:
        ValueError: an unknown value (one line, naming what is accepted).
    """
    wanted = (value or "auto").strip().lower()
    if wanted == "auto":
        return "kv" if is_terminal else "json"
    if wanted in ("kv", "json"):
        return "kv" if wanted == "kv" else "json"
    raise ValueError(f"{LOG_FORMAT_ENV}: {value!r} is not a log format; use kv, json or auto")


def _timestamp(record: logging.LogRecord) -> str:
    moment = datetime.fromtimestamp(record.created, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _context(record: logging.LogRecord) -> Mapping[str, str | int]:
    found = getattr(record, RECORD_ATTRIBUTE, None)
    return found if isinstance(found, Mapping) else current_context()


def _kv_value(value: str | int) -> str:
    text = str(value)
    return text if _BARE.fullmatch(text) else json.dumps(text, ensure_ascii=False)


class KeyValueFormatter(logging.Formatter):
    """`time level logger key=value ...: message`, the message intact at the end."""

    def format(self, record: logging.LogRecord) -> str:
        """One line (and a traceback's lines after it, when there is one)."""
        fields = "".join(f" {k}={_kv_value(v)}" for k, v in _context(record).items())
        line = f"{_timestamp(record)} {record.levelname} {record.name}{fields}: "
        line += record.getMessage()
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        if record.stack_info:
            line += "\n" + self.formatStack(record.stack_info)
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, the context fields, msg (and exc)."""

    def format(self, record: logging.LogRecord) -> str:
        """One line."""
        document: dict[str, object] = {
            "time": _timestamp(record),
            "level": record.levelname,
            "logger": record.name,
            **_context(record),
            "msg": record.getMessage(),
        }
        if record.exc_info:
            document["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            document["stack"] = self.formatStack(record.stack_info)
        return json.dumps(document, ensure_ascii=False, default=str)


def log_handler(fmt: LogFormat, stream: TextIO) -> logging.Handler:
    """A stream handler writing `fmt` lines, with the log context attached."""
    handler = logging.StreamHandler(stream)
    handler.setFormatter(KeyValueFormatter() if fmt == "kv" else JsonFormatter())
    handler.addFilter(ContextFilter())
    return handler


def configure_logging(
    level: str = "INFO",
    fmt: LogFormat | None = None,
    stream: TextIO | None = None,
    *,
    quiet: Iterable[str] = (),
) -> None:
    """Log to stderr at `level`, in `fmt` (default: as STREAMPROC_LOG_FORMAT says).

    Args:
        quiet: Loggers held at WARNING whatever `level` is (a client library's).

    Raises:
        ValueError: STREAMPROC_LOG_FORMAT has an unknown value.
    """
    out = sys.stderr if stream is None else stream
    if fmt is None:
        fmt = choose_format(os.environ.get(LOG_FORMAT_ENV), is_terminal=out.isatty())
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO), handlers=[log_handler(fmt, out)]
    )
    for noisy in quiet:
        logging.getLogger(noisy).setLevel(logging.WARNING)


def restyle_host_handlers(root: logging.Logger | None = None) -> int:
    """Give a host's log handlers (the Faust worker's) our lines; returns how many.

    The host keeps its handlers, their levels and where they write; each
    stream handler gets our formatter (as STREAMPROC_LOG_FORMAT and its
    stream say: kv on a terminal, JSON lines otherwise) and the log context,
    so every line of the process, the host's own included, looks the same.

    Raises:
        ValueError: STREAMPROC_LOG_FORMAT has an unknown value.
    """
    restyled = 0
    for handler in (root or logging.getLogger()).handlers:
        if not isinstance(handler, logging.StreamHandler):
            continue  # Faust's terminal spinner, say: it draws, it does not write lines
        stream = handler.stream
        fmt = choose_format(os.environ.get(LOG_FORMAT_ENV), is_terminal=_is_terminal(stream))
        handler.setFormatter(KeyValueFormatter() if fmt == "kv" else JsonFormatter())
        if not any(isinstance(f, ContextFilter) for f in handler.filters):
            handler.addFilter(ContextFilter())
        restyled += 1
    return restyled


def _is_terminal(stream: object) -> bool:
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty()) if callable(isatty) else False
    except ValueError:  # a closed stream
        return False

"""Log lines of `streamproc run`: key=value or JSON, with pipeline, query, batch, partition."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import sys

import pytest

from streamproc.runtime.logcontext import ContextFilter, current_context, log_context
from streamproc.runtime.logformat import (
    JsonFormatter,
    KeyValueFormatter,
    choose_format,
    log_handler,
    restyle_host_handlers,
)
from streamproc.runtime.offload import Offload

CREATED = 1_764_151_200.123  # 2025-11-26T10:00:00.123Z


def record(message: str, *args: object, **context: str | int) -> logging.LogRecord:
    """A record as the ContextFilter leaves it, at a fixed time."""
    return logging.makeLogRecord(
        {
            "name": "streamproc.query",
            "levelno": logging.INFO,
            "levelname": "INFO",
            "msg": message,
            "args": args,
            "created": CREATED,
            "streamproc_context": context,
        }
    )


@pytest.mark.parametrize(
    ("context", "line"),
    [
        ({}, "2025-11-26T10:00:00.123Z INFO streamproc.query: assigned partitions [0, 1]"),
        (
            {"pipelineId": "p", "query": "q"},
            "2025-11-26T10:00:00.123Z INFO streamproc.query pipelineId=p query=q: "
            "assigned partitions [0, 1]",
        ),
        (
            {"pipelineId": "user events", "query": "q", "batchId": 7, "partition": 2},
            '2025-11-26T10:00:00.123Z INFO streamproc.query pipelineId="user events" query=q '
            "batchId=7 partition=2: assigned partitions [0, 1]",
        ),
        (
            {"pipelineId": 'a"b', "query": "x=y:z"},
            '2025-11-26T10:00:00.123Z INFO streamproc.query pipelineId="a\\"b" query="x=y:z": '
            "assigned partitions [0, 1]",
        ),
    ],
)
def test_key_value_lines(context: dict[str, str | int], line: str) -> None:
    assert KeyValueFormatter().format(record("assigned partitions %s", [0, 1], **context)) == line


def test_the_message_stays_whole_at_the_end_of_a_key_value_line() -> None:
    message = "progress pipeline=p query=q batch=3 rows=400 offsets=2:200-305"
    line = KeyValueFormatter().format(record("%s", message, pipelineId="p", query="q"))
    assert line.endswith(f"query=q: {message}")
    assert f" {message}" in line  # what greps for ' progress pipeline=' find


def test_json_lines() -> None:
    line = JsonFormatter().format(
        record("bad record: %s", 'a "quoted" reason', pipelineId="p", query="q", batchId=3)
    )
    assert "\n" not in line
    assert json.loads(line) == {
        "time": "2025-11-26T10:00:00.123Z",
        "level": "INFO",
        "logger": "streamproc.query",
        "pipelineId": "p",
        "query": "q",
        "batchId": 3,
        "msg": 'bad record: a "quoted" reason',
    }
    assert list(json.loads(line)) == ["time", "level", "logger", "pipelineId", "query",
                                      "batchId", "msg"]  # fmt: skip


def test_a_traceback_stays_in_its_json_line_and_follows_a_key_value_line() -> None:
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        failed = record("failed")
        failed.exc_info = sys.exc_info()
    document = json.loads(JsonFormatter().format(failed))
    assert document["msg"] == "failed" and document["exc"].endswith("RuntimeError: boom")
    kv = KeyValueFormatter().format(failed).splitlines()
    assert kv[0].endswith("streamproc.query: failed") and kv[-1] == "RuntimeError: boom"


@pytest.mark.parametrize(
    ("value", "terminal", "chosen"),
    [
        (None, True, "kv"),
        (None, False, "json"),
        ("auto", True, "kv"),
        ("", False, "json"),
        ("kv", False, "kv"),
        ("JSON", True, "json"),
    ],
)
def test_the_format_follows_the_variable_then_the_terminal(
    value: str | None, terminal: bool, chosen: str
) -> None:
    assert choose_format(value, is_terminal=terminal) == chosen


def test_an_unknown_format_is_one_line() -> None:
    with pytest.raises(ValueError) as caught:
        choose_format("yaml", is_terminal=True)
    assert str(caught.value) == (
        "STREAMPROC_LOG_FORMAT: 'yaml' is not a log format; use kv, json or auto"
    )


def test_context_nests_and_unwinds() -> None:
    assert current_context() == {}
    with log_context(pipeline_id="p", query="q"):
        with log_context(batch_id=4, partition=1):
            assert current_context() == {
                "pipelineId": "p",
                "query": "q",
                "batchId": 4,
                "partition": 1,
            }
        assert current_context() == {"pipelineId": "p", "query": "q"}
    assert current_context() == {}


def test_a_handler_stamps_the_context_of_the_line() -> None:
    out = io.StringIO()
    logger = logging.getLogger("streamproc.test_logformat")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.addHandler(log_handler("json", out))
    try:
        with log_context(pipeline_id="p", query="q"):
            logger.info("inside")
        logger.info("outside")
    finally:
        logger.handlers.clear()
        logger.propagate = True
    inside, outside = (json.loads(line) for line in out.getvalue().splitlines())
    assert (inside["pipelineId"], inside["query"], inside["msg"]) == ("p", "q", "inside")
    assert "pipelineId" not in outside and outside["msg"] == "outside"


async def test_tasks_and_the_batch_thread_carry_the_context() -> None:
    # A batch's delivery runs in a task, its preparation on the Offload thread.
    offload = Offload()
    try:
        with log_context(query="q", batch_id=9):
            on_thread = await offload.run(current_context)
            in_task = asyncio.ensure_future(_context_soon())
        assert on_thread == {"query": "q", "batchId": 9}
        assert await in_task == {"query": "q", "batchId": 9}
        assert current_context() == {}
    finally:
        offload.close()


async def _context_soon() -> dict[str, str | int]:
    await asyncio.sleep(0)
    return current_context()


def test_the_filter_keeps_a_context_already_attached() -> None:
    made = record("x", pipelineId="given")
    with log_context(pipeline_id="other"):
        assert ContextFilter().filter(made)
    assert made.streamproc_context == {"pipelineId": "given"}


def test_a_host_handlers_write_our_lines_with_their_levels_kept(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # As the Faust worker leaves the root logger: its own formatter on a stream
    # handler at -l's level, and a handler that writes no lines (its spinner).
    monkeypatch.delenv("STREAMPROC_LOG_FORMAT", raising=False)
    root = logging.Logger("host-root")
    out = io.StringIO()
    host = logging.StreamHandler(out)
    host.setFormatter(logging.Formatter("[%(asctime)s] [%(levelname)s] %(message)s"))
    host.setLevel(logging.WARNING)
    spinner = logging.NullHandler()
    root.addHandler(host)
    root.addHandler(spinner)
    assert restyle_host_handlers(root) == 1
    assert restyle_host_handlers(root) == 1  # again: still one context filter
    assert sum(isinstance(f, ContextFilter) for f in host.filters) == 1
    assert host.level == logging.WARNING and spinner.formatter is None
    with log_context(pipeline_id="p", query="q", batch_id=3):
        root.info("hidden: below the host's level")
        root.warning("shown")
    (line,) = out.getvalue().splitlines()  # a StringIO is no terminal: JSON
    document = json.loads(line)
    assert (document["pipelineId"], document["query"], document["batchId"]) == ("p", "q", 3)
    assert (document["level"], document["msg"]) == ("WARNING", "shown")
    monkeypatch.setenv("STREAMPROC_LOG_FORMAT", "kv")
    restyle_host_handlers(root)
    with log_context(pipeline_id="p", query="q"):
        root.warning("again")
    assert (
        out.getvalue().splitlines()[-1].endswith(" WARNING host-root pipelineId=p query=q: again")
    )
    monkeypatch.setenv("STREAMPROC_LOG_FORMAT", "yaml")
    with pytest.raises(ValueError, match="STREAMPROC_LOG_FORMAT: 'yaml' is not a log format"):
        restyle_host_handlers(root)

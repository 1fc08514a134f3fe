"""Who a log line is about: pipeline, query, batch and partition, carried by contextvars.

The runtime sets them where it knows them (a query's run, a batch's
preparation and delivery, a partition's restore); `ContextFilter` copies them
onto every record a handler sees, and the formatters of `logformat` print
them. They are for logging only: no code reads them to decide anything.

Context variables follow asyncio tasks (a task starts with a copy of its
creator's) and `Offload` hands them to its thread, so a batch's lines carry
its number wherever its work runs.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token

#: Field names, in the order lines print them (the progress record's names).
FIELDS = ("pipelineId", "query", "batchId", "partition")

_VARS: dict[str, ContextVar[str | int | None]] = {
    name: ContextVar(f"streamproc_log_{name}", default=None) for name in FIELDS
}

#: The LogRecord attribute `ContextFilter` sets.
RECORD_ATTRIBUTE = "streamproc_context"


@contextmanager
def log_context(
    *,
    pipeline_id: str | None = None,
    query: str | None = None,
    batch_id: int | None = None,
    partition: int | None = None,
) -> Iterator[None]:
    """Lines logged inside carry these fields (those given; the others stay as they were)."""
    given = {"pipelineId": pipeline_id, "query": query, "batchId": batch_id, "partition": partition}
    tokens: list[tuple[ContextVar[str | int | None], Token[str | int | None]]] = []
    for name, value in given.items():
        if value is not None:
            var = _VARS[name]
            tokens.append((var, var.set(value)))
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)


def current_context() -> dict[str, str | int]:
    """The fields set here and now, in `FIELDS` order."""
    out: dict[str, str | int] = {}
    for name in FIELDS:
        value = _VARS[name].get()
        if value is not None:
            out[name] = value
    return out


class ContextFilter(logging.Filter):
    """Copies the current log context onto each record (it passes every record)."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Attach the context, unless the record already carries one."""
        if not hasattr(record, RECORD_ATTRIBUTE):
            setattr(record, RECORD_ATTRIBUTE, current_context())
        return True

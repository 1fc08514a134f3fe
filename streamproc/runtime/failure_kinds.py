"""Which failures of a sink transaction or a dead-letter write mean what (FAULTS.md).

Three kinds, because each needs a different answer:

* ``UNAVAILABLE``: the sink (PostgreSQL, or the DLQ's Kafka) cannot be reached
  or cannot serve right now. Nothing is dropped: the circuit breaker counts it,
  the query waits and replays from the ledger once the sink answers again.
* ``REJECTED``: the sink answered and refused this batch's data (a value
  PostgreSQL cannot store, an index row too large, a record too large for the
  DLQ). Retrying the same data cannot help: with failFast the query stops,
  otherwise the offending records are isolated and dead-lettered.
* ``FATAL``: anything else (a missing table, a privilege, a bug). Neither
  waiting nor dead-lettering is right: the query stops with the error.

Classification knows only port-level errors (streamproc/port_errors.py: the
adapters raise their client libraries' errors as those) and the standard
library's (an OSError is an outage, a ValueError a refusal); it performs no I/O.
"""

from __future__ import annotations

from streamproc.port_errors import FailureKind, adapter_error, port_kind
from streamproc.runtime.resilience import CircuitOpenError
from streamproc.sinks.base import CheckpointError, ClosingWindowsError
from streamproc.sources.base import SourceConflictError, SourceTopicMissingError
from streamproc.state.base import LocalStateError

#: Failures whose message says it all: the query stops with that one line, no
#: traceback, no retry (a checkpoint that does not fit, a missing privilege or
#: topic, unusable local state).
STOP_ERRORS: tuple[type[Exception], ...] = (
    CheckpointError,
    LocalStateError,
    SourceTopicMissingError,
    SourceConflictError,
)


def classify_failure(exc: BaseException) -> FailureKind:
    """The kind of a failure raised by a sink transaction or a dead-letter write."""
    if isinstance(exc, STOP_ERRORS):
        return FailureKind.FATAL
    if isinstance(exc, ClosingWindowsError):
        return classify_failure(exc.cause)
    if isinstance(exc, CircuitOpenError | OSError):
        # OSError covers ConnectionRefusedError, ConnectionResetError,
        # TimeoutError (asyncio's too) and DNS failures.
        return FailureKind.UNAVAILABLE
    kind = port_kind(exc)
    if kind is not None:
        # An adapter's outage, refusal or fatal error, or a SQLSTATE's class.
        return kind
    if isinstance(exc, ValueError | ArithmeticError):
        # Client-side conversion of a value before it reaches the server: a
        # string PostgreSQL cannot encode (UnicodeEncodeError), a non-finite
        # float in JSON, a datetime out of Python's range.
        return FailureKind.REJECTED
    return FailureKind.FATAL


def first_line(exc: BaseException, limit: int = 300) -> str:
    """A one-line, printable description of an exception (for logs, headers, the ledger)."""
    exc = adapter_error(exc)  # a port-level error says what its adapter said
    text = str(exc).splitlines()[0] if str(exc).strip() else type(exc).__name__
    # Error texts can quote the offending value: keep them storable as text.
    text = text.replace("\x00", "\\x00").encode("utf-8", "backslashreplace").decode("utf-8")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def is_outage(exc: BaseException) -> bool:
    """True when a failure means the sink cannot be reached right now."""
    return classify_failure(exc) is FailureKind.UNAVAILABLE


class SinkOutage(Exception):
    """The sink could not be reached; the batch is replayed once it answers again."""

    def __init__(self, cause: Exception) -> None:
        super().__init__(first_line(cause))
        self.cause = cause


class QueryFailedError(RuntimeError):
    """The query stopped: a failure that neither waiting nor dead-lettering can answer."""

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

Classification reads SQLSTATE classes (``exc.sqlstate``, as asyncpg sets it)
and exception types; it performs no I/O.
"""

from __future__ import annotations

from enum import Enum

from aiokafka.errors import KafkaError, MessageSizeTooLargeError, RecordTooLargeError
from asyncpg.exceptions import InterfaceError

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


class FailureKind(Enum):
    """What a failed sink or DLQ call means for the batch (see the module docstring)."""

    UNAVAILABLE = "unavailable"
    REJECTED = "rejected"
    FATAL = "fatal"


# SQLSTATE classes: 08 connection exception, 40 transaction rollback
# (serialization failure, deadlock), 53 insufficient resources (too many
# connections, disk full), 57 operator intervention (admin/crash shutdown,
# "the database system is starting up", statement canceled), 58 system error
# (I/O error). All of them pass without any change to the data.
_UNAVAILABLE_CLASSES = frozenset({"08", "40", "53", "57", "58"})
# 22 data exception (out of range, invalid text such as NUL, bad encoding),
# 23 integrity constraint violation, 54 program limit exceeded (index row too
# large): the same rows fail the same way on every attempt.
_REJECTED_CLASSES = frozenset({"22", "23", "54"})


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
    sqlstate = getattr(exc, "sqlstate", None)
    if isinstance(sqlstate, str) and len(sqlstate) == 5:
        if sqlstate[:2] in _UNAVAILABLE_CLASSES:
            return FailureKind.UNAVAILABLE
        if sqlstate[:2] in _REJECTED_CLASSES:
            return FailureKind.REJECTED
        return FailureKind.FATAL
    if isinstance(exc, InterfaceError):
        # asyncpg's client-side errors: a connection the server closed under
        # us is an outage; the rest (misuse, configuration) are not.
        return FailureKind.UNAVAILABLE if "connection is closed" in str(exc) else FailureKind.FATAL
    if isinstance(exc, KafkaError):
        if isinstance(exc, MessageSizeTooLargeError | RecordTooLargeError):
            return FailureKind.REJECTED
        # Timeouts, unknown leaders, not-enough-replicas, authorization: the
        # broker side has to change, and no record may be dropped meanwhile.
        return FailureKind.UNAVAILABLE
    if isinstance(exc, ValueError | ArithmeticError):
        # Client-side conversion of a value before it reaches the server: a
        # string PostgreSQL cannot encode (UnicodeEncodeError), a non-finite
        # float in JSON, a datetime out of Python's range.
        return FailureKind.REJECTED
    return FailureKind.FATAL


def first_line(exc: BaseException, limit: int = 300) -> str:
    """A one-line, printable description of an exception (for logs, headers, the ledger)."""
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

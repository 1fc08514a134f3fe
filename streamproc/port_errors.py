"""What an adapter's failure means, in the ports' terms: the one error vocabulary.

An adapter (the Kafka source, the PostgreSQL checkpoint, the Kafka producer)
raises its client library's errors as one of three port-level errors, so that
what runs above the ports (the loop's failure policy, the batch job) decides
what to do knowing these only, never a client library:

* `PortUnavailable`: an outage: the server cannot be reached or cannot serve
  right now (`PortUnreachable`: a connection could not be made at all).
  Waiting and trying again can help; nothing may be dropped meanwhile.
* `PortRefused`: the server answered and refused this data, for a reason
  (`reason`): the same data fails the same way on every attempt.
* `PortFatal`: anything else the client reports (a misuse, a configuration).

Each keeps the adapter's own error as `cause` (and as ``__cause__``) and its
message, so logs and messages read as before. A SQL server's errors may also
reach the ports as they are when they carry a SQLSTATE (``sqlstate``, five
characters): the standard's classes are the port's reasons (`sqlstate_kind`).
This module is at the bottom of the layers: sources and sinks both import it.
"""

from __future__ import annotations

from enum import Enum
from typing import ClassVar


class FailureKind(Enum):
    """What a failed call to a port means for the batch."""

    UNAVAILABLE = "unavailable"
    REJECTED = "rejected"
    FATAL = "fatal"


class PortError(Exception):
    """A failure of an adapter, in the ports' terms; `cause` is the adapter's own error."""

    kind: ClassVar[FailureKind] = FailureKind.FATAL

    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


class PortUnavailable(PortError):
    """An outage: the server cannot be reached or cannot serve right now."""

    kind = FailureKind.UNAVAILABLE


class PortUnreachable(PortUnavailable):
    """An outage at its plainest: a connection to the server could not be made."""


class PortRefused(PortError):
    """The server refused this data; `reason` says why (the same data fails again)."""

    kind = FailureKind.REJECTED

    @property
    def reason(self) -> str:
        """The refusal as the server put it."""
        return str(self)


class PortFatal(PortError):
    """A failure neither waiting nor setting data aside can answer."""

    kind = FailureKind.FATAL


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


def sqlstate_kind(exc: BaseException) -> FailureKind | None:
    """The kind of an error that carries a SQLSTATE; None when it carries none."""
    sqlstate = getattr(exc, "sqlstate", None)
    if not (isinstance(sqlstate, str) and len(sqlstate) == 5):
        return None
    if sqlstate[:2] in _UNAVAILABLE_CLASSES:
        return FailureKind.UNAVAILABLE
    if sqlstate[:2] in _REJECTED_CLASSES:
        return FailureKind.REJECTED
    return FailureKind.FATAL


def port_kind(exc: BaseException) -> FailureKind | None:
    """The kind of a port-level error (or a SQLSTATE); None for any other error."""
    if isinstance(exc, PortError):
        return exc.kind
    return sqlstate_kind(exc)


def adapter_error(exc: BaseException) -> BaseException:
    """The adapter's own error behind a port-level one (for messages); others as they are."""
    return exc.cause if isinstance(exc, PortError) else exc

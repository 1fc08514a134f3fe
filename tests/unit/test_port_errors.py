"""The ports' error vocabulary: what the runtime reads of an adapter's failure.

The adapters raise their client libraries' errors as these (the Kafka source
and producer, the PostgreSQL checkpoint: tests/component/test_adapter_errors.py);
here only the vocabulary itself and how the runtime classifies it.
"""

from __future__ import annotations

import pytest

from streamproc.port_errors import (
    FailureKind,
    PortError,
    PortFatal,
    PortRefused,
    PortUnavailable,
    PortUnreachable,
    adapter_error,
    port_kind,
    sqlstate_kind,
)
from streamproc.runtime.failure_kinds import classify_failure, first_line, is_outage
from streamproc.sinks.base import ClosingWindowsError


class ClientError(Exception):
    """Stands in for a client library's own error."""


class SqlStateError(Exception):
    def __init__(self, sqlstate: str) -> None:
        super().__init__(f"error {sqlstate}")
        self.sqlstate = sqlstate


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (PortUnavailable(ClientError("timed out")), FailureKind.UNAVAILABLE),
        (PortUnreachable(ClientError("Unable to bootstrap")), FailureKind.UNAVAILABLE),
        (PortRefused(ClientError("message too large")), FailureKind.REJECTED),
        (PortFatal(ClientError("misuse")), FailureKind.FATAL),
        (ClosingWindowsError(PortUnavailable(ClientError("closed")), 3), FailureKind.UNAVAILABLE),
        (ClosingWindowsError(PortRefused(ClientError("too large")), 3), FailureKind.REJECTED),
        # A client library's error the adapter did not raise as a port-level one.
        (ClientError("unknown"), FailureKind.FATAL),
    ],
    ids=lambda v: v.name if isinstance(v, FailureKind) else type(v).__name__,
)
def test_the_runtime_classifies_port_errors_by_their_kind(
    exc: Exception, kind: FailureKind
) -> None:
    assert classify_failure(exc) is kind
    assert is_outage(exc) is (kind is FailureKind.UNAVAILABLE)


def test_a_port_error_reads_as_its_adapters_error() -> None:
    cause = ClientError("KafkaConnectionError: Unable to bootstrap from [('127.0.0.1', 1)]\nmore")
    exc = PortUnreachable(cause)
    assert isinstance(exc, PortUnavailable)
    assert exc.cause is cause
    assert adapter_error(exc) is cause
    assert first_line(exc) == first_line(cause)
    # Without a message, the adapter's own type names it, not the port-level one.
    assert first_line(PortUnavailable(ClientError())) == "ClientError"
    assert PortRefused(ClientError("too large")).reason == "too large"
    plain = ClientError("x")
    assert adapter_error(plain) is plain


@pytest.mark.parametrize(
    ("sqlstate", "kind"),
    [
        ("08006", FailureKind.UNAVAILABLE),
        ("40P01", FailureKind.UNAVAILABLE),
        ("57P01", FailureKind.UNAVAILABLE),
        ("22021", FailureKind.REJECTED),
        ("23505", FailureKind.REJECTED),
        ("54000", FailureKind.REJECTED),
        ("42P01", FailureKind.FATAL),
    ],
)
def test_a_sqlstate_is_a_ports_reason(sqlstate: str, kind: FailureKind) -> None:
    assert sqlstate_kind(SqlStateError(sqlstate)) is kind
    assert port_kind(SqlStateError(sqlstate)) is kind


def test_errors_outside_the_vocabulary_have_no_port_kind() -> None:
    assert port_kind(ClientError("x")) is None
    assert port_kind(SqlStateError("0800")) is None  # not five characters
    assert issubclass(PortUnavailable, PortError)

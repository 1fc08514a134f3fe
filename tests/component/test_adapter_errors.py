"""The adapters raise their client libraries' errors as port-level errors.

The runtime knows no client library (streamproc/port_errors.py): what it did
when it read aiokafka's and asyncpg's errors itself, it now does by the kind
the adapter gives them, and these are the same kinds as before.
"""

from __future__ import annotations

import asyncio

import pytest
from aiokafka.errors import (
    IllegalStateError,
    KafkaConnectionError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    RecordTooLargeError,
)
from asyncpg.exceptions import ClientConfigurationError, InterfaceError

from streamproc.port_errors import (
    FailureKind,
    PortError,
    PortFatal,
    PortRefused,
    PortUnavailable,
    PortUnreachable,
)
from streamproc.runtime.failure_kinds import classify_failure
from streamproc.sinks.kafka import producer_port_errors
from streamproc.sinks.postgres_errors import port_error, raises_port_errors
from streamproc.sources.kafka_errors import consumer_port_errors


def _producer_raises(exc: Exception) -> BaseException:
    async def send() -> None:
        async with producer_port_errors():
            raise exc

    with pytest.raises(PortError) as caught:
        asyncio.run(send())
    return caught.value


@pytest.mark.parametrize(
    ("exc", "port", "kind"),
    [
        (KafkaConnectionError("no broker"), PortUnreachable, FailureKind.UNAVAILABLE),
        (KafkaTimeoutError(), PortUnavailable, FailureKind.UNAVAILABLE),
        (MessageSizeTooLargeError(), PortRefused, FailureKind.REJECTED),
        (RecordTooLargeError(), PortRefused, FailureKind.REJECTED),
    ],
    ids=lambda v: getattr(v, "__name__", None) or type(v).__name__,
)
def test_the_producer_raises_port_errors(
    exc: Exception, port: type[PortError], kind: FailureKind
) -> None:
    raised = _producer_raises(exc)
    assert type(raised) is port
    assert raised.__cause__ is exc
    assert classify_failure(raised) is kind


@pytest.mark.parametrize(
    ("exc", "port"),
    [
        (KafkaConnectionError("no broker"), PortUnreachable),
        (KafkaTimeoutError(), PortUnavailable),
        (IllegalStateError("No current assignment for partition"), PortUnavailable),
    ],
    ids=lambda v: getattr(v, "__name__", None) or type(v).__name__,
)
def test_the_consumer_raises_port_errors(exc: Exception, port: type[PortError]) -> None:
    with pytest.raises(PortError) as caught, consumer_port_errors():
        raise exc
    assert type(caught.value) is port
    assert classify_failure(caught.value) is FailureKind.UNAVAILABLE


@pytest.mark.parametrize(
    ("exc", "port", "kind"),
    [
        (
            InterfaceError("cannot perform operation: connection is closed"),
            PortUnavailable,
            FailureKind.UNAVAILABLE,
        ),
        (InterfaceError("cannot call Connection.fetch(): misuse"), PortFatal, FailureKind.FATAL),
        # A client-side error that is also a ValueError: still no refusal of the data.
        (ClientConfigurationError("bad option"), PortFatal, FailureKind.FATAL),
    ],
    ids=lambda v: getattr(v, "__name__", None) or type(v).__name__,
)
def test_the_checkpoint_raises_port_errors(
    exc: Exception, port: type[PortError], kind: FailureKind
) -> None:
    assert type(port_error(exc)) is port
    assert classify_failure(port_error(exc)) is kind

    @raises_port_errors
    async def method() -> None:
        raise exc

    with pytest.raises(PortError) as caught:
        asyncio.run(method())
    assert type(caught.value) is port
    assert caught.value.__cause__ is exc


def test_errors_with_a_sqlstate_pass_as_they_are() -> None:
    class Deadlock(Exception):
        sqlstate = "40P01"

    exc = Deadlock()
    assert port_error(exc) is exc
    assert classify_failure(exc) is FailureKind.UNAVAILABLE

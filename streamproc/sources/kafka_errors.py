"""The Kafka consumer's errors as port-level errors (streamproc/port_errors.py).

Every Kafka error of a consumer is an outage (timeouts, unknown leaders, a
partition no longer assigned, authorization): the broker side has to change,
and no record may be skipped meanwhile. A connection that could not be made at
all is said as such (`PortUnreachable`): at start it is one line, not a
traceback. `KafkaSource` raises its errors through `consumer_port_errors`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from aiokafka.errors import KafkaConnectionError, KafkaError

from streamproc.port_errors import PortUnavailable, PortUnreachable

#: The Kafka client's loggers: held at WARNING by `streamproc run` (chatty at INFO).
CLIENT_LOGGERS = ("aiokafka", "kafka")


@contextmanager
def consumer_port_errors() -> Iterator[None]:
    """Raise the consumer's errors met inside as port-level errors."""
    try:
        yield
    except KafkaConnectionError as exc:
        raise PortUnreachable(exc) from exc
    except KafkaError as exc:
        raise PortUnavailable(exc) from exc

"""Kafka producer side: dead-letter topics and the Kafka result sink.

Dead-letter writes are at-least-once: they are flushed before the batch's
Postgres transaction commits, and carry the source topic, partition and
offset in headers so a reader can drop the duplicates a replay may add.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import (
    KafkaConnectionError,
    KafkaError,
    MessageSizeTooLargeError,
    RecordTooLargeError,
)

from streamproc.engine import ResultRow
from streamproc.port_errors import PortRefused, PortUnavailable, PortUnreachable
from streamproc.sinks.base import OutgoingMessage
from streamproc.sinks.rows import ms_to_datetime


@asynccontextmanager
async def producer_port_errors() -> AsyncIterator[None]:
    """Raise the producer's errors met inside as port-level errors (streamproc/port_errors.py).

    A record too large for the broker is refused (the same record fails again);
    any other Kafka error (timeouts, unknown leaders, not-enough-replicas,
    authorization) is an outage: the broker side has to change, and no record
    may be dropped meanwhile.
    """
    try:
        yield
    except KafkaConnectionError as exc:
        raise PortUnreachable(exc) from exc
    except (MessageSizeTooLargeError, RecordTooLargeError) as exc:
        raise PortRefused(exc) from exc
    except KafkaError as exc:
        raise PortUnavailable(exc) from exc


class KafkaProducerSink:
    """A plain (non-idempotent, non-transactional) producer for DLQs and results.

    A `MessageWriter`.
    """

    def __init__(self, bootstrap: str, client_params: Mapping[str, Any] | None = None) -> None:
        self._bootstrap = bootstrap
        self._params = dict(client_params or {})
        self._producer: Any = None

    async def start(self) -> None:
        """Connect the producer."""
        # No idempotence and no transactions: the local broker has neither,
        # and exactly-once comes from the Postgres ledger instead.
        self._producer = AIOKafkaProducer(
            bootstrap_servers=self._bootstrap,
            acks="all",
            enable_idempotence=False,
            linger_ms=5,
            **self._params,
        )
        async with producer_port_errors():
            await self._producer.start()

    async def stop(self) -> None:
        """Flush and close."""
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    async def send_all(self, messages: Sequence[OutgoingMessage]) -> None:
        """Produce every message and wait until the broker acknowledged all of them."""
        if not messages:
            return
        async with producer_port_errors():
            futures = [
                await self._producer.send(m.topic, m.value, key=m.key, headers=list(m.headers))
                for m in messages
            ]
            for future in futures:
                await future


def result_message(
    topic: str, group_by: Sequence[str], outputs: Sequence[str], row: ResultRow
) -> OutgoingMessage:
    """A result row as a JSON message keyed by group key and window."""
    body: dict[str, Any] = dict(zip(group_by, row.key, strict=True))
    key: dict[str, Any] = dict(body)
    if row.window_start_ms is not None:
        start = ms_to_datetime(row.window_start_ms)
        end = ms_to_datetime(row.window_end_ms)
        body["window_start"] = start.isoformat() if start else None
        body["window_end"] = end.isoformat() if end else None
        key["window_start"] = body["window_start"]
    body.update(zip(outputs, row.values, strict=True))
    return OutgoingMessage(
        topic,
        json.dumps(key, separators=(",", ":"), sort_keys=True).encode(),
        json.dumps(body, separators=(",", ":")).encode(),
    )


def record_message(topic: str, source_topic: str, row: ResultRow) -> OutgoingMessage:
    """A pass-through query's row: its record as JSON, with where it came from in headers.

    The headers are those of a dead letter (source topic, partition, offset),
    so a reader can drop the copies a replay may add (at-least-once).
    """
    partition, offset = row.key
    return OutgoingMessage(
        topic,
        None,
        json.dumps(row.values[0], separators=(",", ":"), allow_nan=False).encode(),
        (
            ("source_topic", source_topic.encode()),
            ("source_partition", str(partition).encode()),
            ("source_offset", str(offset).encode()),
        ),
    )


class KafkaResultSink:
    """Result rows as keyed JSON messages on a topic (a `ResultSink`).

    `write` returns once the broker acknowledged every message; the
    checkpoint's transaction commits after that, so a crash in between
    replays the batch and its messages: result messages are at-least-once,
    and in update mode the newest message of a (key, window) is its row.
    """

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        group_by: Sequence[str],
        outputs: Sequence[str],
        client_params: Mapping[str, Any] | None = None,
        *,
        passthrough_from: str | None = None,
    ) -> None:
        """Args:
        passthrough_from: the source topic of a pass-through query, whose rows
            are records (`record_message`); None for an aggregation.
        """
        self._producer = KafkaProducerSink(bootstrap, client_params)
        self._topic = topic
        self._group_by = tuple(group_by)
        self._outputs = tuple(outputs)
        self._passthrough_from = passthrough_from

    async def start(self) -> None:
        """Connect the producer."""
        await self._producer.start()

    async def stop(self) -> None:
        """Flush and close the producer."""
        await self._producer.stop()

    async def prepare(self, tx: Any) -> None:
        """Nothing to create: the topic is the broker's."""

    async def prepare_connection(self, conn: Any) -> None:
        """Nothing per connection."""

    def check_keys(self, keys: Iterable[Sequence[Any]]) -> None:
        """JSON carries any group value."""

    def encode(self, rows: Sequence[ResultRow]) -> None:
        """Messages are built as they are sent."""

    async def write(
        self, tx: Any, rows: Sequence[ResultRow], *, insert_only: bool, encoded: Any = None
    ) -> int:
        """Deliver the rows (acknowledged by the broker) before the transaction commits."""
        source = self._passthrough_from
        await self._producer.send_all(
            [
                result_message(self._topic, self._group_by, self._outputs, row)
                if source is None
                else record_message(self._topic, source, row)
                for row in rows
            ]
        )
        return len(rows)

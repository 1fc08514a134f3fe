"""Where late and bad records go: one router of each kind, chosen once from the plan.

A router's `route` is pure: it adds what a record becomes (a side-table row,
a dead-letter message) to a `Routed` value, which the batch commits; routing
may run again when a batch is retried. `committed` runs once the batch is
durable (log lines, so that a retried batch says things once).

    late strategy     route                         committed
    drop              -                             -
    loganddrop        -                             a rate-limited log line each
    sendtodlq         message to dlqTopic           -
    separatestream    row in lateDataTable          -

    dlqType           route (bad record)            refused (by the sink)
    kafka             message to the DLQ topic      message with the ledger batch
    postgresql        row in the dead-letter table  row with the sink's error
    logging           - (a log line once committed) a log line
    none              -                             -

Records that data-quality rules quarantine (onFailure continue) are routed
like bad records, with the rule as the reason.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from streamproc.engine import LateRecord
from streamproc.runtime.late import (
    RateLimitedLog,
    bad_dlq_message,
    failed_record_dlq_message,
    late_dlq_message,
)
from streamproc.runtime.plan import QueryPlan
from streamproc.sinks.base import DeadLetterRow, LateRow, OutgoingMessage
from streamproc.sources.base import RawRecord
from streamproc.sources.position import Where, offset_where

#: Where a record was read: (partition, offset).
Position = tuple[int, int]
#: A dead letter and the record it stands for.
DeadLetter = tuple[Position, OutgoingMessage]


@dataclass(slots=True)
class Routed:
    """What the late and bad records of a batch become, committed with it."""

    late_rows: list[LateRow] = field(default_factory=list)
    #: Messages for a Kafka topic, flushed before the commit (at-least-once).
    dead_letters: list[DeadLetter] = field(default_factory=list)
    #: Rows of the dead-letter table, written in the commit (exactly-once).
    dead_letter_rows: list[DeadLetterRow] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class RefusedRecord:
    """A record the sink refused on its own, with the ledger batch that records it."""

    raw: RawRecord
    batch_id: str
    start_offset: int
    next_offset: int
    error: str


class LateRouter(Protocol):
    """What happens to late records (lateDataConfig.strategy)."""

    @property
    def strategy(self) -> str:
        """The strategy's name, for metrics."""
        ...

    @property
    def writes_letters(self) -> bool:
        """True when late records become dead letters on a topic."""
        ...

    def route(self, raw: RawRecord, record: LateRecord, out: Routed) -> None:
        """Add what the late record becomes to out."""
        ...

    def committed(self, records: Sequence[LateRecord]) -> None:
        """The batch holding these late records is durable."""
        ...


class BadRouter(Protocol):
    """What happens to bad records and to records the sink refuses (dlqConfig.dlqType)."""

    @property
    def uses_producer(self) -> bool:
        """True when the router writes dead letters to Kafka."""
        ...

    @property
    def writes_letters(self) -> bool:
        """True when the router writes dead letters (a topic or a table)."""
        ...

    def route(self, raw: RawRecord, reason: str, out: Routed) -> None:
        """Add what the bad record becomes to out."""
        ...

    def refused(self, record: RefusedRecord, out: Routed) -> None:
        """Add the dead letter of a record the sink refused to out, if this router writes one."""
        ...

    def committed(self, items: Sequence[tuple[RawRecord, str]]) -> None:
        """The batch holding these bad records is durable."""
        ...


class DropLate:
    """Late records are counted, nothing more."""

    strategy = "drop"
    writes_letters = False

    def route(self, raw: RawRecord, record: LateRecord, out: Routed) -> None:
        """Nothing to write."""

    def committed(self, records: Sequence[LateRecord]) -> None:
        """Nothing to say."""


class LogLate(DropLate):
    """Late records are counted and logged (rate limited)."""

    strategy = "loganddrop"

    def __init__(self, where: Where = offset_where) -> None:
        self._log = RateLimitedLog(logging.getLogger("streamproc.late"))
        self._where = where

    def committed(self, records: Sequence[LateRecord]) -> None:
        """One log line per late record, at most 20 per 10 s."""
        for record in records:
            self._log.warning(
                "late record dropped: %s event time %s watermark %s (%s)",
                self._where(record.partition, record.offset),
                record.event_ts_ms,
                record.watermark_ms,
                record.reason,
            )


class DeadLetterLate(DropLate):
    """Late records' original bytes go to a topic, with where and why in headers."""

    strategy = "sendtodlq"
    writes_letters = True

    def __init__(self, topic: str, source_topic: str) -> None:
        self._topic = topic
        self._source_topic = source_topic

    def route(self, raw: RawRecord, record: LateRecord, out: Routed) -> None:
        """A dead letter on the late topic."""
        message = late_dlq_message(self._topic, self._source_topic, raw, record)
        out.dead_letters.append(((raw.partition, raw.offset), message))


class SideTableLate(DropLate):
    """Late records become rows of the separatestream side table."""

    strategy = "separatestream"

    def route(self, raw: RawRecord, record: LateRecord, out: Routed) -> None:
        """A row for lateDataTable."""
        out.late_rows.append(
            LateRow(
                record.partition,
                record.offset,
                record.event_ts_ms,
                record.watermark_ms,
                record.reason,
                record.value,
            )
        )


class CountBad:
    """dlqType none: bad records are counted, nothing more."""

    uses_producer = False
    writes_letters = False

    def route(self, raw: RawRecord, reason: str, out: Routed) -> None:
        """Nothing to write."""

    def refused(self, record: RefusedRecord, out: Routed) -> None:
        """No dead letter."""

    def committed(self, items: Sequence[tuple[RawRecord, str]]) -> None:
        """Nothing to say."""


class LogBad(CountBad):
    """dlqType logging: a rate-limited log line per bad or refused record."""

    def __init__(self, where: Where = offset_where) -> None:
        self._log = RateLimitedLog(logging.getLogger("streamproc.dlq"))
        self._where = where

    def refused(self, record: RefusedRecord, out: Routed) -> None:
        """A log line; no dead letter."""
        self._log.warning(
            "record rejected by the sink: %s: %s",
            self._where(record.raw.partition, record.raw.offset),
            record.error,
        )

    def committed(self, items: Sequence[tuple[RawRecord, str]]) -> None:
        """One log line per bad record, at most 20 per 10 s."""
        for raw, reason in items:
            self._log.warning("bad record: %s: %s", self._where(raw.partition, raw.offset), reason)


class DeadLetterBad(CountBad):
    """dlqType kafka: the original bytes to the DLQ topic, the reason in headers."""

    uses_producer = True
    writes_letters = True

    def __init__(self, topic: str, source_topic: str) -> None:
        self._topic = topic
        self._source_topic = source_topic

    def route(self, raw: RawRecord, reason: str, out: Routed) -> None:
        """A dead letter with the reason."""
        message = bad_dlq_message(self._topic, self._source_topic, raw, reason)
        out.dead_letters.append(((raw.partition, raw.offset), message))

    def refused(self, record: RefusedRecord, out: Routed) -> None:
        """A dead letter naming the ledger batch that records the refusal."""
        message = failed_record_dlq_message(
            self._topic,
            self._source_topic,
            record.raw,
            record.batch_id,
            record.start_offset,
            record.next_offset,
            record.error,
        )
        out.dead_letters.append(((record.raw.partition, record.raw.offset), message))


class TableBad(CountBad):
    """dlqType postgresql: a row of the dead-letter table, written in the batch's commit.

    The checkpoint adds the query, the source topic, the batch id and the time.
    """

    writes_letters = True

    def route(self, raw: RawRecord, reason: str, out: Routed) -> None:
        """A dead-letter row with the original bytes and the reason."""
        out.dead_letter_rows.append(
            DeadLetterRow(raw.partition, raw.offset, raw.key, raw.value, reason)
        )

    def refused(self, record: RefusedRecord, out: Routed) -> None:
        """A dead-letter row with the sink's error (the batch id is the one-record ledger row's)."""
        raw = record.raw
        out.dead_letter_rows.append(
            DeadLetterRow(
                raw.partition,
                raw.offset,
                raw.key,
                raw.value,
                f"rejected by the sink: {record.error}",
                record.error,
            )
        )


def late_router(plan: QueryPlan, where: Where = offset_where) -> LateRouter:
    """The late router of a plan's lateDataConfig; `where` names positions in its lines."""
    if plan.late_strategy == "sendtodlq" and plan.late_dlq_topic:
        return DeadLetterLate(plan.late_dlq_topic, plan.topic)
    if plan.late_strategy == "separatestream":
        return SideTableLate()
    if plan.late_strategy == "loganddrop":
        return LogLate(where)
    return DropLate()


def bad_router(plan: QueryPlan, where: Where = offset_where) -> BadRouter:
    """The bad-record router of a plan's dlqConfig; `where` names positions in its lines."""
    if plan.dlq_type == "kafka" and plan.dlq_topic:
        return DeadLetterBad(plan.dlq_topic, plan.topic)
    if plan.dlq_type == "postgresql" and plan.dlq_table:
        return TableBad()
    if plan.dlq_type == "logging":
        return LogBad(where)
    return CountBad()

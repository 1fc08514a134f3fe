"""``streamingConfigJson``: trigger, output mode, watermark and late data of a streaming query."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import Field
from typing_extensions import override

from streamproc.config.base import ConfigModel
from streamproc.config.durations import (
    DurationError,
    case_insensitive,
    duration_pattern,
    format_duration_ms,
    parse_duration_ms,
)
from streamproc.config.fields import DurationMs, Flag, HouseType, WholeNumber, choice
from streamproc.config.messages import expected, render
from streamproc.config.names import ColumnName, Name, TableName, Topic

TriggerKind = Literal["continuous", "processingtime", "once", "availablenow"]
OutputMode = Literal["append", "update", "complete"]
EventTimeFormat = Literal["auto", "iso8601", "epoch_millis", "epoch_seconds"]
LateDataStrategy = Literal["drop", "loganddrop", "sendtodlq", "separatestream"]
OnFileTruncated = Literal["stop", "continue"]
OnFileDeleted = Literal["warn", "stop"]
_OutputMode = Annotated[OutputMode, choice(OutputMode, "output mode")]
_EventTimeFormat = Annotated[EventTimeFormat, choice(EventTimeFormat, "event time format")]
_LateDataStrategy = Annotated[
    LateDataStrategy,
    choice(
        LateDataStrategy,
        "late data strategy",
        aliases={"logdrop": "loganddrop", "dlq": "sendtodlq", "separate": "separatestream"},
        ignore_separators=True,
    ),
]

_OnFileTruncated = Annotated[OnFileTruncated, choice(OnFileTruncated, "truncated-file policy")]
_OnFileDeleted = Annotated[OnFileDeleted, choice(OnFileDeleted, "deleted-file policy")]

_TRIGGER_HELP = "expected continuous, once, availablenow or processingtime=<duration>"
_PROCESSING_TIME = ("processingtime", "processing_time")


@dataclass(frozen=True)
class Trigger:
    """When micro-batches run (wall-clock time).

    Attributes:
        kind: 'continuous' (as soon as records are ready), 'processingtime' (every
            ``interval_ms``), 'once' (one batch, then stop) or 'availablenow'
            (everything available at start, in batches, then stop).
        interval_ms: the wall-clock interval of 'processingtime'; None otherwise.
    """

    kind: TriggerKind
    interval_ms: int | None = None

    @property
    def spec(self) -> str:
        """The trigger as the config writes it (``processingtime=5 seconds``)."""
        if self.interval_ms is None:
            return self.kind
        return f"processingtime={format_duration_ms(self.interval_ms)}"


_SIMPLE_TRIGGERS: dict[str, Trigger] = {
    kind: Trigger(kind) for kind in ("continuous", "once", "availablenow")
}


def parse_trigger(text: str) -> Trigger:
    """Parse ``continuous``, ``once``, ``availablenow`` or ``processingtime=<duration>``.

    Case-insensitive; ``processing_time=`` is accepted too.

    Raises:
        ValueError: one line naming the whole value and what is accepted.
    """
    simple = _SIMPLE_TRIGGERS.get(text.strip().lower())
    if simple is not None:
        return simple
    head, sep, tail = text.partition("=")
    if sep and head.strip().lower() in _PROCESSING_TIME:
        try:
            return Trigger("processingtime", parse_duration_ms(tail.strip()))
        except DurationError as exc:
            # Name the whole trigger: that is the value the author wrote.
            raise ValueError(f"{render(text)} {exc.reason}") from None
    raise ValueError(f"{render(text)} is not a trigger; {_TRIGGER_HELP}")


@dataclass(frozen=True)
class _TriggerSpec(HouseType):
    @override
    def parse(self, value: Any) -> Trigger:
        if not isinstance(value, str):
            raise ValueError(expected("a string", value))
        return parse_trigger(value)

    @override
    def dump(self, value: Any) -> Any:
        return value.spec if isinstance(value, Trigger) else value

    @override
    def schema(self) -> dict[str, Any]:
        words = [case_insensitive(w) for w in ("continuous", "once", "availablenow")]
        timed = f"{case_insensitive('processing')}_?{case_insensitive('time')}"
        every = duration_pattern(anchored=False)
        return {
            "type": "string",
            "pattern": rf"^\s*(?:{'|'.join(words)}|{timed}\s*=\s*{every})\s*$",
            "description": _TRIGGER_HELP,
        }


class WatermarkConfig(ConfigModel):
    """``watermark``: how far event time may run behind before a window closes.

    Attributes:
        event_time_column: the field holding each record's event time; must equal
            the aggregation's ``windowColumn``. A record without a valid one is bad.
        delay_ms: ``delayThreshold``: each partition's watermark is the largest
            event time it has seen minus this; older records are late.
        event_time_format: NEW; 'auto' (a string is an ISO-8601 time, naive meaning UTC,
            or a year or month alone; a number is epoch milliseconds; a string of digits
            is never epoch milliseconds), 'iso8601', 'epoch_millis' or 'epoch_seconds'
            (these two also read decimal strings).
        idle_timeout_ms: NEW; a partition without records this long (wall time)
            stops holding the global watermark back; none: it always does.
        max_future_skew_ms: NEW; a record whose event time is this far ahead of
            the time it was written to the topic (its Kafka timestamp) is a bad
            record, so that one wrong clock cannot close every window; none: no limit.
        jump_warning_ms: NEW; warn (rate limited) when a batch moves a partition's
            watermark ahead by more than this.
    """

    event_time_column: Annotated[str, ColumnName()]
    delay_ms: Annotated[int, DurationMs()] = Field(alias="delayThreshold")
    event_time_format: _EventTimeFormat = "auto"
    idle_timeout_ms: Annotated[int, DurationMs()] | None = Field(default=None, alias="idleTimeout")
    max_future_skew_ms: Annotated[int, DurationMs()] | None = Field(
        default=None, alias="maxFutureSkew"
    )
    jump_warning_ms: Annotated[int, DurationMs()] = Field(
        default=86_400_000, alias="jumpWarning", json_schema_extra={"default": "1 day"}
    )


class LateDataConfig(ConfigModel):
    """``lateDataConfig``: what happens to a record older than the watermark.

    Attributes:
        strategy: 'drop' (counted only), 'loganddrop' (counted and logged, rate
            limited), 'sendtodlq' (the original bytes to ``dlqTopic``) or
            'separatestream' (a row in ``lateDataTable``).
        dlq_topic: the Kafka topic of 'sendtodlq' (required by it).
        late_data_table: the table of 'separatestream' (required by it), in the
            sink's database; created when missing.
    """

    strategy: _LateDataStrategy = "drop"
    dlq_topic: Annotated[str, Topic()] | None = None
    late_data_table: Annotated[str, TableName()] | None = None


class StreamingConfig(ConfigModel):
    """``streamingConfigJson``: the streaming query.

    Attributes:
        checkpoint_location: a local directory for each worker's working state
            (RocksDB). Unlike Spark, not the checkpoint: that is in PostgreSQL,
            keyed by ``queryName``, and the directory can be deleted when no
            worker runs.
        query_name: identifies the query in the checkpoint tables, the consumer
            group, metrics and logs; a new name starts the query over.
        output_mode: 'append' (a window's row is written once, when it closes),
            'update' (changed rows are upserted after each trigger) or 'complete'
            (every row ever, upserted; nothing evicted).
        trigger: ``triggerMode``: 'continuous' (a micro-batch as soon as records
            are ready), 'processingtime=<duration>' (one every duration), 'once'
            or 'availablenow' (what is in the topic at start, then the run ends).
        watermark: event time and lateness; required by 'append' with an
            aggregation.
        enable_idempotence: accepted and ignored (see the table at the end).
        max_records_per_trigger: at most this many records per micro-batch (else
            ``maxOffsetsPerTrigger``, else 70,000 to 100,000).
        max_files_per_trigger: at most this many new files per micro-batch of a file
            source; ignored (with a warning) with a Kafka source.
        state_timeout_ms: a non-windowed aggregation evicts a key with no record
            for this long (wall time); a windowed one (update or append mode, with a
            watermark) evicts a (key, window) whose latest event time is this far
            behind the watermark, before the window closes.
        late_data: what happens to late records.
        on_file_truncated: NEW; a file source's file that is truncated or rewritten
            in place (copytruncate) before it was read to its end: 'stop' (the query
            stops with one line) or 'continue' (what it holds now is read as a new
            file, with a warning naming the bytes that may have been missed);
            ignored (with a warning) with a Kafka source.
        on_file_deleted: NEW; a file source's file gone (deleted, or moved out of
            extract.path) with bytes unread and no descriptor open on it: 'warn'
            (a warning with the file and the bytes, counted in progress and
            metrics) or 'stop' (the query stops with one line); ignored (with a
            warning) with a Kafka source.
    """

    checkpoint_location: Annotated[str, Field(min_length=1)]
    query_name: Annotated[str, Name("query name")]
    output_mode: _OutputMode = "append"
    trigger: Annotated[Trigger, _TriggerSpec()] = Field(
        default=_SIMPLE_TRIGGERS["continuous"],
        alias="triggerMode",
        json_schema_extra={"default": "continuous"},
    )
    watermark: WatermarkConfig | None = None
    enable_idempotence: Annotated[bool, Flag()] = True
    max_records_per_trigger: Annotated[int, WholeNumber()] | None = None
    max_files_per_trigger: Annotated[int, WholeNumber()] | None = None
    state_timeout_ms: Annotated[int, DurationMs()] | None = Field(
        default=None, alias="stateTimeout"
    )
    late_data: LateDataConfig = Field(default_factory=LateDataConfig, alias="lateDataConfig")
    on_file_truncated: _OnFileTruncated = "stop"
    on_file_deleted: _OnFileDeleted = "warn"

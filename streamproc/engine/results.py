"""Result values the engine hands back: batch accounting, late and bad records, emissions.

All are frozen dataclasses. Times are integer epoch milliseconds of event time unless a
field says otherwise.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

#: (group key, window start, window end); start and end are None for non-windowed queries.
WindowKey = tuple[tuple[Any, ...], int | None, int | None]

LATE_WATERMARK = "event time older than watermark"
LATE_WINDOW_CLOSED = "window closed"
LATE_STATE_EXPIRED = "state expired"
#: A record that would start or extend a session already closed (`engine.sessions`).
LATE_SESSION_CLOSED = "session closed"
#: The state of an expired (key, window) (windowed stateTimeout): a tombstone, kept
#: until W passes the window's end, so that no later record starts its state afresh.
EXPIRED_STATE: tuple[()] = ()


@dataclass(frozen=True, slots=True)
class LateRecord:
    """A record that arrived too late to be aggregated.

    Attributes:
        partition: Source partition.
        offset: Source offset.
        event_ts_ms: The record's event time.
        watermark_ms: The watermark it was compared with: the partition watermark for
            `LATE_WATERMARK`, the global watermark for `LATE_WINDOW_CLOSED`,
            `LATE_STATE_EXPIRED` and `LATE_SESSION_CLOSED`.
        reason: `LATE_WATERMARK`, `LATE_WINDOW_CLOSED`, `LATE_STATE_EXPIRED` or
            `LATE_SESSION_CLOSED`.
        value: The decoded record.
    """

    partition: int
    offset: int
    event_ts_ms: int
    watermark_ms: int
    reason: str
    value: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class BadRecord:
    """A record the engine cannot aggregate; it changed no state and no watermark.

    Attributes:
        partition: Source partition.
        offset: Source offset.
        reason: One line naming the field and the value, e.g. `event_time: missing`.
        value: The decoded record (normally a mapping; anything else is itself the
            reason it is bad).
    """

    partition: int
    offset: int
    reason: str
    value: Any


@dataclass(frozen=True, slots=True)
class PartitionProgress:
    """What one `Engine.process` call did for one partition.

    Attributes:
        records: Records of the partition in the batch.
        aggregated: Records that updated state.
        late: Records classified late.
        bad: Records classified bad.
        first_offset: Offset of the partition's first record in the batch.
        next_offset: Offset after the partition's last record in the batch.
        max_event_ts_ms: Max event time of the partition's aggregated records so far.
        watermark_ms: The partition watermark after the batch (event time).
        min_event_ts_ms: Min event time of the batch's aggregated and late records
            (event time; None when none had one).
    """

    records: int
    aggregated: int
    late: int
    bad: int
    first_offset: int | None
    next_offset: int | None
    max_event_ts_ms: int | None
    watermark_ms: int | None
    min_event_ts_ms: int | None = None


@dataclass(frozen=True, slots=True)
class WatermarkJump:
    """One record that moved its partition's max event time far ahead (QuerySpec.jump_warning_ms).

    Attributes:
        partition: Source partition.
        offset: The record's offset.
        from_ms: The partition's max event time before it.
        to_ms: Its event time, the new max.
    """

    partition: int
    offset: int
    from_ms: int
    to_ms: int


@dataclass(frozen=True, slots=True)
class BatchResult:
    """Outcome of one `Engine.process` call: records == aggregated + late + bad.

    Attributes:
        records: Records in the batch.
        aggregated: Records that updated state.
        late: Late records, in input order per partition.
        bad: Bad records, in input order per partition.
        per_partition: Accounting per partition present in the batch.
        jumps: Records that moved their partition's watermark far ahead.
    """

    records: int
    aggregated: int
    late: tuple[LateRecord, ...]
    bad: tuple[BadRecord, ...]
    per_partition: Mapping[int, PartitionProgress]
    jumps: tuple[WatermarkJump, ...] = ()


@dataclass(frozen=True, slots=True)
class ResultRow:
    """One row of the result table.

    Attributes:
        key: Group-by values, in group-by order.
        window_start_ms: Window start (event time), None when not windowed.
        window_end_ms: Window end, exclusive (event time), None when not windowed.
        values: Aggregate values, in aggregation order.
    """

    key: tuple[Any, ...]
    window_start_ms: int | None
    window_end_ms: int | None
    values: tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class PartialRow:
    """The absolute partial state of one (key, window) in one partition.

    `state` holds only JSON values (lists, numbers, strings, None), so it can be stored
    in a JSONB column, read back, merged with `merge_states` and finished with `finalize`.
    """

    key: tuple[Any, ...]
    window_start_ms: int | None
    window_end_ms: int | None
    state: tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class Emission:
    """What one trigger produced; STREAMING.md, "Exactly once", says how the runtime uses it.

    Attributes:
        rows: Rows the sink must write for the output mode, merged over local partitions:
            append = windows closed since the last emit (each exactly once ever);
            update = every (key, window) changed since the last emit;
            complete = every (key, window) in state.
        partials: Per local partition, the absolute partial state of every (key, window)
            changed since the last emit, including ones evicted by this emit. Upsert
            these first, then delete `evicted`.
        evicted: Per local partition, the keys this emit dropped from state one by one
            (timed out by the state timeout). Entries of windows that closed (end <= W)
            are not listed: the runtime drops every stored partial of a window with
            end <= W at once.
        closed: Every (key, window) of local state that closed since the last emit.
        global_watermark_ms: The global watermark W (event time) after this emit.
        expired: The (key, window)s this emit found idle for the state timeout (windowed
            stateTimeout, only when asked to expire locally): the runtime replaces
            their stored partials, every partition's, by a tombstone. In append mode
            their rows are in `rows`; their partials are not in `partials`.
    """

    rows: tuple[ResultRow, ...]
    partials: Mapping[int, tuple[PartialRow, ...]]
    evicted: Mapping[int, tuple[WindowKey, ...]]
    closed: tuple[WindowKey, ...]
    global_watermark_ms: int | None
    expired: tuple[WindowKey, ...] = ()


def _fast_constructor(cls: type[Any]) -> Any:
    """A positional constructor for a frozen slots dataclass, for bulk emission.

    The dataclass `__init__` of a frozen class sets each field through
    `object.__setattr__`; writing the slots through their descriptors builds the same
    object (equal, hashable, immutable afterwards) in about half the time, which matters
    when an emit builds one row and one partial per changed (key, window).
    """
    new = object.__new__
    setters = [getattr(cls, name).__set__ for name in cls.__dataclass_fields__]
    s0, s1, s2, s3 = setters

    def build(a: Any, b: Any, c: Any, d: Any) -> Any:
        obj = new(cls)
        s0(obj, a)
        s1(obj, b)
        s2(obj, c)
        s3(obj, d)
        return obj

    return build


#: ResultRow(key, window_start_ms, window_end_ms, values), built fast.
new_result_row: Callable[[tuple[Any, ...], int | None, int | None, tuple[Any, ...]], ResultRow]
new_result_row = _fast_constructor(ResultRow)
#: PartialRow(key, window_start_ms, window_end_ms, state), built fast.
new_partial_row: Callable[[tuple[Any, ...], int | None, int | None, tuple[Any, ...]], PartialRow]
new_partial_row = _fast_constructor(PartialRow)

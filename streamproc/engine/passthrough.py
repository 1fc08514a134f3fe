"""The pass-through engine: a streaming query without aggregation, one row per record.

Each record the runtime hands over (decoded, past the quality rules) becomes one
result row, in append mode, written exactly once through the same ledger as an
aggregation's rows. The row's identity is the record's source position, so a
replay of a span can never add it twice:

    ResultRow(key=(partition, offset), window_start_ms=None, window_end_ms=None,
              values=(record,))

There is no state to keep (the checkpoint's position is the whole of it), no
window and so nothing that is late: **Choice** (Spark's, whose watermark drops
late rows only in stateful operators): with a watermark configured, records
are written whatever their event time. The event time still moves the
partition watermarks and W, which progress, status and the ledger show; a
record whose event time cannot be read is written all the same and moves no
watermark.

`PassThroughEngine` has the surface of `Engine` that the runtime uses
(`StreamEngine`), so the micro-batch loop, the ledger and the failure policy
run unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol

from streamproc.engine.engine import Engine
from streamproc.engine.eventtime import event_time_parser
from streamproc.engine.localparts import LocalPartitions
from streamproc.engine.results import (
    BatchResult,
    Emission,
    PartialRow,
    PartitionProgress,
    ResultRow,
    WindowKey,
    new_result_row,
)
from streamproc.engine.session_stream import SessionStreamEngine
from streamproc.engine.spec import QuerySpec
from streamproc.engine.watermarks import partition_watermark
from streamproc.state.base import WindowStore

Record = tuple[int, int, Mapping[str, Any]]


class StreamEngine(Protocol):
    """What the runtime asks of an engine (`Engine` or `PassThroughEngine`)."""

    spec: QuerySpec

    def process(self, records: Sequence[Record]) -> BatchResult:
        """Fold a batch of (partition, offset, decoded record)."""
        ...

    def emit(self, *, closed_partials: bool = True, expire_idle: bool = False) -> Emission:
        """The trigger's rows, partials and evictions (expire_idle: see `Engine.emit`)."""
        ...

    def assign(self, partitions: Iterable[int]) -> None:
        """Open local partitions."""
        ...

    def revoke(self, partitions: Iterable[int]) -> None:
        """Drop local partitions."""
        ...

    def restore(
        self,
        partition: int,
        max_event_ts_ms: int | None,
        partials: Iterable[PartialRow],
        *,
        next_offset: int | None = None,
        closed: Iterable[WindowKey] = (),
    ) -> None:
        """Replace a partition's state with what the runtime committed (`closed`: the
        fences of session windows, ignored by the other engines)."""
        ...

    def set_remote_watermark(
        self, partition: int, watermark_ms: int | None, *, idle: bool = False
    ) -> None:
        """Count another worker's partition in W."""
        ...

    def advance_global_watermark(self, watermark_ms: int) -> None:
        """Raise W to at least this value (event time)."""
        ...

    def partition_watermark_ms(self, partition: int) -> int | None:
        """wm(p) (event time), None when unknown."""
        ...

    def partition_max_event_ts_ms(self, partition: int) -> int | None:
        """Max event time of a local partition, None when unknown."""
        ...

    @property
    def global_watermark_ms(self) -> int | None:
        """The global watermark W (event time)."""
        ...

    def state_bytes(self) -> int | None:
        """The local state's size as its stores estimate it; None when unknown."""
        ...

    def close(self) -> None:
        """Release what the engine holds."""
        ...


def record_row(partition: int, offset: int, record: Mapping[str, Any]) -> ResultRow:
    """The result row of a pass-through query for one record (see the module docstring)."""
    row: ResultRow = new_result_row((partition, offset), None, None, (record,))
    return row


class _Partition:
    __slots__ = ("last_active_ms", "max_event_ts_ms", "next_offset")

    def __init__(self, now_ms: int) -> None:
        self.max_event_ts_ms: int | None = None
        self.next_offset: int | None = None
        self.last_active_ms = now_ms


class PassThroughEngine(LocalPartitions[_Partition]):
    """Records in, one row each out at the next emit (a `StreamEngine`).

    Args:
        spec: A pass-through query (`QuerySpec.passthrough`).
        clock: Wall clock in epoch milliseconds (the idle timeout only).
    """

    def __init__(self, spec: QuerySpec, clock: Callable[[], int]) -> None:
        if not spec.passthrough:
            raise ValueError("PassThroughEngine runs pass-through queries only")
        super().__init__(spec, clock)
        column = spec.event_time_column
        self._column = column
        self._parse = event_time_parser(spec.event_time_format) if column else None
        self._pending: list[ResultRow] = []

    def process(self, records: Sequence[Record]) -> BatchResult:
        """Take a batch of (partition, offset, record); every record becomes a row."""
        now = self._clock()
        counts: dict[int, list[int]] = {}
        pending = self._pending
        for partition, offset, record in records:
            ps = self._parts.get(partition)
            if ps is None:
                ps = self._open(partition, now)
            ts = self._event_time(record)
            if ts is not None and (ps.max_event_ts_ms is None or ts > ps.max_event_ts_ms):
                ps.max_event_ts_ms = ts
            ps.next_offset = offset + 1
            ps.last_active_ms = now
            pending.append(record_row(partition, offset, record))
            c = counts.get(partition)
            if c is None:
                counts[partition] = [1, offset]
            else:
                c[0] += 1
        self._update_watermark(now)
        per_partition = {
            p: PartitionProgress(
                records=n,
                aggregated=n,
                late=0,
                bad=0,
                first_offset=first,
                next_offset=self._parts[p].next_offset,
                max_event_ts_ms=self._parts[p].max_event_ts_ms,
                watermark_ms=partition_watermark(
                    self._parts[p].max_event_ts_ms, self.spec.delay_ms
                ),
            )
            for p, (n, first) in counts.items()
        }
        return BatchResult(
            records=len(records),
            aggregated=len(records),
            late=(),
            bad=(),
            per_partition=per_partition,
        )

    def emit(self, *, closed_partials: bool = True, expire_idle: bool = False) -> Emission:
        """The rows of every record taken since the last emit, in the order taken."""
        rows, self._pending = tuple(self._pending), []
        return Emission(
            rows=rows,
            partials={},
            evicted={},
            closed=(),
            global_watermark_ms=self._update_watermark(self._clock()),
        )

    def assign(self, partitions: Iterable[int]) -> None:
        """Open local partitions; until they have data they hold W back."""
        now = self._clock()
        for p in partitions:
            if p not in self._parts:
                self._open(p, now)
        self._update_watermark(now)

    def revoke(self, partitions: Iterable[int]) -> None:
        """Drop local partitions and the rows of theirs not emitted yet."""
        gone = set(partitions)
        for p in gone:
            self._parts.pop(p, None)
        self._pending = [r for r in self._pending if r.key[0] not in gone]

    def restore(
        self,
        partition: int,
        max_event_ts_ms: int | None,
        partials: Iterable[PartialRow],
        *,
        next_offset: int | None = None,
        closed: Iterable[WindowKey] = (),
    ) -> None:
        """Reset a partition to its committed position (a pass-through query has no partials).

        Raises:
            ValueError: partials were given: the checkpoint is not a pass-through query's.
        """
        if any(True for _ in partials):
            raise ValueError("a pass-through query has no partial states to restore")
        now = self._clock()
        ps = self._open(partition, now)
        ps.max_event_ts_ms = max_event_ts_ms
        ps.next_offset = next_offset
        self._pending = [r for r in self._pending if r.key[0] != partition]
        self._update_watermark(now)

    def advance_global_watermark(self, watermark_ms: int) -> None:
        """Raise W to at least this value (event time)."""
        self._watermark.advance_to(watermark_ms)

    def state_bytes(self) -> int | None:
        """Nothing is kept locally."""
        return 0

    def close(self) -> None:
        """Forget every partition (nothing is stored locally)."""
        self._parts.clear()
        self._pending = []

    def _open(self, partition: int, now: int) -> _Partition:
        ps = self._parts[partition] = _Partition(now)
        self._watermark.drop_remote(partition)
        return ps

    def _event_time(self, record: Mapping[str, Any]) -> int | None:
        if self._parse is None or self._column is None:
            return None
        try:
            ts: int = self._parse(record.get(self._column))
        except (ValueError, TypeError):
            return None  # written all the same: nothing here needs its time
        return ts


def engine_for(
    spec: QuerySpec, store_factory: Callable[[int], WindowStore], clock: Callable[[], int]
) -> StreamEngine:
    """The engine of a query: `PassThroughEngine` without aggregation,
    `SessionStreamEngine` for session windows, else `Engine`."""
    if spec.passthrough:
        return PassThroughEngine(spec, clock)
    if spec.session is not None:
        return SessionStreamEngine(spec, clock)
    return Engine(spec, store_factory, clock)


__all__ = ["PassThroughEngine", "StreamEngine", "engine_for", "record_row"]

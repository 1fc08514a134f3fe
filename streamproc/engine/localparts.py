"""What both engines keep of their local partitions: positions, and the global watermark W.

`Engine` (windowed aggregation) and `PassThroughEngine` (one row a record) hold
different state per partition, but the same position of each: its max event
time, the offset after its last record and its last activity (wall time), from
which its watermark and, with the other workers' partitions, W follow.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, Protocol, TypeVar

from streamproc.engine.spec import QuerySpec
from streamproc.engine.watermarks import GlobalWatermark, partition_watermark


class PartitionPosition(Protocol):
    """How far a local partition got (a `PartitionState`, or a pass-through one's)."""

    @property
    def max_event_ts_ms(self) -> int | None:
        """Max event time of its records so far, None before the first."""
        ...

    @property
    def next_offset(self) -> int | None:
        """Offset after the last record processed."""
        ...

    @property
    def last_active_ms(self) -> int:
        """Wall time of its last record (the idle timeout)."""
        ...


P = TypeVar("P", bound=PartitionPosition)


class LocalPartitions(Generic[P]):
    """Local partitions by number, and W over them and the remote ones.

    Args:
        spec: The query (its watermark delay and idle timeout).
        clock: Wall clock in epoch milliseconds.
    """

    def __init__(self, spec: QuerySpec, clock: Callable[[], int]) -> None:
        self.spec = spec
        self._clock = clock
        self._parts: dict[int, P] = {}
        self._watermark = GlobalWatermark(spec.delay_ms, spec.idle_timeout_ms)

    def set_remote_watermark(
        self, partition: int, watermark_ms: int | None, *, idle: bool = False
    ) -> None:
        """Count another worker's partition in W (ignored while the partition is local).

        Args:
            partition: The remote partition.
            watermark_ms: Its watermark wm(p) (event time), None when it has no data yet.
            idle: Leave it out of W (its owner considers it idle).
        """
        if partition not in self._parts:
            self._watermark.set_remote(partition, watermark_ms, idle)
            self._update_watermark(self._clock())

    def partition_watermark_ms(self, partition: int) -> int | None:
        """wm(p) (event time) of a local or remote partition, None when unknown."""
        ps = self._parts.get(partition)
        if ps is not None:
            return partition_watermark(ps.max_event_ts_ms, self.spec.delay_ms)
        return self._watermark.remote_watermark(partition)

    def partition_max_event_ts_ms(self, partition: int) -> int | None:
        """Max event time of a local partition's records, None when unknown."""
        ps = self._parts.get(partition)
        return None if ps is None else ps.max_event_ts_ms

    def partition_next_offset(self, partition: int) -> int | None:
        """Offset after the last record processed for a local partition.

        Right after opening a store this is the offset its state corresponds to.
        """
        ps = self._parts.get(partition)
        return None if ps is None else ps.next_offset

    @property
    def local_partitions(self) -> tuple[int, ...]:
        """Local partitions, ascending."""
        return tuple(sorted(self._parts))

    @property
    def global_watermark_ms(self) -> int | None:
        """The global watermark W (event time), None until every partition has data."""
        return self._watermark.current_ms

    def _update_watermark(self, now: int) -> int | None:
        local = [(ps.max_event_ts_ms, ps.last_active_ms) for ps in self._parts.values()]
        return self._watermark.update(local, now)

"""`SessionStreamEngine`: a `SessionEngine` as the runtime drives engines (`StreamEngine`).

The runtime asks every engine for an `Emission` at each trigger; a session emit says
more (rows that no longer exist, partial sessions created, changed, merged, closed),
and this adapter folds it into the same shape:

    partials      per partition, the state-row upserts of the emit's changes
    evicted       per partition, the state-row deletes (moved starts, merges, closed)
    rows          the rows the output mode writes (`SessionEmission.rows`)
    deleted_rows  rows of sessions that moved or merged (update, complete)
    closed        the merged sessions this emit closed

`emit(closed_partials=...)` is how the runtime says whether this worker closes
sessions itself (False: it owns every partition, its merge is exact) or leaves
merging and closing to the checkpoint (True: other workers hold partitions).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from streamproc.engine.batches import Record
from streamproc.engine.results import BatchResult, Emission, PartialRow, WindowKey
from streamproc.engine.session_engine import SessionEngine
from streamproc.engine.spec import QuerySpec


class SessionStreamEngine:
    """Session windows behind the runtime's engine port (see the module docstring).

    Args:
        spec: The query; `spec.session` must be set.
        clock: Wall clock in epoch milliseconds (the idle timeout only).
    """

    def __init__(self, spec: QuerySpec, clock: Callable[[], int]) -> None:
        self.sessions = SessionEngine(spec, clock)
        self.spec = spec

    def process(self, records: Sequence[Record]) -> BatchResult:
        """Fold a batch of (partition, offset, decoded record) into the sessions."""
        return self.sessions.process(records)

    def emit(self, *, closed_partials: bool = True, expire_idle: bool = False) -> Emission:
        """The trigger's state rows, rows and deleted rows (see the module docstring).

        Args:
            closed_partials: True when other workers hold partitions: the checkpoint
                merges and closes sessions over every partition's state rows.
            expire_idle: Unused (sessions have no state timeout: the gap ends them).
        """
        engine = self.sessions
        engine.closes_locally = not closed_partials
        em = engine.emit()
        partials: dict[int, tuple[PartialRow, ...]] = {}
        evicted: dict[int, tuple[WindowKey, ...]] = {}
        for p in em.changes:
            upserts, deletes = em.state_rows(p)
            if upserts:
                partials[p] = tuple(upserts)
            if deletes:
                evicted[p] = tuple(deletes)
        return Emission(
            rows=em.rows,
            partials=partials,
            evicted=evicted,
            closed=em.closed,
            global_watermark_ms=em.global_watermark_ms,
            deleted_rows=em.deleted_rows,
        )

    def assign(self, partitions: Iterable[int]) -> None:
        """Open local partitions."""
        self.sessions.assign(partitions)

    def revoke(self, partitions: Iterable[int]) -> None:
        """Drop local partitions."""
        self.sessions.revoke(partitions)

    def restore(
        self,
        partition: int,
        max_event_ts_ms: int | None,
        partials: Iterable[PartialRow],
        *,
        next_offset: int | None = None,
        closed: Iterable[WindowKey] = (),
    ) -> None:
        """Replace a partition's partial sessions by the checkpoint's; `closed`: its fences."""
        self.sessions.restore(
            partition, max_event_ts_ms, partials, next_offset=next_offset, closed=closed
        )

    def set_remote_watermark(
        self, partition: int, watermark_ms: int | None, *, idle: bool = False
    ) -> None:
        """Count another worker's partition in W."""
        self.sessions.set_remote_watermark(partition, watermark_ms, idle=idle)

    def advance_global_watermark(self, watermark_ms: int) -> None:
        """Raise W to at least this value (event time)."""
        self.sessions.advance_global_watermark(watermark_ms)

    def partition_watermark_ms(self, partition: int) -> int | None:
        """wm(p) (event time), None when unknown."""
        return self.sessions.partition_watermark_ms(partition)

    def partition_max_event_ts_ms(self, partition: int) -> int | None:
        """Max event time of a local partition, None when unknown."""
        return self.sessions.partition_max_event_ts_ms(partition)

    def partition_next_offset(self, partition: int) -> int | None:
        """Offset after the last record processed of a local partition."""
        return self.sessions.partition_next_offset(partition)

    @property
    def local_partitions(self) -> tuple[int, ...]:
        """Local partitions, ascending."""
        return self.sessions.local_partitions

    @property
    def global_watermark_ms(self) -> int | None:
        """The global watermark W (event time)."""
        return self.sessions.global_watermark_ms

    def state_bytes(self) -> int | None:
        """Unknown: partial sessions are kept in memory, not in a store."""
        return None

    def close(self) -> None:
        """Forget every partition."""
        self.sessions.close()


__all__ = ["SessionStreamEngine"]

"""One batch through a generated kernel: partition segments in, a balanced `BatchResult` out.

`Engine` (fixed windows) and `SessionEngine` (sessions) keep different state per
partition but run a batch the same way: cut it into runs of one partition, hand each
run to the kernel, and count per partition. The partition state needs only the
position fields below; the kernel reads and writes the rest.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, MutableMapping, Sequence
from itertools import groupby
from operator import itemgetter
from typing import Any, Protocol, TypeVar

from streamproc.engine.kernel import NO_MIN_TS, SegmentFn
from streamproc.engine.results import (
    BadRecord,
    BatchResult,
    LateRecord,
    PartitionProgress,
    WatermarkJump,
)
from streamproc.engine.watermarks import partition_watermark

Record = tuple[int, int, Mapping[str, Any]]
_by_partition = itemgetter(0)


class KernelPartition(Protocol):
    """The position fields of a partition's state that a batch updates."""

    batch_min_ts: int
    last_active_ms: int
    next_offset: int | None

    @property
    def max_event_ts_ms(self) -> int | None:
        """Max event time of its aggregated records, None before any."""
        ...

    @property
    def batch_min_event_ts_ms(self) -> int | None:
        """Min event time of this call's aggregated and late records, None if none."""
        ...


P = TypeVar("P", bound=KernelPartition)


def run_batch(
    records: Sequence[Record],
    parts: MutableMapping[int, P],
    open_partition: Callable[[int], P],
    run_segment: SegmentFn,
    closed_w: int,
    now_ms: int,
    delay_ms: int | None,
) -> BatchResult:
    """Run a batch of (partition, offset, decoded record) through the kernel.

    Args:
        records: The batch; each partition's records in offset order, partitions
            interleaved in any way.
        parts: The local partitions' states by partition.
        open_partition: Opens (and registers in `parts`) a partition seen first here.
        run_segment: The kernel's loop.
        closed_w: W at the start of the batch (event time), or `NO_TS`.
        now_ms: Wall time of the call.
        delay_ms: The watermark delay, for the partitions' watermarks.
    """
    late: list[LateRecord] = []
    bad: list[BadRecord] = []
    jumps: list[tuple[int, int, int, int]] = []
    counts: dict[int, list[Any]] = {}
    for partition, group in groupby(records, key=_by_partition):
        seg = list(group)
        ps = parts.get(partition)
        if ps is None:
            ps = open_partition(partition)
        if partition not in counts:
            ps.batch_min_ts = NO_MIN_TS  # the first segment of this call
        n_late, n_bad = len(late), len(bad)
        run_segment(ps, seg, closed_w, now_ms, late, bad, jumps)
        ps.last_active_ms = now_ms
        ps.next_offset = seg[-1][1] + 1
        c = counts.get(partition)
        if c is None:
            counts[partition] = [len(seg), len(late) - n_late, len(bad) - n_bad, seg[0][1]]
        else:
            c[0] += len(seg)
            c[1] += len(late) - n_late
            c[2] += len(bad) - n_bad
    per_partition: dict[int, PartitionProgress] = {}
    for partition, (n, n_late, n_bad, first) in counts.items():
        ps = parts[partition]
        per_partition[partition] = PartitionProgress(
            records=n,
            aggregated=n - n_late - n_bad,
            late=n_late,
            bad=n_bad,
            first_offset=first,
            next_offset=ps.next_offset,
            max_event_ts_ms=ps.max_event_ts_ms,
            watermark_ms=partition_watermark(ps.max_event_ts_ms, delay_ms),
            min_event_ts_ms=ps.batch_min_event_ts_ms,
        )
    total = sum(p.records for p in per_partition.values())
    return BatchResult(
        records=total,
        aggregated=total - len(late) - len(bad),
        late=tuple(late),
        bad=tuple(bad),
        per_partition=per_partition,
        jumps=tuple(WatermarkJump(*j) for j in jumps),
    )

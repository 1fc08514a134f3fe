"""Which fetched records go into a batch: partitions kept together in time.

A Kafka client hands out fetched records a partition at a time, a whole
fetch response each (tens of thousands of records). A batch made that way
holds one partition far ahead of the others; the global watermark W, the
minimum over partitions, stays behind, every window the batch touched stays
open, and its partial states are written, merged and read again in later
batches. Taking records by Kafka timestamp instead keeps the partitions of
a batch level, as Kafka Streams does when it picks the record with the
smallest timestamp across a task's partitions.

The rule: among the partitions with buffered records, every record up to
the horizon, the smallest of their last buffered timestamps, may go (each
such partition has data at least that far); a partition with nothing
buffered does not hold the others up (Kafka Streams' `max.task.idle.ms` = 0).
If more records than asked for are within the horizon, each partition
gives the same share of its own. The partition that sets the horizon gives
all it has, so every call makes progress. Timestamps only steer batch
composition: results never depend on them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol


class Timestamped(Protocol):
    """A buffered record: its Kafka timestamp (epoch ms)."""

    @property
    def timestamp(self) -> int:
        """The record's Kafka timestamp."""
        ...


def aligned_counts(
    buffers: Mapping[int, Sequence[Timestamped]], max_records: int
) -> dict[int, int]:
    """How many leading records of each partition's buffer to hand out.

    Args:
        buffers: Per partition, its buffered records in offset order.
        max_records: The most records to hand out in all (at least 1).

    Returns:
        Per partition with buffered records, a count (a prefix of its buffer).
    """
    filled = {p: records for p, records in buffers.items() if records}
    if not filled:
        return {}
    horizon = min(records[-1].timestamp for records in filled.values())
    counts = {p: _leading_at_most(records, horizon) for p, records in filled.items()}
    counts = {p: n for p, n in counts.items() if n}
    total = sum(counts.values())
    if total <= max_records:
        return counts
    # The same fraction of each partition's share keeps them level.
    scaled = {p: n * max_records // total for p, n in counts.items()}
    given = sum(scaled.values())
    for p in sorted(counts, key=lambda p: counts[p], reverse=True):
        if given >= max_records:
            break
        if scaled[p] < counts[p]:
            scaled[p] += 1
            given += 1
    return {p: n for p, n in scaled.items() if n}


def _leading_at_most(records: Sequence[Timestamped], horizon: int) -> int:
    """How many leading records are within the horizon.

    The whole buffer when its last record is (always so for the partition
    that sets the horizon, so every call hands something out); else found
    by bisection, exact when timestamps rise with offsets (CreateTime can
    go back a little: then the cut is only approximately at the horizon).
    """
    if records[-1].timestamp <= horizon:
        return len(records)
    lo, hi = 0, len(records)
    while lo < hi:
        mid = (lo + hi) // 2
        if records[mid].timestamp <= horizon:
            lo = mid + 1
        else:
            hi = mid
    return lo

"""Watermarks: per-partition wm(p) and the global watermark W (both event time).

    wm(p) = max event time of p's aggregated records - delay
    W     = min over known partitions of wm(p), monotonic

A known partition without data holds W back. With an idle timeout, a local partition
whose last record arrived more than the timeout ago (wall clock) is left out of the min;
a remote partition is left out when its owner says it is idle. When every partition is
left out, W stays where it is. W never goes backwards (as in Spark and Flink): a
partition that joins later, or comes back from idleness behind W, does not reopen closed
windows; its records for them are late ("window closed").

Timeline, delay 2, two partitions:

    p0:  5   9        -> wm(p0) = 7
    p1:  3      4     -> wm(p1) = 2
    W = min(7, 2) = 2; windows with end <= 2 are closed.
"""

from __future__ import annotations

from collections.abc import Iterable


def partition_watermark(max_event_ts_ms: int | None, delay_ms: int | None) -> int | None:
    """wm(p) from the partition's max event time; None without data or without delay."""
    if max_event_ts_ms is None or delay_ms is None:
        return None
    return max_event_ts_ms - delay_ms


def is_idle(last_active_wall_ms: int, now_wall_ms: int, idle_timeout_ms: int | None) -> bool:
    """True when a partition has had no record for more than the idle timeout (wall)."""
    return idle_timeout_ms is not None and now_wall_ms - last_active_wall_ms > idle_timeout_ms


def combine(watermarks: Iterable[int | None]) -> tuple[bool, int | None]:
    """The min of partition watermarks: (any partition counted, the min or None).

    Any None among them holds the result back to None.
    """
    counted = False
    low: int | None = None
    for wm in watermarks:
        if wm is None:
            return True, None
        if not counted or (low is not None and wm < low):
            low = wm
        counted = True
    return counted, low


class GlobalWatermark:
    """The monotonic global watermark W, from local and remote partition watermarks."""

    def __init__(self, delay_ms: int | None, idle_timeout_ms: int | None) -> None:
        self.delay_ms = delay_ms
        self.idle_timeout_ms = idle_timeout_ms
        self.current_ms: int | None = None
        self._remote: dict[int, tuple[int | None, bool]] = {}

    def set_remote(self, partition: int, watermark_ms: int | None, idle: bool) -> None:
        """Record the watermark of a partition owned by another worker."""
        self._remote[partition] = (watermark_ms, idle)

    def drop_remote(self, partition: int) -> None:
        """Forget a remote partition (it became local, or left the source)."""
        self._remote.pop(partition, None)

    def remote_watermark(self, partition: int) -> int | None:
        """The last watermark recorded for a remote partition."""
        entry = self._remote.get(partition)
        return None if entry is None else entry[0]

    def is_remote(self, partition: int) -> bool:
        """True when the partition is known as remote."""
        return partition in self._remote

    def advance_to(self, watermark_ms: int) -> None:
        """Raise W to at least this value (e.g. the last W the runtime committed)."""
        if self.delay_ms is not None and (
            self.current_ms is None or watermark_ms > self.current_ms
        ):
            self.current_ms = watermark_ms

    def update(self, local: Iterable[tuple[int | None, int]], now_wall_ms: int) -> int | None:
        """Recompute W.

        Args:
            local: (max event time or None, last active wall ms) per local partition.
            now_wall_ms: Current wall time, for idleness.

        Returns:
            The new W (unchanged when it would go backwards or nothing is counted).
        """
        if self.delay_ms is None:
            return None
        delay = self.delay_ms
        timeout = self.idle_timeout_ms
        candidates = [
            None if max_ts is None else max_ts - delay
            for max_ts, active in local
            if not is_idle(active, now_wall_ms, timeout)
        ]
        candidates += [wm for wm, idle in self._remote.values() if not idle]
        counted, low = combine(candidates)
        if counted and low is not None and (self.current_ms is None or low > self.current_ms):
            self.current_ms = low
        return self.current_ms

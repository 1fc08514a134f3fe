"""Saying, within a minute, that a worker or a bounded run makes no progress.

A retry loop that cannot get anywhere (batches found stale again and again,
commits that fail, an outage) or a bounded run whose partitions stop moving
must never spin silently. `StallWatch` is pure: the loop tells it what
happened (a commit, a setback with its reason) and asks it, with the wall
clock's monotonic seconds, whether something must be said or the run stopped.

Progress is a batch this worker committed, or (bounded runs) any partition of
the run moving on, whoever committed it. Without setbacks a continuous query
that commits nothing is simply idle and nothing is said.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

#: Seconds without progress before it is said, and between two sayings.
WARN_AFTER_S = 60.0
#: Seconds without progress after which a bounded run stops (exit 1, one line).
STOP_AFTER_S = 600.0


@dataclass(frozen=True, slots=True)
class Stalled:
    """What to say: a warning, or (stop) the line the run stops with."""

    message: str
    stop: bool = False


@dataclass(slots=True)
class StallWatch:
    """The time of the last progress and the setbacks since (see the module docstring)."""

    now_s: float
    warn_after_s: float = WARN_AFTER_S
    stop_after_s: float | None = None
    _since: float = field(init=False)
    _said: float = field(init=False)
    _setbacks: int = field(default=0, init=False)
    _last: str | None = field(default=None, init=False)
    _offsets: dict[int, int] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        self._since = self._said = self.now_s

    def progressed(self, now_s: float) -> None:
        """Something moved on: the clock starts again."""
        self._since = self._said = now_s
        self._setbacks = 0
        self._last = None

    def setback(self, reason: str) -> None:
        """An attempt that did not commit (stale, failed, an outage), and why."""
        self._setbacks += 1
        self._last = reason

    def run_offsets(self, now_s: float, committed: Mapping[int, int]) -> None:
        """The query's committed offsets as last read: any change is progress."""
        if dict(committed) != self._offsets:
            if self._offsets:
                self.progressed(now_s)
            self._offsets = dict(committed)

    def check(
        self, now_s: float, behind: Mapping[int, tuple[int, int]] | None = None
    ) -> Stalled | None:
        """What to say now, if anything.

        Args:
            now_s: Monotonic seconds.
            behind: A bounded run's partitions short of their end: (committed, end).
                None for a continuous query.
        """
        waited = now_s - self._since
        if behind is None and not self._setbacks:
            return None  # idle, not stuck
        if behind is not None and not behind and not self._setbacks:
            return None
        if self.stop_after_s is not None and behind and waited >= self.stop_after_s:
            return Stalled(self._describe(waited, behind), stop=True)
        if now_s - self._said < self.warn_after_s:
            return None
        self._said = now_s
        return Stalled(self._describe(waited, behind))

    def _describe(self, waited: float, behind: Mapping[int, tuple[int, int]] | None) -> str:
        parts = [f"no progress for {waited:.0f}s"]
        if behind:
            spans = ", ".join(
                f"{p} at offset {done:,} of {end:,}" for p, (done, end) in sorted(behind.items())
            )
            parts.append(f"partitions not at the run's end: {spans}")
        if self._setbacks:
            parts.append(f"{self._setbacks} attempt(s) did not commit, the last: {self._last}")
        else:
            parts.append("no attempt failed: no worker is committing these partitions")
        return "; ".join(parts)

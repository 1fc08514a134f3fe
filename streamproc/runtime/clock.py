"""The wall clock: the one place the runtime reads wall time in epoch milliseconds.

The engine takes its clock as an argument (idle timeouts, wall-clock state
timeouts); tests pass a manual one.
"""

from __future__ import annotations

import time


def wall_clock_ms() -> int:
    """Current wall time in epoch milliseconds."""
    return time.time_ns() // 1_000_000

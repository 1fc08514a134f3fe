"""The wall clock: the one place the runtime reads wall time in epoch milliseconds;
and the processing-time trigger's ticks.

The engine takes its clock as an argument (idle timeouts, wall-clock state
timeouts); tests pass a manual one.
"""

from __future__ import annotations

import asyncio
import contextlib
import time


def wall_clock_ms() -> int:
    """Current wall time in epoch milliseconds."""
    return time.time_ns() // 1_000_000


async def wait_for_tick(next_tick: float, interval_s: float, stop: asyncio.Event) -> float:
    """Wait until `next_tick` (monotonic seconds) or a stop; the tick after it.

    A batch that overran its interval starts the next one at once.
    """
    delay = next_tick - time.monotonic()
    if delay > 0:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), delay)
    return max(next_tick + interval_s, time.monotonic())

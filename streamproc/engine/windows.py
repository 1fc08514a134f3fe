"""Event-time window arithmetic: half-open [start, end) windows aligned to the Unix epoch.

The batch loop inlines the same arithmetic; these functions are the readable definition
that tests check it against. Python's `%` floors, so negative (pre-1970) times need no
special case: `-1 - (-1 % 10) == -10`.

    tumbling size 10:   [-10, 0)   [0, 10)   [10, 20)
    event time -1  ------^
    event time  0  -------------------^
    event time 10  ------------------------------^
"""

from __future__ import annotations

from streamproc.engine.spec import WindowSpec


def window_start(event_ts_ms: int, slide_ms: int) -> int:
    """Start of the latest window that contains the event time (both event time, ms)."""
    return event_ts_ms - event_ts_ms % slide_ms


def window_starts(event_ts_ms: int, window: WindowSpec) -> list[int]:
    """Starts of every window `[k*slide, k*slide + size)` containing the event time.

    Latest window first. A tumbling window gives one start; a sliding one gives
    ceil(size/slide) or floor(size/slide) starts depending on where the time falls
    when the slide does not divide the size.

        size 10, slide 4, t = 9:   [0, 10) [4, 14) [8, 18)   -> [8, 4, 0]
        size 10, slide 4, t = 10:  [4, 14) [8, 18)           -> [8, 4]
    """
    start = event_ts_ms - event_ts_ms % window.slide_ms
    lowest_exclusive = event_ts_ms - window.size_ms
    out: list[int] = []
    while start > lowest_exclusive:
        out.append(start)
        start -= window.slide_ms
    return out


def open_window_starts(event_ts_ms: int, window: WindowSpec, watermark_ms: int | None) -> list[int]:
    """Starts of the windows containing the event time that are still open.

    A window is closed when its end is <= the global watermark (event time).
    """
    starts = window_starts(event_ts_ms, window)
    if watermark_ms is None:
        return starts
    return [s for s in starts if s + window.size_ms > watermark_ms]

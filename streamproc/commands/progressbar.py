"""A progress bar for bounded runs (once, availablenow) on a terminal: offsets done of total.

One line on stderr, redrawn in place with a carriage return, at most a few
times a second; nothing at all when stderr is not a terminal (a log file, a
pipe, a container's log), where the progress log lines say the same.

    [##########..........]  52%  520,000/1,000,000 offsets  81,250/s  ETA 6s

`render_bar` is pure; `ProgressBar` adds the rate limit (an injected wall
clock) and the stream. The rate is offsets done over the wall time since the
bar started, so the ETA is what a user waits.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TextIO

#: Wall seconds between two redraws (at most 4 a second).
MIN_REDRAW_S = 0.25
_WIDTH = 20
#: Erase the line the cursor is on.
_CLEAR = "\r\x1b[K"


def render_bar(done: int, total: int, elapsed_s: float, width: int = _WIDTH) -> str:
    """The bar's text: filled share, percent, offsets done of total, rate and ETA."""
    total = max(total, 0)
    done = min(max(done, 0), total)
    share = done / total if total else 1.0
    filled = int(share * width)
    rate = done / elapsed_s if elapsed_s > 0 else None
    if done >= total:
        eta = "done"
    elif rate:
        eta = f"ETA {_duration((total - done) / rate)}"
    else:
        eta = "ETA -"
    rate_text = "-" if rate is None else f"{rate:,.0f}"
    return (
        f"[{'#' * filled}{'.' * (width - filled)}] {share * 100:3.0f}%  "
        f"{done:,}/{total:,} offsets  {rate_text}/s  {eta}"
    )


def _duration(seconds: float) -> str:
    whole = int(seconds + 0.5)
    if whole < 60:
        return f"{whole}s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


class ProgressBar:
    """Draws `render_bar` on a terminal stream; does nothing on any other stream."""

    def __init__(
        self,
        stream: TextIO,
        *,
        clock: Callable[[], float] = time.monotonic,
        min_redraw_s: float = MIN_REDRAW_S,
    ) -> None:
        self._stream = stream
        self._clock = clock
        self._min_redraw_s = min_redraw_s
        self.enabled = _is_tty(stream)
        self._started = clock()
        self._drawn_at: float | None = None
        self._visible = False

    def update(self, done: int, total: int) -> None:
        """Redraw, unless the last redraw was less than `min_redraw_s` ago."""
        if not self.enabled:
            return
        now = self._clock()
        if self._drawn_at is not None and now - self._drawn_at < self._min_redraw_s:
            return
        self._draw(done, total, now)

    def finish(self, done: int, total: int) -> None:
        """Draw the last state and end the line."""
        if not self.enabled:
            return
        self._draw(done, total, self._clock())
        self._stream.write("\n")
        self._stream.flush()
        self._visible = False

    def clear(self) -> None:
        """Erase the bar (before a log line takes the line); the next update redraws it."""
        if self._visible:
            self._stream.write(_CLEAR)
            self._visible = False
            self._drawn_at = None

    def _draw(self, done: int, total: int, now: float) -> None:
        self._stream.write(_CLEAR + render_bar(done, total, now - self._started))
        self._stream.flush()
        self._drawn_at = now
        self._visible = True


class ClearBarFilter(logging.Filter):
    """A filter for the stderr log handler: a log line first erases the bar."""

    def __init__(self, bar: ProgressBar) -> None:
        super().__init__()
        self._bar = bar

    def filter(self, record: logging.LogRecord) -> bool:
        """Erase the bar; let every record through."""
        self._bar.clear()
        return True


def _is_tty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False

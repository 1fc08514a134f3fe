"""The garbage collector's pace while queries run.

A batch allocates a few container objects per record (the decoded dict,
state lists, rows). With CPython's default threshold (a young collection
every 700 net allocations) the collector walks them over and over while
they are alive: a third of a worker's CPU time on the benchmarks. Nearly
all of them are freed by reference counting; only reference cycles need
the collector. While a query runs, young collections come every
`YOUNG_THRESHOLD` allocations, and the objects that exist before it
started (modules, configuration) are left out of full collections
(`gc.freeze`). The previous settings come back when the last query stops.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

#: Net container allocations between young collections while a query runs.
YOUNG_THRESHOLD = 200_000

_active = 0
_saved: tuple[int, int, int] | None = None


@contextmanager
def batch_pace() -> Iterator[None]:
    """Collect garbage at a pace suited to batch processing, for the with-block."""
    global _active, _saved
    if _active == 0:
        _saved = gc.get_threshold()
        gc.freeze()
        gc.set_threshold(YOUNG_THRESHOLD, _saved[1], _saved[2])
    _active += 1
    try:
        yield
    finally:
        _active -= 1
        if _active == 0 and _saved is not None:
            gc.set_threshold(*_saved)
            gc.unfreeze()
            _saved = None

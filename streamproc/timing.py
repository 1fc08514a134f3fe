"""Where a run's time goes: seconds per phase of its micro-batches (wall time).

    fetch       waiting for and fetching records (includes idle waits)
    decode      UTF-8 JSON decoding, event-time guards, quality rules on records
    engine      folding records into state, the emit, preparing the commit
    dead_letters  flushing dead letters before the commit
    lock_wait   waiting for what every worker of the query shares (closing, the progress
                row's turn; other workers' commits)
    states      writing partial states
    sink        writing result rows (the table, or the Kafka topic)
    ledger      late rows, ledger rows, positions
    closing     W, closing or evicting windows
    transaction the whole commit in one call of the query's commit function
    commit      the transaction's commit

`lock` is the time a commit held what every worker of the query shares (closing,
the progress row until COMMIT, a shared merge): with `lock_wait`, its share of the
time spent on batches bounds how far more workers can speed the query up (1 / share).
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

#: The phases of a progress record, in batch order (runtime/query_progress.py).
PHASES = ("fetch", "decode", "engine", "checkpoint", "sink", "commit")

#: Runtime phase -> progress phase. `lock` is left out: it is the time shared locks
#: were held, which overlaps the phases of the commit.
_PHASE_OF = {
    "fetch": "fetch",
    "decode": "decode",
    "engine": "engine",
    "watermarks": "checkpoint",
    "lock_wait": "checkpoint",
    "states": "checkpoint",
    "ledger": "checkpoint",
    "closing": "checkpoint",
    "transaction": "checkpoint",
    "sink": "sink",
    "dead_letters": "sink",
    "commit": "commit",
}


def fold_phases(seconds: Mapping[str, float]) -> dict[str, float]:
    """Runtime phase seconds -> milliseconds per progress phase (every one of `PHASES`)."""
    out = dict.fromkeys(PHASES, 0.0)
    for name, value in seconds.items():
        phase = _PHASE_OF.get(name)
        if phase is not None:
            out[phase] += value * 1000
    return out


class PhaseTimes:
    """Seconds spent per phase, summed over a run."""

    def __init__(self) -> None:
        self.seconds: defaultdict[str, float] = defaultdict(float)
        # Batches are prepared on a worker thread while the loop commits.
        self._lock = threading.Lock()

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Count the time spent in the with-block to `name`."""
        started = time.perf_counter()
        try:
            yield
        finally:
            elapsed = time.perf_counter() - started
            with self._lock:
                self.seconds[name] += elapsed

    def snapshot(self) -> dict[str, float]:
        """The seconds per phase so far (a copy)."""
        with self._lock:
            return dict(self.seconds)

    def add(self, timings: Mapping[str, float]) -> None:
        """Add seconds measured elsewhere (the checkpoint's own phases)."""
        with self._lock:
            for name, seconds in timings.items():
                self.seconds[name] += seconds

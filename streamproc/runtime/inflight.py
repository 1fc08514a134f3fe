"""A prepared batch whose delivery runs while the loop prepares the next one."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field

from streamproc.runtime.prepare import PreparedBatch
from streamproc.runtime.routers import Position
from streamproc.sinks.base import CommitOutcome


@dataclass(slots=True)
class InFlight:
    """A prepared batch whose delivery is running."""

    prepared: PreparedBatch
    task: asyncio.Task[CommitOutcome]
    sent: set[Position]
    generation: int
    #: The worker's number for it (1, 2, ...): its log lines' batchId and its progress record's.
    number: int = 0
    #: perf_counter when its fetch began, and the seconds of its preparation's phases.
    fetch_started: float = 0.0
    prepare_seconds: Mapping[str, float] = field(default_factory=dict)
    #: perf_counter and wall clock (epoch ms) when its delivery ended: the loop
    #: settles it later (after the next tick, with processingtime).
    delivered_s: float | None = None
    delivered_ms: int | None = None

"""`streamproc status`: what a query has done and how far behind it is, as text or JSON.

Pure: no PostgreSQL, no Kafka, no clock. `status.py` reads the query's
checkpoint rows and the topic's end offsets and hands them in; this module
works out lag, rates and staleness, and `status_render.py` renders them.

Times: `*_ms` fields are epoch milliseconds. Watermarks and max event times
are event time; commit times and `checked_at_ms` are wall time, both from
the PostgreSQL server's clock, so a skewed client clock changes nothing.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Literal

from streamproc.config.durations import parse_duration_ms
from streamproc.sources.position import (
    OFFSET_POSITIONS,
    FilePosition,
    FilePositions,
    PositionFormat,
    SourcePosition,
)

#: Exit status of `status`: the query is fine (or has no lag).
EXIT_OK = 0
#: Exit status of `status`: the query, the config or a server cannot be read.
EXIT_ERROR = 1
#: Exit status of `status --stale-after`: no commit for that long while records wait.
EXIT_STALE = 2

#: What `status` says about the circuit breaker when no progress row records it
#: (a checkpoint from before the progress table): it lives in the worker's memory.
BREAKER_NOTE = (
    "not recorded in PostgreSQL; each worker exports streamproc_circuit_breaker_open "
    "on /metrics (1 while open or half-open)"
)


@dataclass(frozen=True, slots=True)
class PositionRow:
    """A partition's row in `streamproc_positions`: where it resumes."""

    partition: int
    next_offset: int
    watermark_ms: int | None
    max_event_ts_ms: int | None
    committed_at_ms: int


@dataclass(frozen=True, slots=True)
class LedgerBatch:
    """One committed batch: its progress-table row, or the sum of its ledger rows.

    A batch's ledger rows share `committed_at` (their transaction's start
    time, the server's `now()`), which is how they are told apart from other
    batches. Its progress row (same transaction, same counts) adds what the
    worker knew: the fields after `dead_lettered`, None or 0 without one.
    """

    committed_at_ms: int
    partitions: int
    records: int
    aggregated: int
    late: int
    bad: int
    filtered: int
    dead_lettered: int
    processed_rows_per_second: float | None = None
    state_rows_total: int | None = None
    #: The sink circuit breaker when the committing attempt went through.
    breaker: str | None = None
    #: Times the committing worker's breaker had opened since it started.
    breaker_opened: int = 0
    #: Attempts at the transaction before the one that committed.
    retries: int = 0
    #: host:pid of the worker that committed it.
    worker: str | None = None


@dataclass(frozen=True, slots=True)
class RunRow:
    """The query's newest bounded run (once, availablenow) in `streamproc_runs`."""

    run_id: int
    trigger: str
    status: str
    started_at_ms: int
    finished_at_ms: int | None


@dataclass(frozen=True, slots=True)
class CheckpointView:
    """What PostgreSQL holds of a query, read in one go.

    Attributes:
        registered_at_ms: When the query was first registered (wall time).
        global_watermark_ms: The committed global watermark W (event time).
        positions: One row per partition that ever committed.
        batches: The newest committed batches, newest first.
        run: The newest bounded run, if the query ever had one.
        now_ms: The server's clock when this was read.
        files: A file source's files, path by ordinal (`streamproc_files`), so that
            its positions show as file and byte; None for a Kafka source.
    """

    registered_at_ms: int
    global_watermark_ms: int | None
    positions: tuple[PositionRow, ...]
    batches: tuple[LedgerBatch, ...]
    run: RunRow | None
    now_ms: int
    files: Mapping[int, str] | None = None


@dataclass(frozen=True, slots=True)
class TopicEnd:
    """A partition as the broker has it: first stored offset and end offset."""

    log_start: int
    end: int


@dataclass(frozen=True, slots=True)
class PartitionStatus:
    """One partition of the source topic.

    Attributes:
        partition: The partition.
        committed_offset: The next offset the query reads (its position), None
            when it never committed in this partition.
        end_offset: The offset the next record will get, None when the broker
            has no such partition (any more).
        lag: Records between the two; None when unknown (no position under
            startingOffsets latest, or no end).
        watermark_ms: wm(p) after the partition's last commit (event time).
        max_event_ts_ms: Max event time the partition committed (event time).
        last_commit_ms: Wall time of the partition's last commit.
        position: The committed offset in the source's own terms (`sources.position`):
            a Kafka offset, or a file source's file and byte (its offset packs
            both); None when it never committed.
    """

    partition: int
    committed_offset: int | None
    end_offset: int | None
    lag: int | None
    watermark_ms: int | None
    max_event_ts_ms: int | None
    last_commit_ms: int | None
    position: SourcePosition | None = None

    @property
    def file(self) -> FilePosition | None:
        """A file source's position (file and byte); None for a Kafka partition."""
        return self.position if isinstance(self.position, FilePosition) else None


@dataclass(frozen=True, slots=True)
class QueryStatus:
    """A query's progress and lag at one instant (`checked_at_ms`, wall time)."""

    pipeline_id: str
    query: str
    topic: str
    checked_at_ms: int
    registered_at_ms: int
    global_watermark_ms: int | None
    partitions: tuple[PartitionStatus, ...]
    batches: tuple[LedgerBatch, ...]
    run: RunRow | None
    #: A file source: `topic` is its path, and positions are files and bytes.
    file_source: bool = False

    @property
    def total_lag(self) -> int:
        """Records waiting over every partition whose lag is known (negative lags excluded)."""
        return sum(p.lag for p in self.partitions if p.lag is not None and p.lag > 0)

    @property
    def lag_known(self) -> bool:
        """False when no partition has a known lag (a file source: byte offsets, no count)."""
        return any(p.lag is not None for p in self.partitions) or not self.partitions

    @property
    def last_commit_ms(self) -> int | None:
        """Wall time of the query's newest commit, any partition; None before the first."""
        stamps = [p.last_commit_ms for p in self.partitions if p.last_commit_ms is not None]
        return max(stamps) if stamps else None


def partition_lag(
    committed: int | None,
    end: TopicEnd | None,
    starting_offsets: Literal["earliest", "latest"],
) -> int | None:
    """Records of a partition the query has not committed yet.

    A partition without a position starts at its log start under earliest,
    so everything stored waits; under latest it starts wherever the end is
    when a worker first takes it, which nobody knows beforehand.
    """
    if end is None:
        return None
    if committed is not None:
        return end.end - committed
    return end.end - end.log_start if starting_offsets == "earliest" else None


def build_status(
    *,
    pipeline_id: str,
    query: str,
    topic: str,
    starting_offsets: Literal["earliest", "latest"],
    checkpoint: CheckpointView,
    ends: Mapping[int, TopicEnd],
) -> QueryStatus:
    """Put a query's checkpoint and its topic's ends side by side, partition by partition."""
    files = checkpoint.files
    # How the source's offsets read: a file source's pack a file and a byte.
    fmt: PositionFormat = OFFSET_POSITIONS if files is None else FilePositions(files)
    positions = {row.partition: row for row in checkpoint.positions}
    partitions = []
    for p in sorted(set(positions) | set(ends)):
        row = positions.get(p)
        committed = row.next_offset if row else None
        partitions.append(
            PartitionStatus(
                partition=p,
                committed_offset=committed,
                end_offset=ends[p].end if p in ends else None,
                lag=partition_lag(committed, ends.get(p), starting_offsets),
                watermark_ms=row.watermark_ms if row else None,
                max_event_ts_ms=row.max_event_ts_ms if row else None,
                last_commit_ms=row.committed_at_ms if row else None,
                position=None if committed is None else fmt.position(p, committed),
            )
        )
    return QueryStatus(
        pipeline_id=pipeline_id,
        query=query,
        topic=topic,
        checked_at_ms=checkpoint.now_ms,
        registered_at_ms=checkpoint.registered_at_ms,
        global_watermark_ms=checkpoint.global_watermark_ms,
        partitions=tuple(partitions),
        batches=checkpoint.batches,
        run=checkpoint.run,
        file_source=fmt.kind == "file",
    )


def batch_rates(batches: Sequence[LedgerBatch]) -> list[float | None]:
    """Records per second of each batch (newest first), over the wall time since the one before.

    The oldest batch given has no predecessor here, so its rate is None; so
    has a batch committed in the same millisecond as the one before it.
    """
    rates: list[float | None] = []
    for newer, older in pairwise(batches):
        seconds = (newer.committed_at_ms - older.committed_at_ms) / 1000
        rates.append(newer.records / seconds if seconds > 0 else None)
    if batches:
        rates.append(None)
    return rates


def recent_rate(batches: Sequence[LedgerBatch]) -> float | None:
    """Records per second over the batches given (newest first), oldest's records excluded.

    The records of the oldest batch arrived before the span measured, so they
    are not counted; None with fewer than two batches.
    """
    if len(batches) < 2:
        return None
    seconds = (batches[0].committed_at_ms - batches[-1].committed_at_ms) / 1000
    records = sum(b.records for b in batches[:-1])
    return records / seconds if seconds > 0 else None


@dataclass(frozen=True, slots=True)
class Staleness:
    """The answer to `--stale-after`: stale or not, and why in words."""

    stale: bool
    reason: str


def staleness(status: QueryStatus, stale_after_ms: int) -> Staleness:
    """Stale when records wait and the query has not committed for `stale_after_ms` (wall).

    A query that never committed counts from its registration. A query
    without lag is never stale, however long ago it committed: it is idle,
    not stuck.
    """
    lag = status.total_lag
    last = status.last_commit_ms
    since = last if last is not None else status.registered_at_ms
    idle_ms = max(0, status.checked_at_ms - since)
    what = "no commit" if last is not None else "no commit since it was registered"
    if not status.lag_known:
        # A file source's offsets are bytes across files: nothing says whether lines wait,
        # so an idle query cannot be told from a stuck one here (the progress table can).
        return Staleness(False, f"lag unknown ({what} for {age_text(idle_ms)})")
    if lag == 0:
        return Staleness(False, f"no lag ({what} for {age_text(idle_ms)})")
    if idle_ms >= stale_after_ms:
        return Staleness(True, f"stale: {what} for {age_text(idle_ms)} while {lag} record(s) wait")
    return Staleness(False, f"{lag} record(s) wait; last commit {age_text(idle_ms)} ago")


def exit_status(status: QueryStatus, stale_after_ms: int | None) -> int:
    """EXIT_STALE when `--stale-after` was given and the query is stale, else EXIT_OK."""
    if stale_after_ms is not None and staleness(status, stale_after_ms).stale:
        return EXIT_STALE
    return EXIT_OK


_ZERO = re.compile(r"\s*0+(?:\.0*)?\s*([A-Za-z]+)\s*")


def parse_stale_after(text: str) -> int:
    """A `--stale-after` duration in milliseconds; unlike config durations, 0 is allowed.

    Raises:
        DurationError: not a duration (one line naming the text and the units).
    """
    zero = _ZERO.fullmatch(text)
    if zero is not None:
        parse_duration_ms(f"1 {zero.group(1)}")  # the unit must still be one
        return 0
    return parse_duration_ms(text)


def age_text(ms: int) -> str:
    """A wall-time span, short: 850 ms, 12.3 s, 4 min 5 s, 2 h 3 min, 3 d 4 h."""
    if ms < 1_000:
        return f"{max(ms, 0)} ms"
    seconds = ms / 1000
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs} s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h {minutes} min"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h"

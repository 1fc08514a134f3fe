"""`streamproc status`: what a query has done and how far behind it is, as text or JSON.

Pure: no PostgreSQL, no Kafka, no clock. `status_read.py` reads the query's
checkpoint rows and the topic's end offsets and hands them in; this module
works out lag, rates and staleness, and renders them.

Times: `*_ms` fields are epoch milliseconds. Watermarks and max event times
are event time; commit times and `checked_at_ms` are wall time, both from
the PostgreSQL server's clock, so a skewed client clock changes nothing.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import pairwise
from typing import Any, Literal

from streamproc.config.durations import parse_duration_ms

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
    """

    registered_at_ms: int
    global_watermark_ms: int | None
    positions: tuple[PositionRow, ...]
    batches: tuple[LedgerBatch, ...]
    run: RunRow | None
    now_ms: int


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
    """

    partition: int
    committed_offset: int | None
    end_offset: int | None
    lag: int | None
    watermark_ms: int | None
    max_event_ts_ms: int | None
    last_commit_ms: int | None


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
        return Staleness(False, f"lag unknown ({what} for {_age(idle_ms)})")
    if lag == 0:
        return Staleness(False, f"no lag ({what} for {_age(idle_ms)})")
    if idle_ms >= stale_after_ms:
        return Staleness(True, f"stale: {what} for {_age(idle_ms)} while {lag} record(s) wait")
    return Staleness(False, f"{lag} record(s) wait; last commit {_age(idle_ms)} ago")


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


# ------------------------------------------------------------------ rendering


def to_dict(status: QueryStatus, stale_after_ms: int | None = None) -> dict[str, Any]:
    """The status as JSON-ready values (camelCase, as the progress record's JSON)."""
    rates = batch_rates(status.batches)
    last = status.last_commit_ms
    out: dict[str, Any] = {
        "pipelineId": status.pipeline_id,
        "name": status.query,
        "topic": status.topic,
        "checkedAt": _iso(status.checked_at_ms),
        "registeredAt": _iso(status.registered_at_ms),
        "lastCommit": _iso(last),
        "lastCommitAgeSeconds": None if last is None else (status.checked_at_ms - last) / 1000,
        "globalWatermark": _iso(status.global_watermark_ms),
        "eventTimeLagSeconds": _event_time_lag_s(status),
        "totalLag": status.total_lag if status.lag_known else None,
        "partitions": [
            {
                "partition": p.partition,
                "committedOffset": p.committed_offset,
                "endOffset": p.end_offset,
                "lag": p.lag,
                "watermark": _iso(p.watermark_ms),
                "maxEventTime": _iso(p.max_event_ts_ms),
                "lastCommit": _iso(p.last_commit_ms),
            }
            for p in status.partitions
        ],
        "recentBatches": [
            {
                "committedAt": _iso(b.committed_at_ms),
                "partitions": b.partitions,
                "numInputRows": b.records,
                "inputRowsPerSecond": rate,
                "processedRowsPerSecond": b.processed_rows_per_second,
                "stateRowsTotal": b.state_rows_total,
                "worker": b.worker,
                "retries": b.retries,
                "rows": {
                    "aggregated": b.aggregated,
                    "late": b.late,
                    "bad": b.bad,
                    "filtered": b.filtered,
                    "deadLettered": b.dead_lettered,
                },
            }
            for b, rate in zip(status.batches, rates, strict=True)
        ],
        "inputRowsPerSecond": recent_rate(status.batches),
        "boundedRun": None if status.run is None else _run_dict(status.run),
        "circuitBreaker": _breaker_dict(status.batches),
    }
    if stale_after_ms is not None:
        verdict = staleness(status, stale_after_ms)
        out["stale"] = {
            "staleAfterSeconds": stale_after_ms / 1000,
            "stale": verdict.stale,
            "reason": verdict.reason,
        }
    return out


def to_json(status: QueryStatus, stale_after_ms: int | None = None) -> str:
    """The status as one JSON document (indented: it is read by people and by jq)."""
    return json.dumps(to_dict(status, stale_after_ms), indent=2)


def text_lines(status: QueryStatus, stale_after_ms: int | None = None) -> list[str]:
    """The status for a terminal: a header, one line per partition, recent batches, verdict."""
    now = status.checked_at_ms
    last = status.last_commit_ms
    lines = [
        f"query {status.query} (pipeline {status.pipeline_id}), topic {status.topic}, "
        f"at {_iso(now)}",
        f"  last commit {_when(last, now)}; global watermark "
        f"{_iso(status.global_watermark_ms) or '-'}"
        + _event_lag_text(status)
        + (
            f"; total lag {status.total_lag} record(s)"
            if status.lag_known
            else "; total lag unknown (file source)"
        ),
        "",
    ]
    table = [("partition", "committed", "end", "lag", "watermark", "last commit")]
    for p in status.partitions:
        table.append(
            (
                str(p.partition),
                _num(p.committed_offset),
                _num(p.end_offset),
                _num(p.lag),
                _iso(p.watermark_ms) or "-",
                _when(p.last_commit_ms, now),
            )
        )
    lines += _columns(table, left=frozenset({4, 5}))
    for p in status.partitions:
        if p.lag is not None and p.lag < 0:
            lines.append(
                f"  partition {p.partition} ends below the committed offset: the topic was "
                "re-created or truncated (the next run refuses it)"
            )
    lines.append("")
    lines += _batch_lines(status)
    if status.run is not None:
        run = status.run
        finished = f", finished {_iso(run.finished_at_ms)}" if run.finished_at_ms else ""
        lines.append(
            f"bounded run {run.run_id} ({run.trigger}): {run.status}, started "
            f"{_iso(run.started_at_ms)}{finished}"
        )
    lines.append(f"circuit breaker: {breaker_text(status.batches)}")
    if stale_after_ms is not None:
        lines.append(staleness(status, stale_after_ms).reason)
    return lines


def _batch_lines(status: QueryStatus) -> list[str]:
    if not status.batches:
        return ["no committed batch yet"]
    overall = recent_rate(status.batches)
    rate_text = f": {overall:,.0f} records/s" if overall is not None else ""
    lines = [f"last {len(status.batches)} batch(es), newest first{rate_text}"]
    headings = "committed partitions records rec/s proc_rec/s aggregated late bad filt states"
    table = [tuple(headings.split())]
    for b, rate in zip(status.batches, batch_rates(status.batches), strict=True):
        proc = b.processed_rows_per_second
        table.append(
            (
                _iso(b.committed_at_ms) or "-",
                str(b.partitions),
                str(b.records),
                "-" if rate is None else f"{rate:,.0f}",
                "-" if proc is None else f"{proc:,.0f}",
                str(b.aggregated),
                str(b.late),
                str(b.bad),
                str(b.filtered),
                _num(b.state_rows_total),
            )
        )
    return lines + _columns(table, left=frozenset({0}))


def breaker_text(batches: Sequence[LedgerBatch]) -> str:
    """The breaker as the newest progress row saw it, and the retries of the batches shown.

    A worker records its breaker only in the rows it commits: while the
    breaker is open nothing commits, so the newest row is as old as the last
    commit (which `--stale-after` watches).
    """
    if not batches or batches[0].breaker is None:
        return BREAKER_NOTE
    newest = batches[0]
    retries = sum(b.retries for b in batches)
    return (
        f"{newest.breaker} at the last commit ({newest.worker or 'a worker'}; it opened "
        f"{newest.breaker_opened} time(s) since that worker started); {retries} "
        f"retried transaction attempt(s) in the last {len(batches)} batch(es)"
    )


def _breaker_dict(batches: Sequence[LedgerBatch]) -> dict[str, Any]:
    if not batches or batches[0].breaker is None:
        return {"state": None, "recorded": False, "note": BREAKER_NOTE}
    newest = batches[0]
    return {
        "state": newest.breaker,
        "recorded": True,
        "at": _iso(newest.committed_at_ms),
        "worker": newest.worker,
        "openedSinceWorkerStart": newest.breaker_opened,
        "retriesInRecentBatches": sum(b.retries for b in batches),
    }


def _columns(rows: Sequence[Sequence[str]], left: frozenset[int] = frozenset()) -> list[str]:
    """Rows as columns two spaces apart: numbers right-aligned, columns in `left` left-aligned."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    out = []
    for row in rows:
        cells = [
            cell.ljust(width) if i in left else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        out.append(("  " + "  ".join(cells)).rstrip())
    return out


def _run_dict(run: RunRow) -> dict[str, Any]:
    return {
        "runId": run.run_id,
        "trigger": run.trigger,
        "status": run.status,
        "startedAt": _iso(run.started_at_ms),
        "finishedAt": _iso(run.finished_at_ms),
    }


def _event_time_lag_s(status: QueryStatus) -> float | None:
    """Wall clock minus W: how far behind real time the results are (seconds)."""
    w = status.global_watermark_ms
    return None if w is None else (status.checked_at_ms - w) / 1000


def _event_lag_text(status: QueryStatus) -> str:
    lag = _event_time_lag_s(status)
    return "" if lag is None else f" ({_age(int(lag * 1000))} behind the clock)"


def _when(ms: int | None, now_ms: int) -> str:
    return "never" if ms is None else f"{_iso(ms)} ({_age(now_ms - ms)} ago)"


def _age(ms: int) -> str:
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


def _num(value: int | None) -> str:
    return "-" if value is None else str(value)


def _iso(ms: int | None) -> str | None:
    if ms is None:
        return None
    stamp = datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")
    return stamp.replace("+00:00", "Z")

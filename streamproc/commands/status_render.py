"""`streamproc status` rendered: text for a terminal, one JSON document for a machine (pure).

Times: as in `status_model.py`, `*_ms` values are epoch milliseconds; they are shown
as ISO-8601 UTC, and spans of wall time in short words (`12.3 s`, `4 min 5 s`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from streamproc.commands.status_model import (
    BREAKER_NOTE,
    LedgerBatch,
    PartitionStatus,
    QueryStatus,
    RunRow,
    age_text,
    batch_rates,
    recent_rate,
    staleness,
)


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
        "partitions": [_partition_dict(p, status.file_source) for p in status.partitions],
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


def _partition_dict(p: PartitionStatus, file_source: bool) -> dict[str, Any]:
    out: dict[str, Any] = {
        "partition": p.partition,
        "committedOffset": None if file_source else p.committed_offset,
        "endOffset": p.end_offset,
        "lag": p.lag,
    }
    if file_source:
        # The committed offset packs file and byte (sources.position): shown apart.
        out["file"] = None if p.file is None else p.file.path
        out["fileOrdinal"] = None if p.file is None else p.file.ordinal
        out["byte"] = None if p.file is None else p.file.byte
    out["watermark"] = _iso(p.watermark_ms)
    out["maxEventTime"] = _iso(p.max_event_ts_ms)
    out["lastCommit"] = _iso(p.last_commit_ms)
    return out


def to_json(status: QueryStatus, stale_after_ms: int | None = None) -> str:
    """The status as one JSON document (indented: it is read by people and by jq)."""
    return json.dumps(to_dict(status, stale_after_ms), indent=2)


def text_lines(status: QueryStatus, stale_after_ms: int | None = None) -> list[str]:
    """The status for a terminal: a header, one line per partition, recent batches, verdict."""
    now = status.checked_at_ms
    last = status.last_commit_ms
    lines = [
        f"query {status.query} (pipeline {status.pipeline_id}), "
        f"{'path' if status.file_source else 'topic'} {status.topic}, at {_iso(now)}",
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
    lines += _partition_lines(status)
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


def _partition_lines(status: QueryStatus) -> list[str]:
    """One line per partition: its offsets and lag, or for a file source its file and byte."""
    now = status.checked_at_ms
    if status.file_source:
        files = [("partition", "file", "byte", "watermark", "last commit")]
        for p in status.partitions:
            where = p.file
            files.append(
                (
                    str(p.partition),
                    "-" if where is None else where.file,
                    "-" if where is None else str(where.byte),
                    _iso(p.watermark_ms) or "-",
                    _when(p.last_commit_ms, now),
                )
            )
        return _columns(files, left=frozenset({1, 3, 4}))
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
    return _columns(table, left=frozenset({4, 5}))


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
    return "" if lag is None else f" ({age_text(int(lag * 1000))} behind the clock)"


def _when(ms: int | None, now_ms: int) -> str:
    return "never" if ms is None else f"{_iso(ms)} ({age_text(now_ms - ms)} ago)"


def _num(value: int | None) -> str:
    return "-" if value is None else str(value)


def _iso(ms: int | None) -> str | None:
    if ms is None:
        return None
    stamp = datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")
    return stamp.replace("+00:00", "Z")

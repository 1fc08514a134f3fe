"""What a batch job did, and the closing summary in plain words (pure)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

#: Distinct reasons listed in the summary; the rest are tallied on one line.
MAX_REASONS = 10


@dataclass
class BatchReport:
    """The counts of one batch job.

    Accounting: read = used + bad + filtered, where used records went into the
    rows (aggregated, or loaded as they are). Rows the table refused are counted
    apart: a row of an aggregation stands for many records.

    Attributes:
        source: the topic or the path read.
        aggregating: True when rows are aggregates, False when they are the records.
        bad: (where, reason) of every bad input record, in input order.
        refused: (where, reason) of every row the table refused.
        incomplete: files whose last line had no newline (ignored), with its size.
        deleted: rows overwrite removed from the table before the load.
    """

    source: str
    aggregating: bool
    read: int = 0
    used: int = 0
    filtered: int = 0
    bad: list[tuple[str, str]] = field(default_factory=list)
    rows: int = 0
    written: int = 0
    deleted: int = 0
    refused: list[tuple[str, str]] = field(default_factory=list)
    incomplete: list[str] = field(default_factory=list)
    dead_letters: int = 0
    dead_letter_topic: str | None = None


def summary_lines(
    report: BatchReport, pipeline_id: str, table: str, mode: str, elapsed_s: float
) -> list[str]:
    """The closing summary of a batch job, one fact per line."""
    used = (
        f"aggregated {report.used} into {report.rows} row(s)"
        if report.aggregating
        else f"loaded as rows {report.used}"
    )
    lines = [
        f"batch job {pipeline_id}: {report.read} record(s) read from {report.source} "
        f"in {elapsed_s:.1f}s",
        f"  {used}, bad {len(report.bad)}, filtered {report.filtered}",
        f"  table {table} ({mode}): {report.written} row(s) written, "
        f"{len(report.refused)} rejected by the table"
        + (f", {report.deleted} previous row(s) deleted" if mode == "overwrite" else ""),
    ]
    if report.dead_letter_topic:
        lines.append(f"  dead letters sent to {report.dead_letter_topic}: {report.dead_letters}")
    lines += [f"  bad: {line}" for line in reason_lines(report.bad)]
    lines += [f"  rejected: {line}" for line in reason_lines(report.refused)]
    lines += [f"  ignored: {item}" for item in report.incomplete]
    return lines


def reason_lines(items: list[tuple[str, str]]) -> list[str]:
    """Reasons with their counts, most frequent first, each with its first position."""
    counts = Counter(reason for _, reason in items)
    first: dict[str, str] = {}
    for where, reason in items:
        first.setdefault(reason, where)
    ranked = counts.most_common()
    out = [f"{n} x {reason} (first: {first[reason]})" for reason, n in ranked[:MAX_REASONS]]
    rest = ranked[MAX_REASONS:]
    if rest:
        out.append(f"{sum(n for _, n in rest)} more, with {len(rest)} other reason(s)")
    return out

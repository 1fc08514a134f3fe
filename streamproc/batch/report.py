"""What a batch job did, and the closing summary in plain words (pure)."""

from __future__ import annotations

import re
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
    #: A file source: how many files the path named (None for Kafka).
    files: int | None = None
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
    files = "" if report.files is None else f" ({report.files} file(s))"
    lines = [
        f"batch job {pipeline_id}: {report.read} record(s) read from {report.source}{files} "
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


_QUOTED = r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\""
#: `COLUMN: VALUE is ...`, the shape of the engine's reasons: VALUE quoted (or cut
#: short by `show`, its closing quote gone), an object, a list, or one token.
_LEADING_VALUE = re.compile(
    rf"^(?P<head>[A-Za-z_][\w.]*: )"
    rf"(?P<value>{_QUOTED}|'[^']*?\.\.\.|\{{.*?\}}|\[.*?\]|\S+)(?P<tail> is .*)$"
)
#: The decoder's reasons, whose detail says where in the bytes it failed.
_DECODER_DETAIL = re.compile(r"^(?P<head>value: not (?:JSON|UTF-8) )\((?P<value>.*)\)$")


def reason_group(reason: str) -> tuple[str, str | None]:
    """A reason without the value it quotes, and that value (None when it quotes none).

    `event_time: 'yesterday' is not an ISO-8601 time` and `event_time: 'soon' is not
    an ISO-8601 time` are one reason, `event_time: ... is not an ISO-8601 time`.
    """
    decoder = _DECODER_DETAIL.fullmatch(reason)
    if decoder is not None:
        return f"{decoder['head']}(...)", decoder["value"]
    found = _LEADING_VALUE.fullmatch(reason)
    if found is not None:
        return f"{found['head']}...{found['tail']}", found["value"]
    values = re.findall(_QUOTED, reason)
    if values:
        return re.sub(_QUOTED, "'...'", reason), ", ".join(values)
    return reason, None


def reason_lines(items: list[tuple[str, str]]) -> list[str]:
    """Reasons with their counts, most frequent first, each with its first position.

    Reasons that differ only in the value they quote are one line, with the first
    record's position and value as its example.
    """
    counts: Counter[str] = Counter()
    first: dict[str, tuple[str, str, str | None]] = {}
    distinct: dict[str, set[str]] = {}
    for where, reason in items:
        group, value = reason_group(reason)
        counts[group] += 1
        first.setdefault(group, (where, reason, value))
        distinct.setdefault(group, set()).add(reason)
    out = []
    ranked = counts.most_common()
    for group, n in ranked[:MAX_REASONS]:
        where, reason, value = first[group]
        if len(distinct[group]) == 1:
            out.append(f"{n} x {reason} (first: {where})")
        else:
            out.append(f"{n} x {group} (first: {where}, {value})")
    rest = ranked[MAX_REASONS:]
    if rest:
        out.append(f"{sum(n for _, n in rest)} more, with {len(rest)} other reason(s)")
    return out

"""The independent model of session windows (issue 22), beside tests/reference.py.

Written from the semantics alone (Spark's `session_window`, STREAMING.md), with no
engine code and no merging: it keeps every accepted record, and whenever it needs the
sessions of a key it sorts that key's records by event time and cuts wherever two
neighbours are `gap` or more apart. A session spans [first event time, last + gap).

Records are fed in phases, one phase being what one `process` call takes, in the
order it takes them. Before a phase W (the global watermark) is raised to the
phase's floor, if any (what restoring a committed W does), and to the lowest
partition's highest event time minus the delay once every partition has one; W
never goes back. Then, per record in order:

* bad (tests/reference.py `record_is_bad`) -> bad;
* event time older than its partition's highest so far minus the delay -> late,
  "event time older than watermark";
* otherwise, with W as of the start of the phase: when its own session [t, t + gap)
  would end at or below W, or it lies within the gap of a closed session of its key
  (a session of the records accepted so far whose end <= W: start - gap < t < end)
  -> late, "session closed";
* otherwise accepted.

The final table holds every session of the accepted records (append: those whose end
<= the final W), with the aggregates of tests/reference.py.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from itertools import pairwise
from typing import Any

from tests.reference import (
    LATE_REASON,
    Accepted,
    Late,
    Outcome,
    Query,
    TypedKey,
    aggregate,
    event_ms,
    record_is_bad,
    typed,
)

SESSION_CLOSED = "session closed"

#: One `process` call: (a floor W is raised to first, or None; [(partition, record)]).
Phase = tuple[int | None, Sequence[tuple[int, Any]]]


def sessions_of(records: Sequence[Accepted], gap_ms: int) -> list[list[Accepted]]:
    """A key's records cut into sessions: sorted by event time, cut at gaps >= gap_ms."""
    out: list[list[Accepted]] = []
    for r in sorted(records, key=lambda r: r.ts):
        if out and r.ts - out[-1][-1].ts < gap_ms:
            out[-1].append(r)
        else:
            out.append([r])
    return out


def assert_no_overlap(table: Iterable[tuple[Any, ...]]) -> None:
    """No two sessions of one key overlap: rows keyed (*group values, start, end)."""
    by_key: dict[tuple[Any, ...], list[tuple[int, int]]] = {}
    for *key, start, end in table:
        assert start is not None and end is not None
        by_key.setdefault(tuple(key), []).append((start, end))
    for key, spans in by_key.items():
        spans.sort()
        for (_, e1), (s2, _) in pairwise(spans):
            assert e1 <= s2, f"two overlapping sessions of {key}: {spans}"


def bounds(session: Sequence[Accepted], gap_ms: int) -> tuple[int, int]:
    """[first event time, last event time + gap) of a session."""
    return session[0].ts, session[-1].ts + gap_ms


def expected_sessions(
    query: Query, gap_ms: int, partitions: Sequence[int], phases: Sequence[Phase]
) -> Outcome:
    """Classify every record and compute the final session table.

    Args:
        query: The query (its window fields unused).
        gap_ms: The session gap.
        partitions: Every partition, all known from the start (they hold W back).
        phases: The records as the engine takes them (see the module docstring).

    Returns:
        The final table, the late and the bad records, the final W.
    """
    out = Outcome()
    delay = query.delay_ms
    highest: dict[int, int | None] = dict.fromkeys(partitions)
    next_offset = dict.fromkeys(partitions, 0)
    accepted: dict[TypedKey, list[Accepted]] = {}
    w: int | None = None

    def raise_w(floor: int | None) -> int | None:
        if delay is None:
            return None  # no watermark: nothing closes
        candidates = [c for c in (w, floor) if c is not None]
        marks = [m for m in highest.values() if m is not None]
        if len(marks) == len(highest):
            candidates.append(min(marks) - delay)
        return max(candidates) if candidates else None

    for floor, items in phases:
        w = raise_w(floor)
        for partition, record in items:
            offset = next_offset[partition]
            next_offset[partition] += 1
            if record_is_bad(query, record):
                out.bad.add((partition, offset))
                continue
            assert query.time_column is not None
            ts = event_ms(record.get(query.time_column), query.time_format)
            assert ts is not None
            top = highest[partition]
            if delay is not None and top is not None and ts < top - delay:
                out.late[(partition, offset)] = Late(ts, top - delay, LATE_REASON, record)
                continue
            key = typed(tuple(record.get(c) for c in query.group_by))
            if w is not None:
                closed = [
                    b
                    for s in sessions_of(accepted.get(key, []), gap_ms)
                    if (b := bounds(s, gap_ms))[1] <= w
                ]
                if ts + gap_ms <= w or any(start - gap_ms < ts < end for start, end in closed):
                    out.late[(partition, offset)] = Late(ts, w, SESSION_CLOSED, record)
                    continue
            highest[partition] = ts if top is None else max(top, ts)
            accepted.setdefault(key, []).append(Accepted(partition, offset, ts, record))
    w = raise_w(None)
    out.watermark_ms = w
    for key, records in accepted.items():
        for session in sessions_of(records, gap_ms):
            start, end = bounds(session, gap_ms)
            if query.output_mode == "append" and (w is None or end > w):
                continue
            out.typed_table[(key, start, end)] = aggregate(query, session)
    return out


def one_phase(streams: Mapping[int, Sequence[Any]]) -> list[Phase]:
    """Every partition's records, partition after partition, as one phase."""
    return [(None, [(p, r) for p, records in streams.items() for r in records])]

"""The one independent model of what a query must produce, for every test layer.

Written from the semantics alone (STREAMING.md), with no engine
code: it sees every partition's whole stream at once, walks it record by record, and
computes the final table from scratch per (group, window) from the list of records in
it. No state, no merging, no batches: if the product and this disagree, the product is
wrong (or this file is, and it is short enough to check by eye).

Per partition, in offset order: a record is bad when it cannot be read (not an object,
no valid event time, a group value that is not a JSON scalar, a number an aggregate
cannot take), late when its event time is older than the partition's highest event
time so far minus the delay, else aggregated into every window that contains it. The
global watermark is the lowest partition's, and append mode keeps only the windows it
closed.

Group values compare as JSON does in the product: ``true``, ``1`` and ``"1"`` are three
groups, ``1`` and ``1.0`` one (`typed`).

Scope: no idle timeout (it depends on wall time); every partition is known from the
start. A state timeout depends on when triggers fire: `expected_in_phases` models it
for a windowed query, given the trigger boundaries (one phase = one trigger).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple

MIN_MS = int(datetime(1, 1, 1, tzinfo=UTC).timestamp()) * 1000
MAX_MS = int(datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC).timestamp()) * 1000 + 999
LIMIT = 1e290
LATE_REASON = "event time older than watermark"
EXPIRED_REASON = "state expired"

#: A type-exact group key: ((JSON type name, value), ...).
TypedKey = tuple[tuple[str, Any], ...]
#: A row of a typed table: (typed group key, window start ms, window end ms).
TableKey = tuple[TypedKey, int | None, int | None]
#: One aggregate: (output column, input column or None for `*`, function).
Aggregation = tuple[str, str | None, str]


@dataclass(frozen=True)
class Query:
    """A query as the model reads it (and as tests build plans from it).

    Attributes:
        group_by: Group-by columns; a missing column groups as null.
        aggregations: (output, column or None for `*`, function) in result order.
        time_column: The event-time field; None: no event time (no watermark, no window).
        delay_ms: Watermark delay; None: no watermark (nothing late, nothing closes).
        size_ms: Window size; None: not windowed.
        slide_ms: Window slide; None: tumbling (the size).
        output_mode: append, update or complete.
        time_format: auto, iso8601, epoch_millis or epoch_seconds.
        state_timeout_ms: A windowed query's state timeout (see `expected_in_phases`).
    """

    group_by: tuple[str, ...]
    aggregations: tuple[Aggregation, ...]
    time_column: str | None = "event_time"
    delay_ms: int | None = None
    size_ms: int | None = None
    slide_ms: int | None = None
    output_mode: str = "update"
    time_format: str = "auto"
    state_timeout_ms: int | None = None

    @classmethod
    def of(cls, spec: Any) -> Query:
        """The model's view of an engine `QuerySpec` (only its fields are read).

        Args:
            spec: A `streamproc.engine.QuerySpec`.

        Returns:
            The same query as a `Query`.
        """
        window = spec.window
        return cls(
            group_by=tuple(spec.group_by),
            aggregations=tuple((a.output, a.column, a.func) for a in spec.aggregations),
            time_column=spec.event_time_column,
            delay_ms=spec.delay_ms,
            size_ms=window.size_ms if window else None,
            slide_ms=window.slide_ms if window else None,
            output_mode=spec.output_mode,
            time_format=spec.event_time_format,
            state_timeout_ms=spec.state_timeout_ms,
        )


class Late(NamedTuple):
    """A late record: what the late side table or dead letter must say about it."""

    event_ms: int
    watermark_ms: int  # the partition's watermark when the record came
    reason: str
    record: Any


@dataclass
class Accepted:
    """A record that was aggregated."""

    partition: int
    offset: int
    ts: int
    record: Mapping[str, Any]


@dataclass
class Outcome:
    """What the model says a query must produce.

    Attributes:
        typed_table: The final table, {(typed group key, window start, window end): values}.
        late: {(partition, offset): Late} of every late record.
        bad: (partition, offset) of every bad record.
        watermark_ms: The final global watermark, or None.
    """

    typed_table: dict[TableKey, tuple[Any, ...]] = field(default_factory=dict)
    late: dict[tuple[int, int], Late] = field(default_factory=dict)
    bad: set[tuple[int, int]] = field(default_factory=set)
    watermark_ms: int | None = None

    @property
    def table(self) -> dict[tuple[Any, ...], tuple[Any, ...]]:
        """The final table as {(*group values, window start, window end): values}.

        Group values are plain (1.0 as 1); fails if two groups would share a plain key
        (true and 1): compare `typed_table` then.
        """
        out: dict[tuple[Any, ...], tuple[Any, ...]] = {}
        for (key, ws, we), values in self.typed_table.items():
            plain = (*(v for _, v in key), ws, we)
            assert plain not in out, f"groups {key} and another share the plain key {plain}"
            out[plain] = values
        return out

    @property
    def late_reasons(self) -> dict[tuple[int, int], str]:
        """{(partition, offset): reason} of every late record."""
        return {position: late.reason for position, late in self.late.items()}


# ----------------------------------------------------------------------------- reading


def typed(values: Sequence[Any]) -> TypedKey:
    """Group values as JSON compares them: True, 1 and "1" apart, 1 and 1.0 equal."""
    out: list[tuple[str, Any]] = []
    for v in values:
        if type(v) in (int, float):
            out.append(("number", int(v) if type(v) is float and v.is_integer() else v))
        else:
            out.append((type(v).__name__, v))
    return tuple(out)


def event_ms(value: Any, fmt: str = "auto") -> int | None:
    """Event time in epoch ms, or None when it is not a valid one. Deliberately naive."""
    ms: int | None = None
    if isinstance(value, bool) or value is None:
        return None
    if fmt in ("auto", "iso8601") and isinstance(value, str):
        if len(value) in (4, 7) and value[:4].isdigit() and value.isascii():
            # A year, or a year and month, alone: the first instant of it.
            value = value + ("-01-01" if len(value) == 4 else "-01")
        if True:
            try:
                moment = datetime.fromisoformat(value)
            except ValueError:
                return None
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=UTC)
            delta = moment - datetime(1970, 1, 1, tzinfo=UTC)
            micros = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
            ms = micros // 1000  # floor: 1969-12-31T23:59:59.9995 is -1 ms
    elif fmt in ("auto", "epoch_millis") and isinstance(value, int):
        ms = value
    elif fmt == "epoch_seconds" and isinstance(value, int):
        ms = value * 1000
    if ms is None or not MIN_MS <= ms <= MAX_MS:
        return None
    return ms


def parse_ts(value: Any) -> int:
    """An event time (ISO-8601 text or epoch ms) in epoch ms; raises if it is not one."""
    ms = event_ms(value)
    if ms is None:
        raise ValueError(f"not an event time: {value!r}")
    return ms


def is_number(value: Any) -> bool:
    """A JSON number that is finite (bool is not a number)."""
    return type(value) in (int, float) and math.isfinite(value)


def valid_group_value(value: Any) -> bool:
    """str, int, bool, None or a finite float."""
    return value is None or type(value) in (str, int, bool) or is_number(value)


def record_is_bad(query: Query, record: Any) -> bool:
    """True when the record must be rejected (before any lateness)."""
    if not isinstance(record, Mapping):
        return True
    column = query.time_column
    if column is not None and event_ms(record.get(column), query.time_format) is None:
        return True
    if not all(valid_group_value(record.get(c)) for c in query.group_by):
        return True
    for _, agg_column, func in query.aggregations:
        value = record.get(agg_column) if agg_column else None
        if value is None:
            continue
        if func in ("sum", "avg", "min", "max") and not (is_number(value) and abs(value) <= LIMIT):
            return True
        if func in ("first", "last") and type(value) is float and not is_number(value):
            return True
    return False


def windows_of(query: Query, ts: int) -> list[tuple[int | None, int | None]]:
    """Every window containing ts, found by trying every nearby window start."""
    if not query.size_ms:
        return [(None, None)]
    size, slide = query.size_ms, query.slide_ms or query.size_ms
    first_k = (ts - size) // slide - 1
    last_k = ts // slide + 1
    return [
        (k * slide, k * slide + size)
        for k in range(first_k, last_k + 1)
        if k * slide <= ts < k * slide + size
    ]


# ----------------------------------------------------------------------------- aggregating


def aggregate(query: Query, records: list[Accepted]) -> tuple[Any, ...]:
    """Every aggregate of one group, computed from its records (in (p, offset) order)."""
    records = sorted(records, key=lambda r: (r.partition, r.offset))
    out: list[Any] = []
    for _, column, func in query.aggregations:
        if column is None:
            out.append(len(records))
            continue
        values = [r.record.get(column) for r in records]
        present = [v for v in values if v is not None]
        numbers = [v for v in present if type(v) is not str]
        strings = [v for v in present if type(v) is str]
        if func == "count":
            out.append(len(present))
        elif func == "sum":
            out.append(sum_in_order(present) if present else None)
        elif func == "avg":
            out.append(sum_in_order(present) / len(present) if present else None)
        elif func == "min":
            out.append(min(numbers) if numbers else min(strings) if strings else None)
        elif func == "max":
            out.append(max(strings) if strings else max(numbers) if numbers else None)
        elif func in ("first", "last"):
            order = sorted(records, key=lambda r: (r.ts, r.partition, r.offset))
            pick = order[0] if func == "first" else order[-1]
            out.append(pick.record.get(column))
        else:
            raise ValueError(func)
    return tuple(out)


def sum_in_order(values: list[Any]) -> Any:
    """Plain left-to-right sum (ints stay ints)."""
    total = values[0]
    for v in values[1:]:
        total = total + v
    return total


def positioned(records: Sequence[Any]) -> list[tuple[int, Any]]:
    """A partition's records as (offset, record): given so, or numbered from 0.

    Records are JSON values, never tuples, so a partition whose items are all tuples
    holds (offset, record) pairs.
    """
    if records and all(isinstance(item, tuple) for item in records):
        return [(int(offset), record) for offset, record in records]
    return list(enumerate(records))


def expected(query: Query, streams: Mapping[int, Sequence[Any]]) -> Outcome:
    """Classify every record and compute the final table for the output mode.

    Args:
        query: The query.
        streams: Every partition's records in offset order: partition -> records
            (offset = index), or partition -> [(offset, record)].

    Returns:
        The final table, the late and the bad records, the final watermark.
    """
    out = Outcome()
    groups: dict[TableKey, list[Accepted]] = {}
    highest_of: dict[int, int | None] = {}
    for partition, items in streams.items():
        highest: int | None = None
        for offset, record in positioned(items):
            if record_is_bad(query, record):
                out.bad.add((partition, offset))
                continue
            ts = 0
            if query.time_column is not None:
                parsed = event_ms(record.get(query.time_column), query.time_format)
                assert parsed is not None
                ts = parsed
            if query.delay_ms is not None and highest is not None:
                watermark = highest - query.delay_ms
                if ts < watermark:
                    out.late[(partition, offset)] = Late(ts, watermark, LATE_REASON, record)
                    continue
            if query.time_column is not None:
                highest = ts if highest is None else max(highest, ts)
            key = typed(tuple(record.get(c) for c in query.group_by))
            for ws, we in windows_of(query, ts):
                groups.setdefault((key, ws, we), []).append(Accepted(partition, offset, ts, record))
        highest_of[partition] = highest
    marks = list(highest_of.values())
    if query.delay_ms is not None and marks and all(m is not None for m in marks):
        out.watermark_ms = min(m for m in marks if m is not None) - query.delay_ms
    for tkey, members in groups.items():
        if query.output_mode == "append":
            we = tkey[2]
            if we is None or out.watermark_ms is None or we > out.watermark_ms:
                continue
        out.typed_table[tkey] = aggregate(query, members)
    return out


def expected_in_phases(query: Query, phases: Sequence[Mapping[int, Sequence[Any]]]) -> Outcome:
    """Like `expected`, for a windowed query with a state timeout, given its triggers.

    Each phase is what one trigger takes: partition -> its next records (offsets go on
    from the previous phase). After each phase W = the lowest partition's highest event
    time minus the delay (a partition with no record yet holds it back; W never goes
    back), and every group (key, window) with records whose window is still open (end
    > W) and whose latest event time + timeout <= W expires: its row is final (append
    mode writes it), and it takes no more records. A later record is then aggregated
    into the windows of its group that did not expire, and is late, "state expired",
    when every one of them did (it then moves no watermark).

    Trigger boundaries matter: a record that comes before the trigger at which its
    group expires is aggregated. Tests either drive triggers themselves (the engine) or
    use streams where any finer split of a phase gives the same outcome.
    """
    assert query.state_timeout_ms is not None and query.size_ms and query.delay_ms is not None
    timeout = query.state_timeout_ms
    out = Outcome()
    groups: dict[TableKey, list[Accepted]] = {}
    expired: set[TableKey] = set()
    highest: dict[int, int | None] = {p: None for phase in phases for p in phase}
    next_offset: dict[int, int] = dict.fromkeys(highest, 0)
    w: int | None = None
    for phase in phases:
        for partition, items in phase.items():
            for record in items:
                offset = next_offset[partition]
                next_offset[partition] += 1
                if record_is_bad(query, record):
                    out.bad.add((partition, offset))
                    continue
                ts = event_ms(record.get(query.time_column), query.time_format)
                assert ts is not None
                top = highest[partition]
                if top is not None and ts < top - query.delay_ms:
                    late = Late(ts, top - query.delay_ms, LATE_REASON, record)
                    out.late[(partition, offset)] = late
                    continue
                key = typed(tuple(record.get(c) for c in query.group_by))
                open_ones = [(ws, we) for ws, we in windows_of(query, ts) if w is None or we > w]
                live = [(key, ws, we) for ws, we in open_ones if (key, ws, we) not in expired]
                if not live:
                    assert w is not None
                    out.late[(partition, offset)] = Late(ts, w, EXPIRED_REASON, record)
                    continue
                highest[partition] = ts if top is None else max(top, ts)
                for group in live:
                    groups.setdefault(group, []).append(Accepted(partition, offset, ts, record))
        marks = list(highest.values())
        if all(m is not None for m in marks):
            now = min(m for m in marks if m is not None) - query.delay_ms
            w = now if w is None else max(w, now)
        if w is not None:
            for group, members in groups.items():
                we = group[2]
                assert we is not None
                if group not in expired and we > w and max(m.ts for m in members) + timeout <= w:
                    expired.add(group)
    out.watermark_ms = w
    for group, members in groups.items():
        we = group[2]
        assert we is not None
        closed = w is not None and we <= w
        if query.output_mode == "append" and not closed and group not in expired:
            continue
        out.typed_table[group] = aggregate(query, members)
    return out


# ----------------------------------------------------------------------------- comparing


def assert_tables_equal(actual: Mapping[Any, Any], expected: Mapping[Any, Any]) -> None:
    """Row-by-row equality; floats (avg, sums of ints as double) compared to 1e-9 relative."""
    missing = sorted(set(expected) - set(actual), key=repr)
    extra = sorted(set(actual) - set(expected), key=repr)
    assert not missing and not extra, f"missing rows {missing[:5]}, unexpected rows {extra[:5]}"
    diffs = []
    for key, exp in expected.items():
        act = actual[key]
        for a, e in zip(act, exp, strict=True):
            if isinstance(e, float) or isinstance(a, float):
                if a is None or e is None or not math.isclose(a, e, rel_tol=1e-9, abs_tol=1e-9):
                    diffs.append((key, act, exp))
                    break
            elif a != e:
                diffs.append((key, act, exp))
                break
    assert not diffs, f"{len(diffs)} differing rows, e.g. {diffs[:3]}"

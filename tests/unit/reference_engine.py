"""A slow, obviously correct model of the engine's semantics (DESIGN.md section 1).

It sees every partition's whole stream at once, walks it record by record, and computes
the final sink table from scratch per (key, window) from the list of records in it. No
state, no merging, no batches: if the engine and this disagree, the engine is wrong (or
this file is, and it is short enough to check by eye).

Scope: no idle timeout and no state timeout (both depend on wall time or on when
triggers fire); every partition is known from the start.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from streamproc.engine import QuerySpec

MIN_MS = int(datetime(1, 1, 1, tzinfo=UTC).timestamp()) * 1000
MAX_MS = int(datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC).timestamp()) * 1000 + 999
LIMIT = 1e290

#: A type-exact key for comparing tables: ((type name, value), ...).
TypedKey = tuple[tuple[str, Any], ...]
TableKey = tuple[TypedKey, int | None, int | None]


def typed(values: Sequence[Any]) -> TypedKey:
    """Group values as JSON compares them: True, 1 and "1" apart, 1 and 1.0 equal."""
    out: list[tuple[str, Any]] = []
    for v in values:
        if type(v) in (int, float):
            out.append(("number", int(v) if type(v) is float and v.is_integer() else v))
        else:
            out.append((type(v).__name__, v))
    return tuple(out)


def ref_time(value: Any, fmt: str) -> int | None:
    """Event time in ms, or None when bad. Deliberately naive."""
    ms: int | None = None
    if isinstance(value, bool) or value is None:
        return None
    if fmt in ("auto", "iso8601") and isinstance(value, str):
        if fmt == "auto" and value.lstrip("-").isdigit() and value.isascii():
            ms = int(value) if len(value) < 20 else None
        else:
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


def is_number(value: Any) -> bool:
    """A JSON number that is finite (bool is not a number)."""
    return type(value) in (int, float) and math.isfinite(value)


def valid_group_value(value: Any) -> bool:
    """str, int, bool, None or a finite float."""
    return value is None or type(value) in (str, int, bool) or is_number(value)


def record_is_bad(spec: QuerySpec, record: Any) -> bool:
    """True when the engine must reject the record (before any lateness)."""
    if not isinstance(record, Mapping):
        return True
    column = spec.event_time_column
    if column is not None and ref_time(record.get(column), spec.event_time_format) is None:
        return True
    if not all(valid_group_value(record.get(c)) for c in spec.group_by):
        return True
    for agg in spec.aggregations:
        value = record.get(agg.column) if agg.column else None
        if value is None:
            continue
        if agg.func in ("sum", "avg", "min", "max") and not (
            is_number(value) and abs(value) <= LIMIT
        ):
            return True
        if agg.func in ("first", "last") and type(value) is float and not is_number(value):
            return True
    return False


def windows_of(spec: QuerySpec, ts: int) -> list[tuple[int | None, int | None]]:
    """Every window containing ts, found by trying every nearby window start."""
    if spec.window is None:
        return [(None, None)]
    size, slide = spec.window.size_ms, spec.window.slide_ms
    first_k = (ts - size) // slide - 1
    last_k = ts // slide + 1
    return [
        (k * slide, k * slide + size)
        for k in range(first_k, last_k + 1)
        if k * slide <= ts < k * slide + size
    ]


@dataclass
class Accepted:
    """A record that was aggregated."""

    partition: int
    offset: int
    ts: int
    record: Mapping[str, Any]


def aggregate(spec: QuerySpec, records: list[Accepted]) -> tuple[Any, ...]:
    """Every aggregate of one group, computed from its records (in (p, offset) order)."""
    records = sorted(records, key=lambda r: (r.partition, r.offset))
    out: list[Any] = []
    for agg in spec.aggregations:
        if agg.column is None:
            out.append(len(records))
            continue
        values = [r.record.get(agg.column) for r in records]
        present = [v for v in values if v is not None]
        numbers = [v for v in present if type(v) is not str]
        strings = [v for v in present if type(v) is str]
        if agg.func == "count":
            out.append(len(present))
        elif agg.func == "sum":
            out.append(sum_in_order(present) if present else None)
        elif agg.func == "avg":
            out.append(sum_in_order(present) / len(present) if present else None)
        elif agg.func == "min":
            out.append(min(numbers) if numbers else min(strings) if strings else None)
        elif agg.func == "max":
            out.append(max(strings) if strings else max(numbers) if numbers else None)
        else:
            order = sorted(records, key=lambda r: (r.ts, r.partition, r.offset))
            pick = order[0] if agg.func == "first" else order[-1]
            out.append(pick.record.get(agg.column))
    return tuple(out)


def sum_in_order(values: list[Any]) -> Any:
    """Plain left-to-right sum (ints stay ints)."""
    total = values[0]
    for v in values[1:]:
        total = total + v
    return total


@dataclass
class Outcome:
    """What the reference says should happen."""

    late: dict[tuple[int, int], str] = field(default_factory=dict)
    bad: set[tuple[int, int]] = field(default_factory=set)
    groups: dict[TableKey, list[Accepted]] = field(default_factory=dict)
    keys: dict[TableKey, tuple[Any, ...]] = field(default_factory=dict)
    final_watermark_ms: int | None = None
    table: dict[TableKey, tuple[Any, ...]] = field(default_factory=dict)


def run_reference(spec: QuerySpec, streams: Mapping[int, Sequence[Any]]) -> Outcome:
    """Classify every record and compute the final sink table for the output mode.

    Args:
        spec: The query.
        streams: Every partition's records, in offset order (offset = index).
    """
    out = Outcome()
    max_ts: dict[int, int | None] = {}
    for partition, records in streams.items():
        highest: int | None = None
        for offset, record in enumerate(records):
            if record_is_bad(spec, record):
                out.bad.add((partition, offset))
                continue
            ts = 0
            if spec.event_time_column is not None:
                parsed = ref_time(record.get(spec.event_time_column), spec.event_time_format)
                assert parsed is not None
                ts = parsed
            if spec.delay_ms is not None and highest is not None and ts < highest - spec.delay_ms:
                out.late[(partition, offset)] = "event time older than watermark"
                continue
            if spec.event_time_column is not None:
                highest = ts if highest is None else max(highest, ts)
            values = tuple(record.get(c) for c in spec.group_by)
            values = tuple(v + 0.0 if type(v) is float else v for v in values)
            for ws, we in windows_of(spec, ts):
                tkey = (typed(values), ws, we)
                out.groups.setdefault(tkey, []).append(Accepted(partition, offset, ts, record))
                out.keys[tkey] = values
        max_ts[partition] = highest
    if spec.delay_ms is not None and streams and all(v is not None for v in max_ts.values()):
        out.final_watermark_ms = min(v for v in max_ts.values() if v is not None) - spec.delay_ms
    for tkey, members in out.groups.items():
        _, _, we = tkey
        if spec.output_mode == "append":
            w = out.final_watermark_ms
            if we is None or w is None or we > w:
                continue
        out.table[tkey] = aggregate(spec, members)
    return out


# Sink simulators ----------------------------------------------------------------------


def table_key(key: Sequence[Any], ws: int | None, we: int | None) -> TableKey:
    """The comparison key of a result row."""
    return (typed(key), ws, we)


class SinkTable:
    """The result table as the runtime's sink would hold it, fed with `Emission.rows`.

    append inserts (a second insert of a key is a bug), update upserts, complete replaces.
    """

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.rows: dict[TableKey, tuple[Any, ...]] = {}

    def apply(self, emission: Any) -> None:
        """Apply one emission's rows."""
        if self.mode == "complete":
            self.rows = {}
        for row in emission.rows:
            tkey = table_key(row.key, row.window_start_ms, row.window_end_ms)
            if self.mode == "append":
                assert tkey not in self.rows, f"append emitted {tkey} twice"
            self.rows[tkey] = row.values


class PartialsRuntime:
    """The exactly-once runtime of DESIGN.md section 3, with dicts for Postgres tables.

    Per emit: upsert every partial (key, window, partition), recompute the sink rows the
    partials touch (append: the closed windows) by merging all partitions' partials with
    `merge_states` + `finalize`, then delete the evicted partials.
    """

    def __init__(self, spec: QuerySpec) -> None:
        self.spec = spec
        self.partials: dict[TableKey, dict[int, tuple[Any, ...]]] = {}
        self.keys: dict[TableKey, tuple[Any, ...]] = {}
        self.sink = SinkTable(spec.output_mode)

    def apply(self, emission: Any) -> None:
        """Apply one emission as the runtime's transaction would."""
        from streamproc.engine import finalize, merge_states

        touched: dict[TableKey, None] = {}
        for partition, rows in emission.partials.items():
            for row in rows:
                tkey = table_key(row.key, row.window_start_ms, row.window_end_ms)
                self.partials.setdefault(tkey, {})[partition] = row.state
                self.keys[tkey] = tuple(row.key)
                touched[tkey] = None
        if self.spec.output_mode == "append":
            touched = {table_key(k, ws, we): None for k, ws, we in emission.closed}
        elif self.spec.output_mode == "complete":
            touched = dict.fromkeys(self.partials)
            self.sink.rows = {}
        for tkey in touched:
            by_partition = self.partials.get(tkey, {})
            states = [by_partition[p] for p in sorted(by_partition)]
            if states:
                self.sink.rows[tkey] = finalize(self.spec, merge_states(self.spec, states))
        for partition, gone in emission.evicted.items():
            for key, ws, we in gone:
                tkey = table_key(key, ws, we)
                self.partials.get(tkey, {}).pop(partition, None)
                if not self.partials.get(tkey, True):
                    del self.partials[tkey]
        w = emission.global_watermark_ms
        if self.spec.output_mode != "complete" and w is not None:
            # Partials of closed windows are dropped by W, as the checkpoint does.
            for tkey in [t for t in self.partials if t[2] is not None and t[2] <= w]:
                del self.partials[tkey]

    def partials_of(self, partition: int) -> list[Any]:
        """The committed partial rows of one partition (what `Engine.restore` reads)."""
        from streamproc.engine import PartialRow

        out = []
        for tkey, states in self.partials.items():
            if partition in states:
                _, ws, we = tkey
                out.append(PartialRow(self.keys[tkey], ws, we, states[partition]))
        return out

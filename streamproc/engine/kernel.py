"""The per-record loop, generated once per query.

A batch costs one Python loop iteration per record, so that loop is written out for the
query at hand: columns, window size, delay and aggregate slots become constants and
straight-line statements, with no per-record call per stage and no per-aggregate dispatch.
`Kernel.source` shows the generated function; the test suite runs it against a slow
reference for every aggregate, window shape and output mode.

Per record, in order (the first failing step decides what the record is):
    1. not a JSON object, unreadable event time (or one whose windows or watermark leave
       years 1..9999), invalid group value, or a value an aggregate cannot take -> bad
       (no state, no watermark change);
    2. event time < the partition watermark (from earlier records) -> late;
    3. every window of the record closed (end <= global watermark W) -> late, "window
       closed" (only possible with an idle timeout or after W was raised from outside);
       sessions: its session would start or extend a closed one -> late, "session
       closed" (`engine.sessions`, the same cases);
    4. with a windowed state timeout: every open window of the record expired (a
       tombstone for its key) -> late, "state expired";
    5. otherwise: advance the partition's max event time, fold the record into the state
       of each of its open (and, with a state timeout, unexpired) windows, or of its
       session (extended, merged or new: `SessionPartition.insert`).

`run_segment(ps, seg, closed_w, now_ms, late, bad, jumps)` processes consecutive records of one
partition `ps` (a `PartitionState`); `closed_w` is W at the start of the batch, or a value
below every time when there is none; `now_ms` is wall time.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from streamproc.engine.aggregates import MAX_ABS_NUMBER, AggregatePlan, ColumnUse, update_lines
from streamproc.engine.eventtime import (
    MAX_EVENT_TS_MS,
    MIN_EVENT_TS_MS,
    event_time_parser,
    show,
)
from streamproc.engine.groupkeys import internal_key
from streamproc.engine.results import (
    LATE_SESSION_CLOSED,
    LATE_STATE_EXPIRED,
    LATE_WATERMARK,
    LATE_WINDOW_CLOSED,
    BadRecord,
    LateRecord,
)
from streamproc.engine.spec import QuerySpec, WindowSpec

#: Stands for "no event time yet": below every valid time minus any delay.
NO_TS = -(2**62)
#: Stands for "no event time in this batch yet": above every valid time.
NO_MIN_TS = 2**62

SegmentFn = Callable[..., None]


@dataclass(frozen=True, slots=True)
class Kernel:
    """The generated batch loop of a query and its source text."""

    run_segment: SegmentFn
    source: str


def _value_reason(use: ColumnUse) -> Callable[[Any], str]:
    def reason(value: Any) -> str:
        kind = type(value)
        if kind is float and value - value != 0:
            return f"{use.column}: {show(value)} is not a finite number (needed by {use.label})"
        if kind is int or kind is float:
            return f"{use.column}: {show(value)} is out of range (needed by {use.label})"
        return f"{use.column}: {show(value)} is not a number (needed by {use.label})"

    return reason


def _time_reason(column: str) -> Callable[[Mapping[str, Any], Exception], str]:
    def reason(record: Mapping[str, Any], error: Exception) -> str:
        if record.get(column) is None:
            return f"{column}: missing" if column not in record else f"{column}: null"
        return f"{column}: {error}"

    return reason


def _edge_reason(column: str) -> Callable[[Any], str]:
    def reason(value: Any) -> str:
        return (
            f"{column}: {show(value)} is too close to the limits of years 1..9999 "
            "(a window or the watermark would fall outside)"
        )

    return reason


def _not_object(record: Any) -> str:
    return f"record: {show(record)} is not a JSON object"


class _Source:
    """Indented source lines."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def add(self, depth: int, *lines: str) -> None:
        self.lines += ["    " * depth + line for line in lines]


def _emit_event_time(src: _Source, spec: QuerySpec) -> None:
    col = spec.event_time_column
    fmt = spec.event_time_format
    src.add(2, f"raw = rec.get({col!r})")
    depth = 3
    if fmt in ("auto", "epoch_millis"):
        # The common case, an int of epoch milliseconds, needs no call.
        src.add(2, f"if type(raw) is int and {MIN_EVENT_TS_MS} <= raw <= {MAX_EVENT_TS_MS}:")
        src.add(3, "ts = raw")
        src.add(2, "else:")
    elif fmt == "epoch_seconds":
        lo, hi = -(-MIN_EVENT_TS_MS // 1000), MAX_EVENT_TS_MS // 1000
        src.add(2, f"if type(raw) is int and {lo} <= raw <= {hi}:", "    ts = raw * 1000", "else:")
    else:
        depth = 2
    src.add(depth, "try:", "    ts = parse_time(raw)", "except ValueError as exc:")
    src.add(depth + 1, "bad_append(BadRecord(p, off, time_reason(rec, exc), rec))", "continue")
    # Window bounds and the watermark must be times too (the sink stores them
    # as timestamps): a time within a window size (or the delay) of the limits
    # would make a row or a ledger entry that cannot be written.
    size = spec.window.size_ms if spec.window is not None else 0
    if spec.session is not None:
        size = spec.session.gap_ms  # a session ends its last record's time + the gap
    lo = MIN_EVENT_TS_MS + size + (spec.delay_ms or 0)
    hi = MAX_EVENT_TS_MS - size
    if lo != MIN_EVENT_TS_MS or hi != MAX_EVENT_TS_MS:
        src.add(2, f"if ts < {lo} or ts > {hi}:")
        src.add(3, "bad_append(BadRecord(p, off, edge_reason(raw), rec))", "continue")


def _emit_key(src: _Source, spec: QuerySpec) -> None:
    names = [f"k{i}" for i in range(len(spec.group_by))]
    for name, col in zip(names, spec.group_by, strict=True):
        src.add(2, f"{name} = rec.get({col!r})")
    if not names:
        src.add(2, "key = ()")
        return
    # Strings, ints and None are used as they are (see groupkeys); the rest is tagged.
    values = "(" + ", ".join(names) + ("," if len(names) == 1 else "") + ")"
    src.add(2, f"key = {names[0] if len(names) == 1 else values}")
    plain = " and ".join(f"(type({n}) is str or type({n}) is int or {n} is None)" for n in names)
    if len(names) == 1:
        plain = plain[1:-1]
    src.add(2, f"if not ({plain}):", f"    key = norm_key({values}, GROUP_BY)")
    src.add(3, "if type(key) is str:", "    bad_append(BadRecord(p, off, key, rec))")
    src.add(4, "continue")


def _emit_values(src: _Source, plan: AggregatePlan, namespace: dict[str, Any]) -> dict[str, str]:
    column_var: dict[str, str] = {}
    for i, use in enumerate(plan.columns):
        v = f"v{i}"
        column_var[use.column] = v
        src.add(2, f"{v} = rec.get({use.column!r})")
        if use.need == "any":
            continue
        namespace[f"value_reason_{i}"] = _value_reason(use)
        if use.need == "finite":
            src.add(2, f"if type({v}) is float and {v} - {v} != 0:")
            src.add(3, f"bad_append(BadRecord(p, off, value_reason_{i}({v}), rec))", "continue")
            continue
        src.add(2, f"if {v} is not None:")
        src.add(3, f"t = type({v})")
        ok = f"(t is int or t is float) and {-MAX_ABS_NUMBER!r} <= {v} <= {MAX_ABS_NUMBER!r}"
        src.add(3, f"if not ({ok}):")
        src.add(4, f"bad_append(BadRecord(p, off, value_reason_{i}({v}), rec))", "continue")
    return column_var


def _emit_state_update(src: _Source, depth: int, tumbling: bool, body: list[str]) -> None:
    if tumbling:
        src.add(depth, "if ws != last_ws:")
        src.add(depth + 1, "wd = dirty.get(ws)", "if wd is None:", "    wd = dirty[ws] = {}")
        src.add(depth + 1, "last_ws = ws")
    else:
        src.add(depth, "wd = dirty.get(ws)", "if wd is None:", "    wd = dirty[ws] = {}")
    src.add(depth, "st = wd.get(key)", "if st is None:", "    st = wd[key] = load(ws, key)")
    src.add(depth, *body)


def _advance_lines(spec: QuerySpec) -> list[str]:
    """Statements that move the partition's max event time (and watermark) to ts."""
    lines = ["if ts > max_ts:"]
    if spec.jump_warning_ms is not None:
        # One record moving the partition's max event time (so its
        # watermark) this far ahead: reported, so the runtime can warn.
        lines.append(f"    if ts - max_ts > {spec.jump_warning_ms} and max_ts != {NO_TS}:")
        lines.append("        jumps.append((p, off, max_ts, ts))")
    lines.append("    max_ts = ts")
    if spec.delay_ms is not None:
        lines.append(f"    wm = ts - {spec.delay_ms}")
    return lines


def _emit_expiring_windows(
    src: _Source, window: WindowSpec, advance: list[str], body: list[str]
) -> None:
    """Windows with a state timeout: an expired (key, window) takes no record.

    `load` answers None for a tombstone. The states of the record's open windows are
    looked up before the record counts (max event time): when every one expired, the
    record is late, "state expired", like one whose windows all closed; otherwise it is
    folded into the live ones only (expired windows are skipped, as closed ones are).
    """
    size, slide = window.size_ms, window.slide_ms
    src.add(2, "live = []", f"low = (ts if ts > closed_w else closed_w) - {size}")
    src.add(2, "while ws > low:")
    src.add(3, "wd = dirty.get(ws)", "st = None if wd is None else wd.get(key)")
    src.add(3, "if st is None:", "    st = load(ws, key)")
    src.add(3, "if st is not None:", "    live.append((ws, st))")
    src.add(3, f"ws -= {slide}")
    src.add(2, "if not live:")
    src.add(3, f"late_append(LateRecord(p, off, ts, closed_w, {LATE_STATE_EXPIRED!r}, rec))")
    src.add(3, "continue")
    src.add(2, *advance)
    src.add(2, "for ws, st in live:")
    src.add(3, "wd = dirty.get(ws)", "if wd is None:", "    wd = dirty[ws] = {}")
    src.add(3, "wd[key] = st")
    src.add(3, *body)


def _emit_session(
    src: _Source, gap_ms: int, has_wm: bool, advance: list[str], body: list[str]
) -> None:
    """Session windows: late when the record's session would be closed, else placed.

    Only a record behind W can start or touch a closed session (`engine.sessions`,
    "Late"): the rare case asks the engine, over every local partition and its fences.
    `insert` extends, merges or starts the record's partial session and gives its state.
    """
    if has_wm:
        src.add(2, "if ts < closed_w and (")
        src.add(3, f"ts + {gap_ms} <= closed_w or touches_closed(key, ts, closed_w)")
        src.add(2, "):")
        src.add(3, f"late_append(LateRecord(p, off, ts, closed_w, {LATE_SESSION_CLOSED!r}, rec))")
        src.add(3, "continue")
    src.add(2, *advance)
    src.add(2, "st = insert(key, ts)")
    src.add(2, *body)


def build_kernel(spec: QuerySpec, plan: AggregatePlan) -> Kernel:
    """Generate and compile the batch loop for a query."""
    has_ts = spec.event_time_column is not None
    has_wm = spec.delay_ms is not None
    window = spec.window
    namespace: dict[str, Any] = {
        "Mapping": Mapping,
        "BadRecord": BadRecord,
        "LateRecord": LateRecord,
        "norm_key": internal_key,
        "GROUP_BY": spec.group_by,
        "not_object": _not_object,
    }
    if spec.event_time_column is not None:
        namespace["parse_time"] = event_time_parser(spec.event_time_format)
        namespace["time_reason"] = _time_reason(spec.event_time_column)
        namespace["edge_reason"] = _edge_reason(spec.event_time_column)
    src = _Source()
    src.add(0, "def run_segment(ps, seg, closed_w, now_ms, late, bad, jumps):")
    if spec.session is not None:
        src.add(1, "p = ps.partition", "insert = ps.insert", "touches_closed = ps.touches_closed")
    else:
        src.add(1, "p = ps.partition", "dirty = ps.dirty", "load = ps.load")
    src.add(1, "late_append = late.append", "bad_append = bad.append")
    if has_ts:
        src.add(1, "max_ts = ps.max_ts", "min_ts = ps.batch_min_ts")
    if has_wm:
        src.add(1, f"wm = max_ts - {spec.delay_ms}")
    if window is None and spec.session is None:
        src.add(1, "ws = None", "wd = dirty.get(None)", "if wd is None:")
        src.add(2, "wd = dirty[None] = {}")
    elif window is not None:
        src.add(1, "last_ws = wd = None")
    src.add(1, "for _, off, rec in seg:")
    src.add(2, "if type(rec) is not dict and not isinstance(rec, Mapping):")
    src.add(3, "bad_append(BadRecord(p, off, not_object(rec), rec))", "continue")
    if has_ts:
        _emit_event_time(src, spec)
    _emit_key(src, spec)
    column_var = _emit_values(src, plan, namespace)
    if has_ts:
        # The batch's min event time (progress record), over aggregated and late records.
        src.add(2, "if ts < min_ts:", "    min_ts = ts")
    if has_wm:
        src.add(2, "if ts < wm:")
        src.add(3, f"late_append(LateRecord(p, off, ts, wm, {LATE_WATERMARK!r}, rec))", "continue")
    if window is not None:
        size, slide = window.size_ms, window.slide_ms
        src.add(2, f"ws = ts - ts % {slide}")
        if has_wm:
            src.add(2, f"if ws + {size} <= closed_w:")
            src.add(
                3, f"late_append(LateRecord(p, off, ts, closed_w, {LATE_WINDOW_CLOSED!r}, rec))"
            )
            src.add(3, "continue")
    advance = _advance_lines(spec) if has_ts else []
    touch = None
    if plan.touch_slot is not None:
        touch = "ts" if has_wm else "now_ms"
    body = update_lines(plan, column_var, "ts" if has_ts else "0", touch)
    if spec.session is not None:
        _emit_session(src, spec.session.gap_ms, has_wm, advance, body)
    elif window is None:
        src.add(2, *advance)
        src.add(2, "st = wd.get(key)", "if st is None:", "    st = wd[key] = load(None, key)")
        src.add(2, *body)
    elif plan.touch_slot is not None:
        _emit_expiring_windows(src, window, advance, body)
    elif window.tumbling:
        src.add(2, *advance)
        _emit_state_update(src, 2, True, body)
    else:
        src.add(2, *advance)
        # Open windows containing ts have start > max(ts, W) - size; latest first.
        src.add(2, f"low = (ts if ts > closed_w else closed_w) - {window.size_ms}")
        src.add(2, "while ws > low:")
        _emit_state_update(src, 3, False, body)
        src.add(3, f"ws -= {window.slide_ms}")
    if has_ts:
        src.add(1, "ps.max_ts = max_ts", "ps.batch_min_ts = min_ts")
    source = "\n".join(src.lines) + "\n"
    exec(compile(source, f"<streamproc-kernel {spec.group_by}>", "exec"), namespace)
    return Kernel(run_segment=namespace["run_segment"], source=source)

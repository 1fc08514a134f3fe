"""Building an `Emission` from the local partitions' states at a trigger.

Rows merge the states of every local partition holding a (key, window), always in
partition order, so a float sum in a row does not depend on which partitions changed.

    append    rows for windows with end <= W (all of them are still in state, because
              emitting evicts them), then evict them
    update    rows for every (key, window) changed since the last emit, then evict
              windows with end <= W
    complete  rows for every (key, window) in state; nothing is evicted, `closed` lists
              the windows with last W < end <= W

Non-windowed queries never close; with a state timeout a key whose last activity is
`timeout` or more behind (event time against W with a watermark, wall clock otherwise)
is evicted. In complete mode it leaves the table with the next rows.

A windowed state timeout (update and append modes) expires an open (key, window) whose
activity, the max event time of its records merged over every local partition, is
`timeout` or more behind W (`collect_expired`); only a runtime that owns every partition
asks for it, since only then is the local merge the (key, window)'s whole activity.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from streamproc.engine.aggregates import AggregatePlan
from streamproc.engine.groupkeys import Key
from streamproc.engine.partition import PartitionState
from streamproc.engine.results import (
    PartialRow,
    ResultRow,
    WindowKey,
    new_partial_row,
    new_result_row,
)
from streamproc.engine.spec import QuerySpec
from streamproc.state.base import Entry, WindowStart, window_order

#: window start -> key -> state merged over partitions so far (in window-start order).
#: A key held by one partition maps to that partition's own state list: read only.
Merged = dict[WindowStart, dict[Key, Any]]


@dataclass(slots=True)
class Evictions:
    """What one partition drops at an emit."""

    windows: list[WindowStart] = field(default_factory=list)
    keys: list[tuple[WindowStart, Key]] = field(default_factory=list)
    window_keys: list[WindowKey] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class EmitInput:
    """The engine state an emission is computed from (W and times are event time ms)."""

    spec: QuerySpec
    plan: AggregatePlan
    parts: Sequence[PartitionState]  # in partition order
    watermark_ms: int | None
    last_emit_watermark_ms: int | None
    now_wall_ms: int
    external: Callable[[Key], tuple[Any, ...]]

    @property
    def size_ms(self) -> int:
        """Window size (0 when not windowed: ends are then None anyway)."""
        return 0 if self.spec.window is None else self.spec.window.size_ms


def _end(ws: WindowStart, size: int) -> int | None:
    return None if ws is None else ws + size


def to_rows(inp: EmitInput, merged: Merged) -> list[ResultRow]:
    """Result rows of merged states, in window-start order."""
    finalize = inp.plan.finalize
    external = inp.external
    size = inp.size_ms
    rows: list[ResultRow] = []
    for ws, states in merged.items():
        we = _end(ws, size)
        rows += [
            new_result_row(external(key), ws, we, finalize(state)) for key, state in states.items()
        ]
    return rows


def closing_windows(inp: EmitInput, ps: PartitionState) -> list[WindowStart]:
    """Window starts of `ps` that closed since the last emit (see module docstring)."""
    window = inp.spec.window
    w = inp.watermark_ms
    if window is None or w is None:
        return []
    size = window.size_ms
    last = None if inp.spec.output_mode != "complete" else inp.last_emit_watermark_ms
    closing: list[WindowStart] = [
        ws
        for ws in ps.window_starts()
        if ws is not None and ws + size <= w and (last is None or ws + size > last)
    ]
    return sorted(closing, key=window_order)


def timed_out(inp: EmitInput, ps: PartitionState) -> list[Key]:
    """Keys of a non-windowed partition idle for the state timeout or longer."""
    timeout = inp.spec.state_timeout_ms
    slot = inp.plan.touch_slot
    if timeout is None or slot is None:
        return []
    if inp.spec.delay_ms is not None:
        w = inp.watermark_ms
        if w is None:
            return []
        limit = w - timeout  # event time: last event time + timeout <= W
    else:
        limit = inp.now_wall_ms - timeout  # wall clock: idle for >= timeout
    return [
        key
        for key, state in ps.window_view(None).items()
        if state[slot] is not None and state[slot] <= limit
    ]


def collect_expired(inp: EmitInput) -> Merged:
    """Merged states of every open (key, window) idle for the windowed state timeout.

    Open: end > W (a closing window is closed, not expired). Idle: activity + timeout <=
    W. Only windows that can hold such an entry are read: start <= W - timeout, since
    the activity lies in the window. Nothing expires while W stands still (the runtime
    then has nothing new to check: every record since the last emit is at or after it).
    """
    timeout = inp.spec.state_timeout_ms
    window = inp.spec.window
    w = inp.watermark_ms
    slot = inp.plan.touch_slot
    if timeout is None or window is None or w is None or slot is None:
        return {}
    last = inp.last_emit_watermark_ms
    if last is not None and w <= last:
        return {}
    limit = w - timeout
    low = w - window.size_ms
    starts: set[WindowStart] = set()
    for ps in inp.parts:
        starts |= {ws for ws in ps.window_starts() if ws is not None and low < ws <= limit}
    merge2 = inp.plan.merge2
    expired: Merged = {}
    for ws in sorted(starts, key=window_order):
        merged: Merged = {}
        for ps in inp.parts:
            _fold(merged, ws, ps.window_view(ws), merge2)
        idle = {
            key: state
            for key, state in merged.get(ws, {}).items()
            if state[slot] is not None and state[slot] <= limit
        }
        if idle:
            expired[ws] = idle
    return expired


def _fold(merged: Merged, ws: WindowStart, states: dict[Key, Any], merge2: Any) -> None:
    """Merge one partition's states of a window into `merged` (partition order)."""
    into = merged.get(ws)
    if into is None:
        merged[ws] = dict(states)
        return
    for key, state in states.items():
        old = into.get(key)
        into[key] = state if old is None else merge2(old, state)


def collect_closed(
    inp: EmitInput, evicting: bool
) -> tuple[Merged, list[WindowKey], dict[int, Evictions]]:
    """States of closed windows, the closed (key, window)s, and each partition's evictions."""
    external = inp.external
    size = inp.size_ms
    merge2 = inp.plan.merge2
    evictions: dict[int, Evictions] = {ps.partition: Evictions() for ps in inp.parts}
    closing = {ps.partition: set(closing_windows(inp, ps)) for ps in inp.parts}
    merged: Merged = {}
    for ws in sorted(set().union(*closing.values()), key=window_order):
        for ps in inp.parts:
            if ws not in closing[ps.partition]:
                continue
            view = ps.window_view(ws)
            if evicting:
                # Stored partials of a closed window are dropped by W (all of
                # them at once), so no key is listed for them in window_keys.
                evictions[ps.partition].windows.append(ws)
            _fold(merged, ws, view, merge2)
    for ps in inp.parts:
        ev = evictions[ps.partition]
        for key in timed_out(inp, ps):
            ev.keys.append((None, key))
            ev.window_keys.append((external(key), None, None))
    closed = [
        (external(key), ws, _end(ws, size)) for ws, states in merged.items() for key in states
    ]
    return merged, closed, evictions


def collect_changed(inp: EmitInput) -> Merged:
    """States, over all local partitions, of every (key, window) changed since last emit."""
    merge2 = inp.plan.merge2
    changed: dict[WindowStart, dict[Key, None]] = {}
    for ps in inp.parts:
        for ws, window in ps.dirty.items():
            keys = changed.get(ws)
            if keys is None:
                changed[ws] = dict.fromkeys(window)
            else:
                keys.update(dict.fromkeys(window))
    merged: Merged = {}
    for ws in sorted(changed, key=window_order):
        keys = changed[ws]
        if len(inp.parts) == 1:  # one local partition: its dirty entries are the answer
            merged[ws] = dict(inp.parts[0].dirty[ws])
            continue
        for ps in inp.parts:
            _fold(merged, ws, dict(ps.lookup(ws, keys)), merge2)
    return merged


def collect_all(inp: EmitInput, dropped: dict[int, Evictions]) -> Merged:
    """States of every (key, window) in local state, except keys being evicted."""
    merge2 = inp.plan.merge2
    starts: set[WindowStart] = set()
    for ps in inp.parts:
        starts |= ps.window_starts()
    gone = {ps.partition: set(dropped[ps.partition].keys) for ps in inp.parts}
    merged: Merged = {}
    for ws in sorted(starts, key=window_order):
        for ps in inp.parts:
            view = ps.window_view(ws)
            drop = gone[ps.partition]
            if drop:
                view = {key: state for key, state in view.items() if (ws, key) not in drop}
            _fold(merged, ws, view, merge2)
    return merged


def partials_of(
    inp: EmitInput,
    ps: PartitionState,
    evictions: Evictions,
    closed_partials: bool = True,
    expired: Merged | None = None,
) -> tuple[tuple[PartialRow, ...], list[Entry]]:
    """Partial rows of the partition's changed entries, and the store puts among them.

    Every changed entry gets a partial row (entries of closed windows too, unless
    closed_partials is False: the runtime may merge them before deleting), except the
    expired ones (the runtime replaces them by a tombstone); the puts leave out what
    this emit evicts.
    """
    external = inp.external
    size = inp.size_ms
    dropped_windows = set(evictions.windows)
    dropped_keys = set(evictions.keys)
    rows: list[PartialRow] = []
    puts: list[Entry] = []
    for ws in sorted(ps.dirty, key=window_order):
        we = _end(ws, size)
        frozen = [(key, tuple(state)) for key, state in ps.dirty[ws].items()]
        gone = expired.get(ws) if expired else None
        if gone:
            frozen = [(key, state) for key, state in frozen if key not in gone]
        if ws in dropped_windows:
            if closed_partials:
                rows += [new_partial_row(external(key), ws, we, state) for key, state in frozen]
            continue
        rows += [new_partial_row(external(key), ws, we, state) for key, state in frozen]
        if dropped_keys:
            frozen = [(key, state) for key, state in frozen if (ws, key) not in dropped_keys]
        puts += [(ws, key, state) for key, state in frozen]
    return tuple(rows), puts

"""Session windows: partial sessions per partition, how they merge, close, and make records late.

The semantics (Spark's `session_window`, made exact across partitions):

* A **session** of a group key is a maximal run of the key's aggregated records whose
  event times are each less than the gap from the next: sort them by event time and
  cut wherever two neighbours are `>= gap` apart. It spans `[first event time, last
  event time + gap)`, the row's `window_start` and `window_end`. Two records exactly
  the gap apart are in two sessions ("less than the gap")::

      gap 5:   0  3        10 12     17
               [0 ... 8)   [10 .. 17)[17 ... 22)     12 and 17 are 5 apart: two sessions

  Put otherwise: each record stands for `[t, t + gap)`, and two records are in one
  session when a chain of those intervals, each overlapping the next, joins them
  (half-open: `[0, 5)` and `[5, 10)` do not overlap). A session's interval is the
  union of its records' intervals, so chains of overlapping *sessions* give the
  sessions of all their records together: merging never needs the records again.

* **Partial sessions.** A partition keeps, per key, the sessions of its own records
  alone, in start order, none overlapping another (two may touch: one's end is the
  next one's start). A new record within the gap of one of them extends it; within
  the gap of two (never more: each is at least a gap long) merges them, their states
  folded together (`merge2`); of none, starts one (`SessionPartition.insert`).

* **Merged sessions.** The sessions of a key over every partition are the chains of
  overlapping partial sessions of all partitions (`chains`, `merge_sessions`): the
  group key need not be the message key, so a partial session of q may overlap one of
  p, or bridge two of them. A merged state folds its partial states in (partition,
  start) order, so every merge of the same partials gives the same bits.

* **Closing.** A merged session is closed, final, when its end <= W, the global
  watermark; never by a partition's own watermark, and never on one partial session:
  p's partial session may end <= W while another partition's keeps their merged
  session open, and so growing.

* **Late**, "session closed". A record of key k at event time t, not late by its
  partition's watermark (t >= wm(p)), is late with reason `LATE_SESSION_CLOSED` when,
  with W the global watermark at the start of its batch,

      (a) t + gap <= W: the session it would start, [t, t + gap), is closed already
          (as Spark drops it: its own session window is behind the watermark), or
      (b) it lies within the gap of a closed session C of k, C.start - gap < t <
          C.end: it would extend C (or bridge C and another session).

  Both need t < W. A partition counted in W has wm(p) >= W, so its on-time records
  (t >= wm(p)) are never "session closed": only records of a partition that W does
  not wait for are (idle, or new or restored behind the committed W), as with "window
  closed". (b) asks only about closed sessions with end in (W - gap, W]: one that
  ended earlier is only within the gap of records that (a) makes late, so the engine
  forgets a closed session when W passes its end + gap (its "fence").

This module is pure: the per-partition working state, what an emit cycle did to it
(`SessionChange`: created, changed, merged, closed), and the merge across partitions.
`streamproc.engine.session_engine` runs batches and emits over it.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from operator import attrgetter
from typing import Any, Literal

from streamproc.engine.aggregates import plan_for
from streamproc.engine.groupkeys import Key, checked_internal_key
from streamproc.engine.kernel import NO_MIN_TS, NO_TS
from streamproc.engine.results import PartialRow, WindowKey
from streamproc.engine.spec import QuerySpec

#: (start, end) of a session, event-time ms.
Bounds = tuple[int, int]
Merge2 = Callable[[Sequence[Any], Sequence[Any]], list[Any]]
ChangeKind = Literal["created", "changed", "merged", "closed"]

_start = attrgetter("start_ms")
_end = attrgetter("end_ms")


@dataclass(slots=True)
class Session:
    """One partial session of a key in one partition (mutable working state).

    Attributes:
        start_ms: Its first record's event time.
        end_ms: Its last record's event time + the gap.
        state: Its aggregate state; the batch loop folds records into this list.
        stored: Its bounds as of the last emit (where the checkpoint holds its row),
            None for a session started since.
        absorbed: Bounds as of the last emit of the sessions merged into it since.
        dirty: It took a record (or a merge) since the last emit.
    """

    start_ms: int
    end_ms: int
    state: list[Any]
    stored: Bounds | None = None
    absorbed: list[Bounds] = field(default_factory=list)
    dirty: bool = True

    @property
    def bounds(self) -> Bounds:
        """(start, end) now."""
        return (self.start_ms, self.end_ms)

    def rows_before(self) -> list[Bounds]:
        """Bounds of every row the checkpoint holds for it since the last emit."""
        return ([self.stored] if self.stored is not None else []) + self.absorbed


@dataclass(frozen=True, slots=True)
class SessionChange:
    """What one emit cycle did to one partial session of one partition.

    Kinds, and the state rows (key, start, partition) they become (deletes first):

        created  a session started since the last emit, now `after` with `state`:
                 insert its row
        changed  the session stored at `before` now spans `after` with `state` (its
                 start, its end or only its state moved): delete the row at
                 `before` when the start moved, upsert the row at `after`
        merged   the session stored at `before` was merged into the one now at
                 `after` (whose own change carries the state): delete its row
        closed   the session (stored at `before`; None: started since) is part of a
                 merged session that W closed; it spanned `after` with `state` at the
                 end: delete its row

    Attributes:
        kind: One of the four above.
        key: The group-by values.
        before: Bounds as of the last emit, None for a session started since.
        after: Bounds now (closed: when it closed).
        state: The absolute partial state (None for `merged`).
    """

    kind: ChangeKind
    key: tuple[Any, ...]
    before: Bounds | None
    after: Bounds
    state: tuple[Any, ...] | None


def state_row_ops(
    changes: Iterable[SessionChange],
) -> tuple[list[PartialRow], list[WindowKey]]:
    """A partition's changes as state-row upserts and deletes (apply the deletes first).

    A delete never names a row an upsert writes: a session's start only moves down,
    onto no other session of its partition.
    """
    upserts: list[PartialRow] = []
    deletes: list[WindowKey] = []
    for c in changes:
        if c.kind in ("created", "changed"):
            assert c.state is not None
            upserts.append(PartialRow(c.key, c.after[0], c.after[1], c.state))
        if c.before is not None and (c.kind != "changed" or c.before[0] != c.after[0]):
            deletes.append((c.key, c.before[0], c.before[1]))
    return upserts, deletes


class SessionPartition:
    """The partial sessions of one local partition, and its position.

    Args:
        partition: The source partition.
        gap_ms: The session gap (event time).
        init: The empty aggregate state.
        merge2: Folds two states into a new one (the earlier first).
        now_ms: Wall time, its last activity (idle timeout).
        touches_closed: `touches_closed(key, t, w)`: is event time t within the gap of
            a closed merged session of key (rule (b))? The engine answers it over every
            local partition and its fences.
    """

    __slots__ = (
        "_init",
        "_merge2",
        "batch_min_ts",
        "gap_ms",
        "last_active_ms",
        "max_ts",
        "next_offset",
        "partition",
        "sessions",
        "touched",
        "touches_closed",
    )

    def __init__(
        self,
        partition: int,
        gap_ms: int,
        init: Sequence[Any],
        merge2: Merge2,
        now_ms: int,
        touches_closed: Callable[[Key, int, int], bool],
    ) -> None:
        self.partition = partition
        self.gap_ms = gap_ms
        self._init = list(init)
        self._merge2 = merge2
        self.touches_closed = touches_closed
        #: key -> its partial sessions, in start order, none overlapping another.
        self.sessions: dict[Key, list[Session]] = {}
        #: Keys whose sessions changed since the last emit.
        self.touched: dict[Key, None] = {}
        self.max_ts: int = NO_TS
        self.batch_min_ts: int = NO_MIN_TS
        self.next_offset: int | None = None
        self.last_active_ms = now_ms

    @property
    def max_event_ts_ms(self) -> int | None:
        """Max event time of the partition's aggregated records, None before any."""
        return None if self.max_ts == NO_TS else self.max_ts

    @property
    def batch_min_event_ts_ms(self) -> int | None:
        """Min event time of the last process call's aggregated and late records."""
        return None if self.batch_min_ts == NO_MIN_TS else self.batch_min_ts

    def insert(self, key: Key, ts: int) -> list[Any]:
        """Place a record of `key` at event time `ts`; the state list to fold it into.

        The record's session is the one it extends, or the merge of the two it
        bridges, or a new one; its bounds already cover `ts`.
        """
        self.touched[key] = None
        end = ts + self.gap_ms
        found = self.sessions.get(key)
        if found is None:
            s = Session(ts, end, self._init.copy())
            self.sessions[key] = [s]
            return s.state
        last = found[-1]
        if ts >= last.end_ms:  # after every session (in order: the common case)
            s = Session(ts, end, self._init.copy())
            found.append(s)
            return s.state
        # Sessions within the gap of ts: end > ts and start < ts + gap; at most two.
        lo = bisect_right(found, ts, key=_end)
        hi = bisect_left(found, end, key=_start)
        if lo == hi:
            s = Session(ts, end, self._init.copy())
            found.insert(lo, s)
            return s.state
        s = found[lo]
        if hi - lo == 2:
            other = found.pop(lo + 1)
            s.state = self._merge2(s.state, other.state)
            s.end_ms = other.end_ms
            rows = sorted(s.rows_before() + other.rows_before())
            # The earliest stored row carries the merged session; the others go.
            s.stored, s.absorbed = (rows[0], rows[1:]) if rows else (None, [])
        if ts < s.start_ms:
            s.start_ms = ts
        if end > s.end_ms:
            s.end_ms = end
        s.dirty = True
        return s.state

    def remove(self, key: Key, session: Session) -> None:
        """Drop one session (its merged session closed)."""
        found = self.sessions[key]
        found.remove(session)
        if not found:
            del self.sessions[key]

    def take_changes(self, external: Callable[[Key], tuple[Any, ...]]) -> list[SessionChange]:
        """The changes of the sessions of touched keys since the last emit; resets them."""
        out: list[SessionChange] = []
        for key in self.touched:
            for s in self.sessions.get(key, ()):
                if not s.dirty:
                    continue
                ext = external(key)
                kind: ChangeKind = "created" if s.stored is None else "changed"
                out.append(SessionChange(kind, ext, s.stored, s.bounds, tuple(s.state)))
                out += [SessionChange("merged", ext, b, s.bounds, None) for b in s.absorbed]
                s.stored, s.absorbed, s.dirty = s.bounds, [], False
        self.touched = {}
        return out

    def rows(self, external: Callable[[Key], tuple[Any, ...]]) -> list[PartialRow]:
        """Every partial session as the checkpoint's state rows hold it after an emit."""
        return [
            PartialRow(external(key), s.start_ms, s.end_ms, tuple(s.state))
            for key, found in self.sessions.items()
            for s in found
        ]

    def reset(self, entries: Iterable[tuple[Key, int, int, list[Any]]]) -> None:
        """Replace every session by restored ones (stored, clean).

        Raises:
            ValueError: two sessions of a key overlap, or one is shorter than the gap.
        """
        sessions: dict[Key, list[Session]] = {}
        for key, start, end, state in entries:
            if end - start < self.gap_ms:
                raise ValueError(
                    f"partial session [{start}, {end}) is shorter than the gap ({self.gap_ms} ms)"
                )
            sessions.setdefault(key, []).append(
                Session(start, end, state, stored=(start, end), dirty=False)
            )
        for found in sessions.values():
            found.sort(key=_start)
            for a, b in pairwise(found):
                if b.start_ms < a.end_ms:
                    raise ValueError(
                        f"partial sessions [{a.start_ms}, {a.end_ms}) and "
                        f"[{b.start_ms}, {b.end_ms}) of one partition overlap"
                    )
        self.sessions = sessions
        self.touched = {}


# Merging across partitions ---------------------------------------------------------


def bounded_chains(
    parts: Iterable[tuple[int, int, int, Any]],
) -> list[tuple[int, int, list[tuple[int, int, int, Any]]]]:
    """Group (start, end, partition, payload) partial sessions into merged sessions.

    A merged session is a chain of partial sessions each overlapping the next
    (half-open: touching is not overlapping). Sorted by start, a partial joins the
    current chain when it starts before the chain's end so far. Chains come in start
    order as (start, end, parts), their parts in (start, partition) order.
    """
    ordered = sorted(parts, key=lambda part: (part[0], part[2]))
    out: list[tuple[int, int, list[tuple[int, int, int, Any]]]] = []
    start = end = NO_TS
    chain: list[tuple[int, int, int, Any]] = []
    for part in ordered:
        if chain and part[0] < end:
            chain.append(part)
            if part[1] > end:
                end = part[1]
        else:
            if chain:
                out.append((start, end, chain))
            start, end, chain = part[0], part[1], [part]
    if chain:
        out.append((start, end, chain))
    return out


def chains(parts: Iterable[tuple[int, int, int, Any]]) -> list[list[tuple[int, int, int, Any]]]:
    """The chains of `bounded_chains`, without their bounds."""
    return [chain for _, _, chain in bounded_chains(parts)]


def chain_bounds(bounds: list[Bounds]) -> list[Bounds]:
    """(start, end) of the merged sessions of partial sessions given by their bounds."""
    if len(bounds) < 2:
        return list(bounds)
    bounds.sort()
    out: list[Bounds] = []
    start, end = bounds[0]
    for s, e in bounds[1:]:
        if s < end:
            if e > end:
                end = e
        else:
            out.append((start, end))
            start, end = s, e
    out.append((start, end))
    return out


def chain_state(chain: Sequence[tuple[int, int, int, Sequence[Any]]], merge2: Merge2) -> list[Any]:
    """The merged state of a chain: its partial states folded in (partition, start) order."""
    ordered = sorted(chain, key=lambda part: (part[2], part[0]))
    state = list(ordered[0][3])
    for part in ordered[1:]:
        state = merge2(state, part[3])
    return state


@dataclass(frozen=True, slots=True)
class MergedSession:
    """A session of a key over every partition.

    Attributes:
        key: The group-by values.
        start_ms: Its first record's event time (over every partition).
        end_ms: Its last record's event time + the gap.
        state: Its partial states merged (finalize it for the row's values).
        partials: (partition, start, end) of the partial sessions it merges.
    """

    key: tuple[Any, ...]
    start_ms: int
    end_ms: int
    state: tuple[Any, ...]
    partials: tuple[tuple[int, int, int], ...]


def merge_sessions(
    spec: QuerySpec, partials: Iterable[tuple[int, PartialRow]]
) -> list[MergedSession]:
    """The merged sessions of partial sessions read back from the checkpoint.

    Args:
        spec: The query (its group-by, for type-exact keys, and its aggregates).
        partials: (partition, partial row) of any partitions, any keys, any order.

    Returns:
        The merged sessions, by key in first-seen order, then by start.

    Raises:
        ValueError: a row does not fit the query (key width, state slots).
    """
    plan = plan_for(spec)
    by_key: dict[Key, tuple[tuple[Any, ...], list[tuple[int, int, int, Any]]]] = {}
    for partition, row in partials:
        if row.window_start_ms is None or row.window_end_ms is None:
            raise ValueError(f"partial {row!r} has no session bounds")
        if len(row.state) != plan.width:
            raise ValueError(f"partial state {row.state!r} does not have {plan.width} slots")
        key = checked_internal_key(row.key, spec.group_by)
        entry = by_key.setdefault(key, (tuple(row.key), []))
        entry[1].append((row.window_start_ms, row.window_end_ms, partition, row.state))
    out: list[MergedSession] = []
    for ext, parts in by_key.values():
        for chain in chains(parts):
            out.append(
                MergedSession(
                    ext,
                    chain[0][0],
                    max(part[1] for part in chain),
                    tuple(chain_state(chain, plan.merge2)),
                    tuple((p, s, e) for s, e, p, _ in chain),
                )
            )
    return out

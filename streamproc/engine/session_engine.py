"""`SessionEngine`: session-window aggregation over the local partitions of one source.

The semantics (what a session is, when it closes, which records are late) are in
`streamproc.engine.sessions`. The surface follows `Engine`: `process` a batch, `emit`
once per trigger, `assign` / `revoke` / `restore` partitions, W over the local and the
remote partitions. What differs is the emission: sessions move and merge, so result
rows and state rows are deleted as well as written (`SessionEmission`).

At an emit, per key changed since the last one (and per key W may have closed a
session of, found through a heap of partial-session ends), the partial sessions of every
local partition are chained into merged sessions:

    append    rows of the merged sessions that closed (end <= W), once; their partial
              sessions leave state, and their bounds stay as fences for a gap
    update    rows of the merged sessions holding a changed partial session, and the
              deletes of the rows of merged sessions that no longer exist (they grew at
              the start or the end, or merged); closed ones leave state as in append
    complete  rows of every merged session, and the same deletes; nothing leaves state

The engine closes sessions over the partitions it holds: exact when it holds every
partition of the topic. With partitions on other workers, the checkpoint must close
them over every partition's stored partial sessions (docs/sessions-design.md). State
is in memory (no WindowStore yet): `restore` rebuilds it from the checkpoint's rows.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import count
from typing import Any

from streamproc.engine.aggregates import checked_state, plan_for
from streamproc.engine.batches import Record, run_batch
from streamproc.engine.groupkeys import Key, checked_internal_key, external_key_fn
from streamproc.engine.kernel import NO_TS, build_kernel
from streamproc.engine.localparts import LocalPartitions
from streamproc.engine.results import BatchResult, PartialRow, ResultRow, WindowKey
from streamproc.engine.sessions import (
    Bounds,
    Session,
    SessionChange,
    SessionPartition,
    bounded_chains,
    chain_bounds,
    chain_state,
    chains,
    state_row_ops,
)
from streamproc.engine.spec import QuerySpec

#: (start, end, partition, session): a partial session in a chain.
_Part = tuple[int, int, int, Session]


@dataclass(frozen=True, slots=True)
class SessionEmission:
    """What one trigger produced for a session-window query (event-time bounds).

    Attributes:
        rows: Result rows to write, merged over the local partitions: append = the
            sessions this emit closed (each exactly once ever); update = every session
            holding a partial session changed since the last emit (closing ones too);
            complete = every session in state.
        deleted_rows: (key, start, end) of result rows written before that no longer
            exist, in update and complete mode: a session whose start or end moved, or
            that merged into another. Delete them in the transaction that writes
            `rows`, so the table never shows two overlapping sessions of a key.
        changes: Per local partition, what happened to its partial sessions since
            the last emit (created, changed, merged, closed); `state_rows` turns them
            into the checkpoint's state-row upserts and deletes.
        closed: (key, start, end) of every merged session this emit closed.
        global_watermark_ms: The global watermark W (event time) after this emit.
    """

    rows: tuple[ResultRow, ...]
    deleted_rows: tuple[WindowKey, ...]
    changes: Mapping[int, tuple[SessionChange, ...]]
    closed: tuple[WindowKey, ...]
    global_watermark_ms: int | None

    def state_rows(self, partition: int) -> tuple[list[PartialRow], list[WindowKey]]:
        """A partition's state-row upserts and deletes (apply the deletes first)."""
        return state_row_ops(self.changes.get(partition, ()))


class SessionEngine(LocalPartitions[SessionPartition]):
    """Session-window aggregation over the local partitions of one source.

    Args:
        spec: The query; `spec.session` must be set.
        clock: Wall clock in epoch milliseconds (the idle timeout only).
    """

    def __init__(self, spec: QuerySpec, clock: Callable[[], int]) -> None:
        if spec.session is None:
            raise ValueError("SessionEngine runs session-window queries only")
        super().__init__(spec, clock)
        self._gap = spec.session.gap_ms
        self._plan = plan_for(spec)
        self._kernel = build_kernel(spec, self._plan)
        self._external = external_key_fn(len(spec.group_by))
        self._last_emit_w: int | None = None
        self._seq = count()
        #: (end, seq, key) of partial sessions as of the emit that last saw them
        #: change: the keys W may have closed a session of (stale entries are harmless).
        self._ends: list[tuple[int, int, Key]] = []
        #: key -> bounds of its closed merged sessions still within a gap of W.
        self._fences: dict[Key, list[Bounds]] = {}
        self._fence_expiry: list[tuple[int, int, Key, Bounds]] = []
        #: Whether this worker closes sessions itself (it holds every partition). When
        #: not, the checkpoint merges and closes them over every partition's state rows:
        #: a local chain W passed is written as it stands (its changes) and forgotten,
        #: with no row, no state-row delete and no fence of its own; rule (b) asks only
        #: the fences the checkpoint gave (`restore(closed=...)`).
        self.closes_locally = True

    # Records ------------------------------------------------------------------------

    def process(self, records: Sequence[Record]) -> BatchResult:
        """Fold a batch of (partition, offset, decoded record) into state.

        Records of one partition come in offset order; partitions interleave in any
        way. Lateness: each partition's watermark from its records before, then "session
        closed" against W as of the start of the batch (event time).
        """
        now = self._clock()
        w = self._update_watermark(now)
        result = run_batch(
            records,
            self._parts,
            lambda partition: self._open(partition, now),
            self._kernel.run_segment,
            NO_TS if w is None else w,
            now,
            self.spec.delay_ms,
        )
        self._update_watermark(now)
        return result

    def emit(self) -> SessionEmission:
        """The trigger's rows, deleted rows, partial-session changes and closed sessions."""
        w = self._update_watermark(self._clock())
        mode = self.spec.output_mode
        parts = [self._parts[p] for p in sorted(self._parts)]
        touched: dict[Key, None] = {}
        # Without a watermark nothing closes: the heap of ends would only grow.
        closable = self.spec.delay_ms is not None
        for ps in parts:
            for key in ps.touched:
                touched[key] = None
                for s in ps.sessions.get(key, ()) if closable else ():
                    if s.dirty:
                        heapq.heappush(self._ends, (s.end_ms, next(self._seq), key))
        keys = dict(touched)
        while w is not None and self._ends and self._ends[0][0] <= w:
            keys[heapq.heappop(self._ends)[2]] = None
        if mode == "complete":
            keys.update(dict.fromkeys(k for ps in parts for k in ps.sessions))
        rows: list[ResultRow] = []
        deleted: list[WindowKey] = []
        closed: list[WindowKey] = []
        changes: dict[int, list[SessionChange]] = {ps.partition: [] for ps in parts}
        merge2, finalize = self._plan.merge2, self._plan.finalize
        local = self.closes_locally
        forget: list[tuple[Key, _Part]] = []
        external = self._external
        for key in keys:
            ext = external(key)
            found = [(ps.partition, mine) for ps in parts if (mine := ps.sessions.get(key))]
            before = self._rows_before(found) if mode != "append" and key in touched else ()
            after: list[Bounds] = []
            entries = [(s.start_ms, s.end_ms, p, s) for p, mine in found for s in mine]
            for start, end, chain in bounded_chains(entries):
                after.append((start, end))
                closing = self._closes(end, w)
                if closing and not local:
                    if mode != "complete":
                        forget += [(key, part) for part in chain]
                    continue
                if mode == "complete" or (closing if mode == "append" else _dirty(chain)):
                    if len(chain) == 1:
                        state = list(chain[0][3].state)
                    else:
                        state = chain_state([(*part[:3], part[3].state) for part in chain], merge2)
                    rows.append(ResultRow(ext, start, end, finalize(state)))
                if closing:
                    closed.append((ext, start, end))
                    if mode != "complete":
                        self._evict(key, ext, chain, changes)
            if before and before != after:
                gone = set(before).difference(after)
                deleted += [(ext, s, e) for s, e in sorted(gone)]
        for ps in parts:
            changes[ps.partition] += ps.take_changes(self._external)
        for key, part in forget:  # their changes are taken: the checkpoint closes them
            self._parts[part[2]].remove(key, part[3])
        self._expire_fences(w)
        if w is not None:
            self._last_emit_w = w
        return SessionEmission(
            rows=tuple(rows),
            deleted_rows=tuple(deleted),
            changes={p: tuple(c) for p, c in changes.items()},
            closed=tuple(closed),
            global_watermark_ms=w,
        )

    def _closes(self, end: int, w: int | None) -> bool:
        """Does this emit close a merged session ending at `end`?"""
        if w is None or end > w:
            return False
        # complete keeps closed sessions in state: each is reported once.
        last = self._last_emit_w
        return self.spec.output_mode != "complete" or last is None or end > last

    @staticmethod
    def _parts_of(parts: Sequence[SessionPartition], key: Key) -> list[_Part]:
        found = [(ps.partition, ps.sessions.get(key, ())) for ps in parts]
        return [(s.start_ms, s.end_ms, partition, s) for partition, mine in found for s in mine]

    @staticmethod
    def _rows_before(found: Sequence[tuple[int, Sequence[Session]]]) -> list[Bounds]:
        """Bounds of the merged sessions of a key as of the last emit (the table's rows).

        Args:
            found: (partition, its partial sessions of the key) of the local partitions.
        """
        stored: list[Bounds] = []
        for _, mine in found:
            for s in mine:
                if s.stored is not None:
                    stored.append(s.stored)
                if s.absorbed:
                    stored += s.absorbed
        return chain_bounds(stored)

    def _evict(
        self,
        key: Key,
        ext: tuple[Any, ...],
        chain: list[_Part],
        changes: dict[int, list[SessionChange]],
    ) -> None:
        """A closed merged session leaves state; its bounds stay a gap longer as a fence."""
        for _, _, partition, s in chain:
            self._parts[partition].remove(key, s)
            out = changes[partition]
            out.append(SessionChange("closed", ext, s.stored, s.bounds, tuple(s.state)))
            out += [SessionChange("merged", ext, b, s.bounds, None) for b in s.absorbed]
        self._fence(key, (chain[0][0], max(part[1] for part in chain)))

    def _fence(self, key: Key, bounds: Bounds) -> None:
        self._fences.setdefault(key, []).append(bounds)
        expiry = (bounds[1] + self._gap, next(self._seq), key, bounds)
        heapq.heappush(self._fence_expiry, expiry)

    def _expire_fences(self, w: int | None) -> None:
        """Forget closed sessions W passed by a gap: only (a)-late records touch them."""
        while w is not None and self._fence_expiry and self._fence_expiry[0][0] <= w:
            _, _, key, bounds = heapq.heappop(self._fence_expiry)
            kept = self._fences[key]
            kept.remove(bounds)
            if not kept:
                del self._fences[key]

    def _touches_closed(self, key: Key, ts: int, w: int) -> bool:
        """Rule (b): is event time ts within the gap of a closed merged session of key?

        Asked only for records behind W (rare: idle or new partitions).
        """
        end = ts + self._gap
        for start, stop in self._fences.get(key, ()):
            if start < end and ts < stop:
                return True
        if not self.closes_locally:
            return False  # a local chain is not the merged session: the fences decide
        for chain in chains(self._parts_of(list(self._parts.values()), key)):
            stop = max(part[1] for part in chain)
            if stop <= w and chain[0][0] < end and ts < stop:
                return True
        return False

    # Partitions ---------------------------------------------------------------------

    def assign(self, partitions: Iterable[int]) -> None:
        """Open local partitions; until they have data they hold the watermark back."""
        now = self._clock()
        for partition in partitions:
            if partition not in self._parts:
                self._open(partition, now)
        self._update_watermark(now)

    def revoke(self, partitions: Iterable[int]) -> None:
        """Drop local partitions and their changes since the last emit."""
        for partition in partitions:
            self._parts.pop(partition, None)

    def restore(
        self,
        partition: int,
        max_event_ts_ms: int | None,
        partials: Iterable[PartialRow],
        *,
        next_offset: int | None = None,
        closed: Iterable[WindowKey] = (),
    ) -> None:
        """Replace a partition's state with what the checkpoint committed.

        Args:
            partition: The partition (opened if not local yet).
            max_event_ts_ms: Its committed max event time, None before any.
            partials: Its committed partial sessions (absolute, as `partials_of` gives).
            next_offset: The ledger's next offset.
            closed: (key, start, end) of closed merged sessions whose end + gap is
                still above W, of any partition: the fences of rule (b).

        Raises:
            ValueError: a row does not fit the query, or two sessions of a key overlap.
        """
        now = self._clock()
        group_by = self.spec.group_by
        entries = []
        for row in partials:
            start, end = row.window_start_ms, row.window_end_ms
            if start is None or end is None:
                raise ValueError(f"partial {row!r} has no session bounds")
            key = checked_internal_key(row.key, group_by)
            entries.append((key, start, end, checked_state(self.spec, row.state)))
        ps = self._parts.get(partition)
        if ps is None:
            ps = self._open(partition, now)
        ps.reset(entries)
        for key, _, end, _ in entries:
            heapq.heappush(self._ends, (end, next(self._seq), key))
        known = {(k, b) for k, bounds in self._fences.items() for b in bounds}
        for ext, start, end in closed:
            if start is None or end is None:
                raise ValueError(f"closed session {(ext, start, end)!r} has no bounds")
            key = checked_internal_key(ext, group_by)
            if (key, (start, end)) not in known:
                self._fence(key, (start, end))
        ps.max_ts = NO_TS if max_event_ts_ms is None else max_event_ts_ms
        ps.next_offset = next_offset
        ps.last_active_ms = now
        self._update_watermark(now)

    def advance_global_watermark(self, watermark_ms: int) -> None:
        """Raise W to at least this value (event time), e.g. the last committed W."""
        self._watermark.advance_to(watermark_ms)
        if self._last_emit_w is None or watermark_ms > self._last_emit_w:
            self._last_emit_w = self._watermark.current_ms

    def partials_of(self, partition: int) -> tuple[PartialRow, ...]:
        """A local partition's partial sessions (what its state rows hold after an emit)."""
        ps = self._parts.get(partition)
        return () if ps is None else tuple(ps.rows(self._external))

    @property
    def fences(self) -> tuple[WindowKey, ...]:
        """Closed merged sessions kept for rule (b) until W passes their end + gap."""
        return tuple(
            (self._external(key), s, e) for key, bounds in self._fences.items() for s, e in bounds
        )

    def close(self) -> None:
        """Forget every partition (state is in memory only)."""
        self._parts.clear()

    def _open(self, partition: int, now: int) -> SessionPartition:
        plan = self._plan
        ps = SessionPartition(
            partition, self._gap, plan.init, plan.merge2, now, self._touches_closed
        )
        self._parts[partition] = ps
        self._watermark.drop_remote(partition)
        return ps


def _dirty(chain: Sequence[_Part]) -> bool:
    return any(part[3].dirty for part in chain)


__all__ = ["SessionEmission", "SessionEngine"]

"""The `Engine`: batches of decoded records in, `BatchResult` and `Emission` values out.

The runtime calls `process` for each batch it reads and `emit` once per trigger; the
engine does no I/O of its own beyond its WindowStores and reads wall time only through
the injected clock (for idle and wall-clock state timeouts).

Exactly-once contract with the runtime (STREAMING.md, "Exactly once"):
    * `Emission.partials` carry absolute per-partition states; upsert them, write the
      rows, delete `Emission.evicted`, and commit the ledger in one transaction;
    * a partition's store is written only at `emit`, together with its `next_offset`
      meta, so after a crash or `close()` the store equals the state as of
      `partition_next_offset(p)`; when that is not the ledger's next offset, call
      `restore` with the committed partials instead;
    * W counts local partitions (`assign`, or first seen in `process`/`restore`) and the
      partitions given to `set_remote_watermark`. At start-up, call it for every other
      partition of the topic (with its ledger watermark, or None) before the first
      `emit`, so that W never runs ahead of a partition this worker does not own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from streamproc.engine.aggregates import checked_state, plan_for
from streamproc.engine.batches import Record, run_batch
from streamproc.engine.emission import (
    EmitInput,
    collect_all,
    collect_changed,
    collect_closed,
    collect_expired,
    partials_of,
    to_rows,
)
from streamproc.engine.groupkeys import checked_internal_key, external_key_fn
from streamproc.engine.kernel import NO_TS, build_kernel
from streamproc.engine.localparts import LocalPartitions
from streamproc.engine.partition import PartitionState
from streamproc.engine.results import (
    EXPIRED_STATE,
    BatchResult,
    Emission,
    PartialRow,
    ResultRow,
)
from streamproc.engine.spec import QuerySpec
from streamproc.state.base import WindowStore


class Engine(LocalPartitions[PartitionState]):
    """Event-time windowed aggregation over the local partitions of one source.

    Args:
        spec: The query.
        store_factory: Opens the WindowStore of a partition (called on first use).
        clock: Wall clock in epoch milliseconds (idle timeout, wall state timeout); the
            engine reads no other clock, so tests drive it by hand.
        max_cached_entries: Clean entries kept in memory across emits, over all local
            partitions, before the caches are dropped (state then reads from the stores).
    """

    def __init__(
        self,
        spec: QuerySpec,
        store_factory: Callable[[int], WindowStore],
        clock: Callable[[], int],
        *,
        max_cached_entries: int = 1_000_000,
    ) -> None:
        if spec.session is not None:
            raise ValueError("a session-window query runs in SessionEngine, not Engine")
        super().__init__(spec, clock)
        self._plan = plan_for(spec)
        self._kernel = build_kernel(spec, self._plan)
        self._external = external_key_fn(len(spec.group_by))
        self._factory = store_factory
        self._max_cached = max_cached_entries
        self._last_emit_watermark_ms: int | None = None
        #: Tombstones of expired (key, window)s (windowed stateTimeout), by window
        #: start, shared by every local partition (internal keys).
        self._expired: dict[int | None, set[Any]] = {}

    # Records ------------------------------------------------------------------------

    def process(self, records: Sequence[Record]) -> BatchResult:
        """Fold a batch of (partition, offset, decoded record) into state.

        Records of one partition must come in offset order; partitions may interleave
        in any way. Lateness uses each partition's watermark from the records before;
        "window closed" uses the global watermark W as of the start of the batch (both
        event time); idleness uses the clock (wall time) once per call.
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

    def emit(self, *, closed_partials: bool = True, expire_idle: bool = False) -> Emission:
        """Produce the trigger's rows, partials, evictions and closed windows.

        Also writes every local partition's changed state and metadata to its store.

        Args:
            closed_partials: Include the partials of windows this emit closes. A
                runtime that writes rows merged here (it owns every partition)
                and drops the stored partials of closed windows by W needs none.
            expire_idle: Expire idle (key, window)s of a windowed state timeout here
                (`Emission.expired`). Only right when the local partitions are every
                partition of the topic; otherwise the checkpoint decides on the
                merged activity of all partitions.
        """
        now = self._clock()
        w = self._update_watermark(now)
        spec = self.spec
        parts = [self._parts[p] for p in sorted(self._parts)]
        inp = EmitInput(
            spec, self._plan, parts, w, self._last_emit_watermark_ms, now, self._external
        )
        mode = spec.output_mode
        closed_states, closed, evictions = collect_closed(inp, evicting=mode != "complete")
        expired = collect_expired(inp) if expire_idle else {}
        rows: list[ResultRow]
        if mode == "append":
            # An expired (key, window) is final: its row is written now, once.
            rows = to_rows(inp, closed_states) + to_rows(inp, expired)
        elif mode == "update":
            rows = to_rows(inp, collect_changed(inp))
        else:
            rows = to_rows(inp, collect_all(inp, evictions))
        partials: dict[int, tuple[PartialRow, ...]] = {}
        for ps in parts:
            ev = evictions[ps.partition]
            partials[ps.partition], puts = partials_of(inp, ps, ev, closed_partials, expired)
            drop_keys = ev.keys + [(ws, key) for ws, keys in expired.items() for key in keys]
            ps.commit(puts, ev.windows, drop_keys, self._meta(ps, w))
        self._trim_caches()
        self._remember_expired(expired, w)
        if w is not None:
            self._last_emit_watermark_ms = w
        size = inp.size_ms
        return Emission(
            rows=tuple(rows),
            partials=partials,
            evicted={p: tuple(ev.window_keys) for p, ev in evictions.items()},
            closed=tuple(closed),
            global_watermark_ms=w,
            expired=tuple(
                (self._external(key), ws, None if ws is None else ws + size)
                for ws, keys in expired.items()
                for key in keys
            ),
        )

    def _remember_expired(
        self, expired: Mapping[int | None, Mapping[Any, Any]], w: int | None
    ) -> None:
        """Keep the new tombstones; forget those of windows W closed (closing drops them)."""
        for ws, keys in expired.items():
            self._expired.setdefault(ws, set()).update(keys)
        window = self.spec.window
        if self._expired and window is not None and w is not None:
            for ws in [ws for ws in self._expired if ws is not None and ws + window.size_ms <= w]:
                del self._expired[ws]

    # Partitions ---------------------------------------------------------------------

    def assign(self, partitions: Iterable[int]) -> None:
        """Open local partitions; until they have data they hold the watermark back."""
        now = self._clock()
        for partition in partitions:
            if partition not in self._parts:
                self._open(partition, now)
        self._update_watermark(now)

    def revoke(self, partitions: Iterable[int]) -> None:
        """Drop local partitions: close their stores, discard changes since the last emit."""
        for partition in partitions:
            ps = self._parts.pop(partition, None)
            if ps is not None:
                ps.store.close()

    def restore(
        self,
        partition: int,
        max_event_ts_ms: int | None,
        partials: Iterable[PartialRow],
        *,
        next_offset: int | None = None,
    ) -> None:
        """Replace a partition's state with what the runtime committed.

        Args:
            partition: The partition (opened if not local yet).
            max_event_ts_ms: Its committed max event time (ledger), None before any.
            partials: Its committed partial states (absolute, as emitted).
            next_offset: The ledger's next offset, kept in the store's metadata.

        Raises:
            ValueError: a partial does not fit the query (key width, window, slots).
        """
        now = self._clock()
        entries = []
        for row in partials:
            if row.state == EXPIRED_STATE:
                # A tombstone: the (key, window) expired, in every partition.
                ws, key, _ = self._restored_entry(row, tombstone=True)
                self._expired.setdefault(ws, set()).add(key)
            else:
                entries.append(self._restored_entry(row))
        ps = self._parts.get(partition)
        if ps is None:
            ps = self._open(partition, now)
        meta = {
            "max_event_ts_ms": max_event_ts_ms,
            "next_offset": next_offset,
            "watermark_ms": self._watermark.current_ms,
        }
        ps.reset(entries, meta)
        ps.last_active_ms = now
        self._update_watermark(now)

    def advance_global_watermark(self, watermark_ms: int) -> None:
        """Raise W to at least this value (event time), e.g. the last committed W."""
        self._watermark.advance_to(watermark_ms)
        if self._last_emit_watermark_ms is None or watermark_ms > self._last_emit_watermark_ms:
            self._last_emit_watermark_ms = self._watermark.current_ms

    @property
    def tombstones(self) -> int:
        """Expired (key, window)s held until W passes their window's end (stateTimeout)."""
        return sum(map(len, self._expired.values()))

    @property
    def kernel_source(self) -> str:
        """Source of the generated per-record loop, for debugging."""
        return self._kernel.source

    def state_bytes(self) -> int | None:
        """The local stores' own estimate of their size, summed; None when one cannot say."""
        total = 0
        for ps in list(self._parts.values()):
            size = ps.store.approximate_bytes()
            if size is None:
                return None
            total += size
        return total

    def close(self) -> None:
        """Close every store; changes since the last emit are not written."""
        for ps in self._parts.values():
            ps.store.close()
        self._parts.clear()

    # Internals ----------------------------------------------------------------------

    def _open(self, partition: int, now: int) -> PartitionState:
        ps = PartitionState(
            partition, self._factory(partition), self._plan.init, now, self._expired
        )
        self._parts[partition] = ps
        self._watermark.drop_remote(partition)
        stored_w = ps.stored_watermark_ms
        if stored_w is not None and self.spec.output_mode == "complete":
            # Windows closed before that emit were reported then; do not report again.
            last = self._last_emit_watermark_ms
            self._last_emit_watermark_ms = stored_w if last is None else max(last, stored_w)
        return ps

    def _meta(self, ps: PartitionState, w: int | None) -> dict[str, Any]:
        return {
            "max_event_ts_ms": ps.max_event_ts_ms,
            "next_offset": ps.next_offset,
            "watermark_ms": w,
        }

    def _trim_caches(self) -> None:
        parts = self._parts.values()
        if sum(ps.cached_entries() for ps in parts) > self._max_cached:
            for ps in parts:
                ps.drop_cache()

    def _restored_entry(
        self, row: PartialRow, *, tombstone: bool = False
    ) -> tuple[int | None, Any, list[Any]]:
        spec = self.spec
        if tombstone and (spec.window is None or spec.state_timeout_ms is None):
            raise ValueError(f"partial {row!r} is a tombstone; the query expires no window")
        ws = row.window_start_ms
        if spec.window is None:
            if ws is not None or row.window_end_ms is not None:
                raise ValueError(f"partial {row!r} has a window; the query has none")
        elif ws is None or (ws - ws % spec.window.slide_ms) != ws:
            raise ValueError(f"partial {row!r} does not start on a window boundary")
        elif row.window_end_ms not in (None, ws + spec.window.size_ms):
            raise ValueError(f"partial {row!r} does not end {spec.window.size_ms} ms later")
        key = checked_internal_key(row.key, spec.group_by)
        if tombstone:
            return ws, key, []
        return ws, key, checked_state(spec, row.state)


__all__ = ["Engine", "Record"]

"""One local partition's state: a write-back working set in front of its WindowStore.

    dirty   {window start: {key: state list}}   changed since the last emit
    cache   {window start: {key: state list}}   clean copies of stored entries
    store   the WindowStore, as of the last emit (plus metadata: max event time,
            next offset, W at that emit)

An entry lives in at most one of dirty and cache; the store may hold an older version of
a dirty entry. The batch loop touches only `dirty`; the first touch of an entry in an emit
cycle goes through `load`, which moves it from the cache, reads it from the store (once),
or starts it empty (unless the (key, window) expired: the engine's tombstones, shared by
its partitions and kept in memory, make `load` answer None). `complete` is True while
cache + dirty hold every stored entry (a new or restored store), so a miss needs no store
read at all. `emit` writes dirty entries back in one atomic store write and moves them to
the cache; the cache is dropped when the engine's cache budget is exceeded.

The store is written only by emit (and by restore), so after a crash or `close()` it is
exactly the state as of its `next_offset` meta: the runtime replays from there.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from streamproc.engine.kernel import NO_MIN_TS, NO_TS
from streamproc.state.base import Entry, Key, WindowStart, WindowStore

StateList = list[Any]
Window = dict[Key, Any]


class PartitionState:
    """Working state of one local partition (see module docstring)."""

    __slots__ = (
        "_init",
        "batch_min_ts",
        "cache",
        "complete",
        "dirty",
        "expired",
        "last_active_ms",
        "max_ts",
        "next_offset",
        "partition",
        "store",
        "stored",
        "stored_watermark_ms",
        "written_meta",
    )

    def __init__(
        self,
        partition: int,
        store: WindowStore,
        init: tuple[Any, ...],
        now_ms: int,
        expired: dict[WindowStart, set[Key]] | None = None,
    ):
        self.partition = partition
        #: The query's tombstones (windowed stateTimeout), shared by every local
        #: partition: an expired (key, window) takes no record in any partition.
        self.expired: dict[WindowStart, set[Key]] = {} if expired is None else expired
        self.store = store
        self._init = list(init)
        meta = store.read_meta()
        max_ts = meta.get("max_event_ts_ms")
        self.max_ts: int = NO_TS if max_ts is None else int(max_ts)
        #: Min event time of the current `Engine.process` call's records (NO_MIN_TS: none).
        self.batch_min_ts: int = NO_MIN_TS
        self.next_offset: int | None = meta.get("next_offset")
        self.stored_watermark_ms: int | None = meta.get("watermark_ms")
        self.written_meta: dict[str, Any] = meta
        self.stored: set[WindowStart] = set(store.window_starts())
        self.complete = not self.stored
        self.dirty: dict[WindowStart, Window] = {}
        self.cache: dict[WindowStart, Window] = {}
        self.last_active_ms = now_ms

    @property
    def max_event_ts_ms(self) -> int | None:
        """Max event time of the partition's aggregated records, None before any."""
        return None if self.max_ts == NO_TS else self.max_ts

    @property
    def batch_min_event_ts_ms(self) -> int | None:
        """Min event time of the last process call's aggregated and late records, None if none."""
        return None if self.batch_min_ts == NO_MIN_TS else self.batch_min_ts

    def load(self, ws: WindowStart, key: Key) -> StateList | None:
        """The state of an entry about to change (called by the batch loop on a miss).

        None when the (key, window) expired (a tombstone): it must not start afresh.
        """
        window = self.cache.get(ws)
        if window is not None:
            state = window.pop(key, None)
            if state is not None:
                return state  # type: ignore[no-any-return]
        if not self.complete and ws in self.stored:
            stored = self.store.get(ws, key)
            if stored is not None:
                return list(stored)
        if self.expired:
            gone = self.expired.get(ws)
            if gone is not None and key in gone:
                return None
        return self._init.copy()

    # Reading without changing -------------------------------------------------------

    def window_starts(self) -> set[WindowStart]:
        """Every window start with an entry in dirty, cache or store."""
        return self.stored | self.cache.keys() | self.dirty.keys()

    def window_view(self, ws: WindowStart) -> dict[Key, Any]:
        """Every entry of one window: store, overlaid by cache, overlaid by dirty."""
        view: dict[Key, Any] = {}
        if not self.complete and ws in self.stored:
            view.update(self.store.scan_window(ws))
        cached = self.cache.get(ws)
        if cached:
            view.update(cached)
        changed = self.dirty.get(ws)
        if changed:
            view.update(changed)
        return view

    def lookup(self, ws: WindowStart, keys: dict[Key, None]) -> Iterator[tuple[Key, Any]]:
        """The states this partition holds for some keys of one window."""
        changed = self.dirty.get(ws) or {}
        cached = self.cache.get(ws) or {}
        may_be_stored = not self.complete and ws in self.stored
        if not may_be_stored and len(changed) + len(cached) < len(keys):
            # Fewer entries here than keys asked: walk them instead of probing.
            for source in (cached, changed):
                for key, state in source.items():
                    if key in keys:
                        yield key, state
            return
        for key in keys:
            state = changed.get(key)
            if state is None:
                state = cached.get(key)
            if state is None and may_be_stored:
                state = self.store.get(ws, key)
            if state is not None:
                yield key, state

    def cached_entries(self) -> int:
        """Entries held in memory (dirty + cache)."""
        return sum(map(len, self.cache.values())) + sum(map(len, self.dirty.values()))

    # Writing --------------------------------------------------------------------------

    def commit(
        self,
        puts: list[Entry],
        drop_windows: Iterable[WindowStart],
        drop_keys: Iterable[tuple[WindowStart, Key]],
        meta: dict[str, Any],
    ) -> None:
        """Write changed entries and drop evicted ones in one atomic store write.

        Args:
            puts: The dirty entries to keep, as (window start, key, state tuple).
            drop_windows: Windows evicted entirely.
            drop_keys: Single entries evicted.
            meta: The partition's metadata as of this emit.
        """
        drop_windows = set(drop_windows)
        drop_keys = list(drop_keys)
        stored_drops = [ws for ws in drop_windows if ws in self.stored]
        if puts or drop_keys or stored_drops or meta != self.written_meta:
            # An idle partition costs no store write per emit.
            self.store.write(puts=puts, deletes=drop_keys, drop_windows=stored_drops, meta=meta)
            self.written_meta = meta
        cache = self.cache
        for ws, window in self.dirty.items():
            target = cache.get(ws)
            if target is None:
                cache[ws] = window
            else:
                target.update(window)
            self.stored.add(ws)
        self.dirty = {}
        for ws in drop_windows:
            cache.pop(ws, None)
            self.stored.discard(ws)
        for ws, key in drop_keys:
            kept = cache.get(ws)
            if kept is not None:
                kept.pop(key, None)

    def drop_cache(self) -> None:
        """Forget clean entries (they stay in the store); later misses read the store."""
        if self.cache:
            self.cache = {}
            self.complete = False

    def reset(
        self, entries: Iterable[tuple[WindowStart, Key, StateList]], meta: dict[str, Any]
    ) -> None:
        """Replace the whole state (restore), writing it to the store at once."""
        self.store.clear()
        self.dirty = {}
        cache: dict[WindowStart, Window] = {}
        for ws, key, state in entries:
            cache.setdefault(ws, {})[key] = state
        self.store.write(
            puts=[(ws, k, s) for ws, window in cache.items() for k, s in window.items()],
            meta=meta,
        )
        self.written_meta = meta
        self.cache = cache
        self.stored = set(cache)
        self.complete = True
        max_ts = meta.get("max_event_ts_ms")
        self.max_ts = NO_TS if max_ts is None else int(max_ts)
        self.next_offset = meta.get("next_offset")

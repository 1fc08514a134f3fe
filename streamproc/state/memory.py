"""`MemoryWindowStore`: the in-process WindowStore, for tests and small state.

States are kept as the tuples written, so the store holds a snapshot as of the last
`write`, exactly like the RocksDB store, whatever the engine does to its own lists.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from streamproc.state.base import Entry, Key, State, WindowStart, window_order


class MemoryWindowStore:
    """A WindowStore in a dict of windows, each a dict of keys."""

    def __init__(self) -> None:
        self._windows: dict[WindowStart, dict[Key, State]] = {}
        self._meta: dict[str, Any] = {}
        self.closed = False

    def get(self, window_start_ms: WindowStart, key: Key) -> State | None:
        """The state of one entry, or None."""
        window = self._windows.get(window_start_ms)
        return None if window is None else window.get(key)

    def scan_window(self, window_start_ms: WindowStart) -> Iterator[tuple[Key, State]]:
        """Every entry of one window."""
        return iter(list(self._windows.get(window_start_ms, {}).items()))

    def window_starts(self) -> list[WindowStart]:
        """Window starts that have entries, ascending (None first)."""
        return sorted((ws for ws, keys in self._windows.items() if keys), key=window_order)

    def write(
        self,
        puts: Iterable[Entry] = (),
        deletes: Iterable[tuple[WindowStart, Key]] = (),
        drop_windows: Iterable[WindowStart] = (),
        meta: Mapping[str, Any] | None = None,
    ) -> None:
        """Apply changes: drop windows, delete entries, then put entries."""
        windows = self._windows
        for ws in drop_windows:
            windows.pop(ws, None)
        for ws, key in deletes:
            window = windows.get(ws)
            if window is not None:
                window.pop(key, None)
                if not window:
                    del windows[ws]
        for ws, key, state in puts:
            window = windows.get(ws)
            if window is None:
                window = windows[ws] = {}
            window[key] = tuple(state)
        if meta is not None:
            self._meta = dict(meta)

    def read_meta(self) -> dict[str, Any]:
        """The metadata last written (empty for a new store)."""
        return dict(self._meta)

    def clear(self) -> None:
        """Remove every entry and the metadata."""
        self._windows.clear()
        self._meta = {}

    def close(self) -> None:
        """Mark the store closed; the data stays readable for tests."""
        self.closed = True

    def approximate_bytes(self) -> int | None:
        """Unknown: Python objects have no cheap size (the metric is left unset)."""
        return None


def memory_store_factory(partition: int) -> MemoryWindowStore:
    """A fresh MemoryWindowStore for a partition (an `Engine` store factory)."""
    del partition  # one independent store per call
    return MemoryWindowStore()

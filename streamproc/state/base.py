"""The `WindowStore` port: one store per source partition, holding partial states.

An entry is addressed by (window start, group key): the window start in event-time epoch
milliseconds (None for non-windowed queries), and the engine's internal group key (a
scalar or a tuple of JSON scalars, see `streamproc.engine.groupkeys`). Its value is the
partial state as a tuple of JSON values. Iteration runs in window-start order (None
first).

Each store also holds a small metadata mapping (JSON values) that the engine writes in
the same atomic `write` as the state, so a reopened store is consistent with its own
`next_offset`.

The engine keeps its working set in memory and calls `write` once per emit; nothing here
is on the per-record path.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Protocol

#: The engine's internal group key: a str, int or None, or a tuple of JSON scalars.
Key = Any
State = tuple[Any, ...]
WindowStart = int | None
Entry = tuple[WindowStart, Key, State]


class LocalStateError(RuntimeError):
    """The local working state (checkpointLocation) cannot be used: the path and the error.

    Not an outage of the sink: waiting does not help, and a rerun resumes
    exactly from the checkpoint once the path is usable again.
    """


class WindowStore(Protocol):
    """Partial states of one partition, keyed by (window start, group key)."""

    def get(self, window_start_ms: WindowStart, key: Key) -> State | None:
        """The state of one entry, or None."""
        ...

    def scan_window(self, window_start_ms: WindowStart) -> Iterator[tuple[Key, State]]:
        """Every entry of one window."""
        ...

    def window_starts(self) -> list[WindowStart]:
        """Window starts that have entries, ascending (None first)."""
        ...

    def write(
        self,
        puts: Iterable[Entry] = (),
        deletes: Iterable[tuple[WindowStart, Key]] = (),
        drop_windows: Iterable[WindowStart] = (),
        meta: Mapping[str, Any] | None = None,
    ) -> None:
        """Apply changes atomically: drop windows, delete entries, then put entries.

        Args:
            puts: Entries to insert or replace.
            deletes: Entries to remove.
            drop_windows: Windows whose entries are all removed.
            meta: Replacement metadata, or None to keep it.
        """
        ...

    def read_meta(self) -> dict[str, Any]:
        """The metadata last written (empty for a new store)."""
        ...

    def clear(self) -> None:
        """Remove every entry and the metadata."""
        ...

    def close(self) -> None:
        """Release the store; its data stays where it is (on disk for RocksDB)."""
        ...

    def approximate_bytes(self) -> int | None:
        """What the store's data takes, as the store estimates it cheaply; None: unknown."""
        ...


def window_order(window_start_ms: WindowStart) -> tuple[bool, int]:
    """Sort key putting None (non-windowed) before every window start."""
    return (window_start_ms is not None, window_start_ms or 0)

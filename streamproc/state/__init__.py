"""Window state stores: the WindowStore port and its memory and RocksDB implementations."""

from streamproc.state.base import Entry, Key, LocalStateError, State, WindowStart, WindowStore
from streamproc.state.memory import MemoryWindowStore, memory_store_factory
from streamproc.state.rocks import RocksWindowStore, rocks_store_factory

__all__ = [
    "Entry",
    "Key",
    "LocalStateError",
    "MemoryWindowStore",
    "RocksWindowStore",
    "State",
    "WindowStart",
    "WindowStore",
    "memory_store_factory",
    "rocks_store_factory",
]

"""`RocksWindowStore`: partial states in RocksDB (rocksdict), one DB per partition.

Layout of `<directory>/partition-<p>` (raw byte keys and values):

    key   = window prefix (8 bytes) + marshal(group key)
            window prefix = (window start + 2**63) as unsigned big-endian, i.e. the signed
            start with its sign bit flipped, so byte order is time order, negative (pre-
            1970) starts included; 8 zero bytes for non-windowed state (None), below
            every real window
    value = marshal(state tuple)
    meta  = key b"\\xff" * 8 + b"meta", after every window; value marshal(dict)

Why marshal (format version 2): it round-trips exactly the JSON-shaped values the engine
stores (ints of any size, floats bit for bit, str, None, bool vs int kept apart, lists and
dicts for first/last values), it is the fastest codec in the standard library (about
0.2 us per state, json is ten times slower), and version 2 writes no back-references,
so equal keys always encode to equal bytes, which a key encoding needs. Version 2 has
been frozen since Python 2.5.
"""

from __future__ import annotations

import marshal
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from rocksdict import BlockBasedOptions, Cache, Options, Rdict, WriteBatch, WriteBufferManager

from streamproc.state.base import Entry, Key, LocalStateError, State, WindowStart

_MARSHAL_VERSION = 2
_OFFSET = 2**63
_NON_WINDOWED = bytes(8)
_META_KEY = b"\xff" * 8 + b"meta"
_dumps = marshal.dumps
_loads = marshal.loads


def window_prefix(window_start_ms: WindowStart) -> bytes:
    """The 8-byte, order-preserving encoding of a window start (None first)."""
    if window_start_ms is None:
        return _NON_WINDOWED
    return (window_start_ms + _OFFSET).to_bytes(8, "big")


def decode_window_prefix(prefix: bytes) -> WindowStart:
    """Inverse of `window_prefix`."""
    if prefix == _NON_WINDOWED:
        return None
    return int.from_bytes(prefix, "big") - _OFFSET


def encode_key(window_start_ms: WindowStart, key: Key) -> bytes:
    """The RocksDB key of an entry."""
    return window_prefix(window_start_ms) + _dumps(key, _MARSHAL_VERSION)


def decode_key(raw: bytes) -> tuple[WindowStart, Key]:
    """Inverse of `encode_key`."""
    key: Key = _loads(raw[8:])
    return decode_window_prefix(raw[:8]), key


def encode_state(state: Sequence[Any]) -> bytes:
    """The RocksDB value of a state."""
    return _dumps(tuple(state), _MARSHAL_VERSION)


def decode_state(raw: bytes) -> State:
    """Inverse of `encode_state`."""
    state: State = _loads(raw)
    return state


#: Memory of one worker's RocksDB state, over all its partitions. RocksDB's
#: defaults (a 64 MiB write buffer per database, up to two of them) let each
#: partition grow by 128 MiB before anything is flushed: a worker owning four
#: partitions grew steadily for half an hour under a steady load. Memtables
#: are capped together (flushed to disk past the cap) and blocks read back
#: share one cache.
MEMTABLE_BUDGET_BYTES = 16 * 1_048_576
BLOCK_CACHE_BYTES = 8 * 1_048_576
_WRITE_BUFFER_BYTES = 2 * 1_048_576


class RocksMemory:
    """The memory one worker's RocksDB stores share: memtable budget and block cache."""

    def __init__(
        self, memtables: int = MEMTABLE_BUDGET_BYTES, block_cache: int = BLOCK_CACHE_BYTES
    ) -> None:
        self.write_buffers = WriteBufferManager(memtables, False)
        self.block_cache = Cache(block_cache)

    def options(self) -> Options:
        """Options of one store, drawing on the shared budget."""
        options = Options(raw_mode=True)
        options.create_if_missing(True)
        options.set_write_buffer_manager(self.write_buffers)
        options.set_write_buffer_size(_WRITE_BUFFER_BYTES)
        options.set_max_write_buffer_number(2)
        table = BlockBasedOptions()
        table.set_block_cache(self.block_cache)
        options.set_block_based_table_factory(table)
        options.set_keep_log_file_num(2)
        return options


class RocksWindowStore:
    """A WindowStore in one RocksDB database (a directory)."""

    def __init__(self, path: str | Path, memory: RocksMemory | None = None) -> None:
        self.path = Path(path)
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            options = (memory or RocksMemory()).options()
            self._db = Rdict(str(self.path), options)
        except Exception as exc:
            raise LocalStateError(f"local state at {self.path} cannot be opened: {exc}") from None

    def get(self, window_start_ms: WindowStart, key: Key) -> State | None:
        """The state of one entry, or None."""
        raw = self._db.get(encode_key(window_start_ms, key))
        return None if raw is None else decode_state(raw)

    def scan_window(self, window_start_ms: WindowStart) -> Iterator[tuple[Key, State]]:
        """Every entry of one window (a prefix scan)."""
        prefix = window_prefix(window_start_ms)
        for raw_key, raw_value in self._scan_from(prefix):
            if raw_key[:8] != prefix:
                return
            yield _loads(raw_key[8:]), decode_state(raw_value)

    def window_starts(self) -> list[WindowStart]:
        """Window starts that have entries, ascending: one seek per window."""
        out: list[WindowStart] = []
        it = self._db.iter()
        it.seek_to_first()
        while it.valid():
            prefix: bytes = it.key()[:8]
            if prefix == _META_KEY[:8]:
                break
            out.append(decode_window_prefix(prefix))
            it.seek((int.from_bytes(prefix, "big") + 1).to_bytes(8, "big"))
        return out

    def _scan_from(self, start: bytes) -> Iterator[tuple[bytes, bytes]]:
        it = self._db.iter()
        it.seek(start)
        while it.valid():
            yield it.key(), it.value()
            it.next()

    def write(
        self,
        puts: Iterable[Entry] = (),
        deletes: Iterable[tuple[WindowStart, Key]] = (),
        drop_windows: Iterable[WindowStart] = (),
        meta: Mapping[str, Any] | None = None,
    ) -> None:
        """Apply changes in one WriteBatch: drop windows, delete entries, then put."""
        batch = WriteBatch(raw_mode=True)
        for ws in drop_windows:
            prefix = window_prefix(ws)
            batch.delete_range(prefix, (int.from_bytes(prefix, "big") + 1).to_bytes(8, "big"))
        for ws, key in deletes:
            batch.delete(encode_key(ws, key))
        put = batch.put
        for ws, key, state in puts:
            put(window_prefix(ws) + _dumps(key, 2), _dumps(tuple(state), 2))
        if meta is not None:
            put(_META_KEY, _dumps(dict(meta), _MARSHAL_VERSION))
        self._write(batch)

    def _write(self, batch: WriteBatch) -> None:
        try:
            self._db.write(batch)
        except Exception as exc:  # a full disk, a path made read-only
            raise LocalStateError(f"local state at {self.path}: write failed: {exc}") from None

    def read_meta(self) -> dict[str, Any]:
        """The metadata last written (empty for a new store)."""
        raw = self._db.get(_META_KEY)
        return {} if raw is None else dict(_loads(raw))

    def clear(self) -> None:
        """Remove every entry and the metadata (one range delete)."""
        batch = WriteBatch(raw_mode=True)
        batch.delete_range(b"", b"\xff" * 9)
        self._write(batch)

    def approximate_bytes(self) -> int | None:
        """RocksDB's own estimate: live data in its files plus what its memtables hold."""
        try:
            live = self._db.property_int_value("rocksdb.estimate-live-data-size") or 0
            memtables = self._db.property_int_value("rocksdb.cur-size-all-mem-tables") or 0
        except Exception:  # a closed database: nothing to say
            return None
        return int(live) + int(memtables)

    def close(self) -> None:
        """Close the database; it can be reopened from the same path."""
        try:
            self._db.close()
        except Exception as exc:  # after a failed write RocksDB refuses to flush
            raise LocalStateError(f"local state at {self.path}: close failed: {exc}") from None


def rocks_store_factory(directory: str | Path) -> Callable[[int], RocksWindowStore]:
    """An `Engine` store factory opening `<directory>/partition-<p>` per partition.

    The directory is created and probed for writing now, so an unusable
    checkpointLocation stops the query before it joins the group.

    Raises:
        LocalStateError: the directory cannot be created or written.
    """
    root = Path(directory)
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe = root / ".writable"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        reason = exc.strerror or str(exc)  # the path is named once, not twice
        raise LocalStateError(f"local state at {root} cannot be written: {reason}") from None

    memory = RocksMemory()

    def open_partition(partition: int) -> RocksWindowStore:
        return RocksWindowStore(root / f"partition-{partition}", memory)

    return open_partition

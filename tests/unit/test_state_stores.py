"""The WindowStore port: the memory and RocksDB stores pass the same tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamproc.state import MemoryWindowStore, RocksWindowStore, WindowStore
from streamproc.state.rocks import decode_key, encode_key, window_prefix

Factory = Callable[[], WindowStore]


@pytest.fixture(params=["memory", "rocksdb"])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Factory]:
    opened: list[WindowStore] = []

    def make() -> WindowStore:
        store: WindowStore
        if request.param == "memory":
            store = MemoryWindowStore()
        else:
            store = RocksWindowStore(tmp_path / f"db{len(opened)}")
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()


def entries(store: WindowStore) -> list[tuple[object, object, object]]:
    """Every entry of a store, in window order, read through the port."""
    return [(ws, k, v) for ws in store.window_starts() for k, v in store.scan_window(ws)]


def test_put_get_delete(make_store: Factory) -> None:
    store = make_store()
    assert store.get(0, "a") is None
    store.write(puts=[(0, "a", (1, 2.5, None)), (10, ("x", True, "b1"), (3, "s", [1]))])
    assert store.get(0, "a") == (1, 2.5, None)
    assert store.get(10, ("x", True, "b1")) == (3, "s", [1])
    assert store.get(0, "b") is None
    store.write(deletes=[(0, "a")])
    assert store.get(0, "a") is None


def test_window_starts_and_items_run_in_time_order_including_pre_1970(
    make_store: Factory,
) -> None:
    store = make_store()
    starts = [40, -10, 0, -(2**40), 10**13, -20]
    store.write(puts=[(ws, f"k{i}", (i,)) for i, ws in enumerate(starts)])
    store.write(puts=[(0, "zz", (99,))])
    assert store.window_starts() == sorted(starts)
    assert [ws for ws, _, _ in entries(store)] == sorted([*starts, 0])
    assert dict(store.scan_window(0)) == {"k2": (2,), "zz": (99,)}
    assert list(store.scan_window(5)) == []


def test_non_windowed_entries_come_first(make_store: Factory) -> None:
    store = make_store()
    store.write(puts=[(5, "a", (1,)), (None, "a", (2,))])
    assert store.window_starts() == [None, 5]
    assert dict(store.scan_window(None)) == {"a": (2,)}


def test_write_is_drop_then_delete_then_put_with_meta(make_store: Factory) -> None:
    store = make_store()
    store.write(puts=[(0, "a", (1,)), (0, "b", (2,)), (10, "a", (3,))])
    store.write(
        puts=[(0, "c", (4,))],
        deletes=[(10, "a")],
        drop_windows=[0],
        meta={"next_offset": 7, "max_event_ts_ms": None},
    )
    assert list(entries(store)) == [(0, "c", (4,))]
    assert store.read_meta() == {"next_offset": 7, "max_event_ts_ms": None}
    store.write(puts=[(20, "d", (5,))])
    assert store.read_meta()["next_offset"] == 7  # meta kept when not given
    store.clear()
    assert list(entries(store)) == [] and store.read_meta() == {}


def test_rocksdb_store_survives_close_and_reopen(tmp_path: Path) -> None:
    store = RocksWindowStore(tmp_path / "p0")
    store.write(puts=[(-30, ("k", 1.5, "f1"), (1, None, "x"))], meta={"next_offset": 3})
    store.close()
    again = RocksWindowStore(tmp_path / "p0")
    assert list(entries(again)) == [(-30, ("k", 1.5, "f1"), (1, None, "x"))]
    assert again.read_meta() == {"next_offset": 3}
    again.close()


def test_rocksdb_store_estimates_its_size_and_grows_with_its_data(tmp_path: Path) -> None:
    store = RocksWindowStore(tmp_path / "p0")
    empty = store.approximate_bytes()
    assert empty is not None
    store.write(puts=[(i * 60_000, (f"key-{i}",), (i, "x" * 200)) for i in range(2_000)])
    grown = store.approximate_bytes()
    assert grown is not None and grown - empty >= 2_000 * 200  # the values alone
    store.close()
    assert store.approximate_bytes() is None  # closed: nothing to say
    assert MemoryWindowStore().approximate_bytes() is None


@given(st.lists(st.one_of(st.none(), st.integers(-(2**62), 2**62)), min_size=2, max_size=20))
def test_window_prefix_order_is_time_order(starts: list[int | None]) -> None:
    encoded = sorted(starts, key=window_prefix)
    assert encoded == sorted(starts, key=lambda s: (s is not None, s or 0))
    assert all(len(window_prefix(s)) == 8 for s in starts)


@given(
    st.one_of(st.none(), st.integers(-(10**14), 10**14)),
    st.one_of(
        st.text(),
        st.integers(),
        st.none(),
        st.tuples(st.text(), st.integers(), st.none(), st.booleans()),
    ),
)
def test_keys_round_trip_and_equal_keys_encode_equal(ws: int | None, key: object) -> None:
    assert decode_key(encode_key(ws, key)) == (ws, key)
    copy = decode_key(encode_key(ws, key))[1]
    assert encode_key(ws, copy) == encode_key(ws, key)

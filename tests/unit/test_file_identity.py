"""Which file is which: heads, and a listing reconciled with the registered files (pure)."""

from __future__ import annotations

import pytest

from streamproc.sources.file_identity import (
    HEAD_BYTES,
    FileId,
    Known,
    Seen,
    heads_match,
    identity_length,
    reconcile,
)


@pytest.mark.parametrize(
    ("head", "length"),
    [
        (b"", None),
        (b'{"a":1}', None),  # no complete line yet
        (b'{"a":1}\n', 8),
        (b'{"a":1}\n{"b":', 8),
        (b"\n  \n{}\n", 7),  # blank lines first: through the first non-blank one
        (b"\n\n", None),
        (b"x" * HEAD_BYTES, HEAD_BYTES),  # a first line longer than the head
    ],
)
def test_a_head_identifies_its_file_through_its_first_line(head: bytes, length: int | None) -> None:
    assert identity_length(head) == length


@pytest.mark.parametrize(
    ("stored", "seen", "match"),
    [
        (b"a\n", b"a\n", True),
        (b"a\n", b"a\nb\n", True),  # the file grew
        (b"a\nb\n", b"a\n", True),  # a copy being written: the first line is there
        (b"a\nb\n", b"a", False),  # not even the first line
        (b"a\nb\n", b"a\nc\n", False),  # the second line differs
        (b"a\n", b"b\n", False),
        (b"a\n", b"", False),  # truncated
        (b"a", b"a\n", False),  # the stored head identifies nothing
    ],
)
def test_heads_match_on_their_common_prefix_covering_the_first_line(
    stored: bytes, seen: bytes, match: bool
) -> None:
    assert heads_match(stored, seen) is match


A, B, C, D = FileId(1, 10), FileId(1, 11), FileId(1, 12), FileId(1, 13)
HEAD_A, HEAD_B, HEAD_C = b'{"n":"a"}\n', b'{"n":"b"}\n', b'{"n":"c"}\n'


def _known(ordinal: int, path: str, file_id: FileId | None, head: bytes, read: int = 0) -> Known:
    return Known(ordinal, path, file_id, head, read)


def _seen(path: str, file_id: FileId, head: bytes | None, size: int = 100, **kw: object) -> Seen:
    return Seen(path, file_id, size, head=head, **kw)  # type: ignore[arg-type]


# Each case: the registered files, the listing, and what reconcile must say:
# found (ordinal -> path), changed ordinals, missing ordinals, new paths, copies.
CASES = {
    "unchanged": (
        [_known(0, "d/a", A, HEAD_A, 50)],
        [_seen("d/a", A, HEAD_A)],
        ({0: "d/a"}, [], [], [], []),
    ),
    "unchanged, head not read (a file behind)": (
        [_known(0, "d/a", A, HEAD_A, 50)],
        [_seen("d/a", A, None)],
        ({0: "d/a"}, [], [], [], []),
    ),
    "rotated by rename, a new file larger than the byte read": (
        [_known(0, "d/app.log", A, HEAD_A, 50)],
        [_seen("d/app.log", B, HEAD_B, 500), _seen("d/app.log.1", A, HEAD_A, 60)],
        ({0: "d/app.log.1"}, [], [], ["d/app.log"], []),
    ),
    "a new file at the old name, with no line yet": (
        [_known(0, "d/app.log", A, HEAD_A, 50)],
        [_seen("d/app.log", B, b'{"half'), _seen("d/app.log.1", A, HEAD_A)],
        ({0: "d/app.log.1"}, [], [], [], []),
    ),
    "a symlink swapped (the old target not listed)": (
        [_known(0, "d/current", A, HEAD_A, 50)],
        [_seen("d/current", B, HEAD_B, target="t/b")],
        ({}, [], [0], ["d/current"], []),
    ),
    "a symlink and its target both listed: one file": (
        [],
        [_seen("d/current", A, HEAD_A, target="d/a-1"), _seen("d/a-1", A, HEAD_A)],
        ({}, [], [], ["d/a-1"], []),
    ),
    "copytruncate, the copy listed": (
        [_known(0, "d/app", A, HEAD_A, 50)],
        [_seen("d/app", A, HEAD_B, 20), _seen("d/app.1", B, HEAD_A, 50)],
        ({0: "d/app.1"}, [], [], ["d/app"], []),
    ),
    "copytruncate, the copy not listed": (
        [_known(0, "d/app", A, HEAD_A, 50)],
        [_seen("d/app", A, HEAD_B, 20)],
        ({}, [0], [], ["d/app"], []),
    ),
    "truncated, nothing written yet": (
        [_known(0, "d/app", A, HEAD_A, 50)],
        [_seen("d/app", A, b"", 0)],
        ({}, [0], [], [], []),
    ),
    "shorter than what was read, its first line still there: what it holds is new": (
        [_known(0, "d/app", A, HEAD_A, 50)],
        [_seen("d/app", A, HEAD_A, 30)],
        ({}, [0], [], ["d/app"], []),
    ),
    "the copy of copytruncate made, the file not truncated yet": (
        [_known(0, "d/app", A, HEAD_A, 50)],
        [_seen("d/app", A, HEAD_A, 60), _seen("d/app.1", B, HEAD_A, 60)],
        ({0: "d/app"}, [], [], [], ["d/app.1"]),
    ),
    "rotated, then gzipped (the plain file gone)": (
        [_known(0, "d/app.1", A, HEAD_A, 50)],
        [_seen("d/app.1.gz", B, HEAD_A, 20, gz=True)],
        ({0: "d/app.1.gz"}, [], [], [], []),
    ),
    "being gzipped: the .gz a copy while the plain file is there": (
        [_known(0, "d/app.1", A, HEAD_A, 50)],
        [_seen("d/app.1", A, HEAD_A), _seen("d/app.1.gz", B, HEAD_A[:4], gz=True)],
        ({0: "d/app.1"}, [], [], [], []),  # the .gz head has no line yet: not identified
    ),
    "deleted": (
        [_known(0, "d/a", A, HEAD_A, 50), _known(1, "d/b", B, HEAD_B)],
        [_seen("d/b", B, HEAD_B)],
        ({1: "d/b"}, [], [0], [], []),
    ),
    "an inode reused by another file elsewhere is not the file": (
        [_known(0, "d/a", A, HEAD_A, 50)],
        [_seen("d/z", A, HEAD_C)],
        ({}, [], [0], ["d/z"], []),
    ),
    "rewritten by an editor (new inode, same content)": (
        [_known(0, "d/a", A, HEAD_A, 50)],
        [_seen("d/a", B, HEAD_A + b"more\n")],
        ({0: "d/a"}, [], [], [], []),
    ),
    "registered before inodes were kept: by path and head": (
        [_known(0, "d/a", None, HEAD_A, 50), _known(1, "d/b", None, HEAD_B)],
        [_seen("d/a", A, HEAD_A), _seen("d/b", B, HEAD_C)],
        ({0: "d/a"}, [], [1], ["d/b"], []),
    ),
    "new files in modification-time order, then by name; a copy of one is not new": (
        [],
        [
            _seen("d/z", C, HEAD_C, mtime_ns=1),
            _seen("d/b", B, HEAD_B, mtime_ns=2),
            _seen("d/a", A, HEAD_A, mtime_ns=2),
            _seen("d/a-copy", D, HEAD_A, mtime_ns=3),
        ],
        ({}, [], [], ["d/z", "d/a", "d/b"], ["d/a-copy"]),
    ),
    "two registered files, one renamed onto the other's name": (
        [_known(0, "d/a", A, HEAD_A, 50), _known(1, "d/b", B, HEAD_B, 0)],
        [_seen("d/b", A, HEAD_A)],
        ({0: "d/b"}, [], [1], [], []),
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_listing_is_reconciled_with_the_registered_files(case: str) -> None:
    known, seen, (found, changed, missing, new, copies) = CASES[case]
    out = reconcile(known, seen)
    assert {o: s.path for o, s in out.found.items()} == found
    assert sorted(out.changed) == changed
    assert sorted(out.missing) == missing
    assert [s.path for s in out.new] == new
    assert [s.path for s in out.copies] == copies


def test_a_listing_is_reconciled_in_linear_time() -> None:
    # Months of rotated files deleted by retention stay registered: each listing
    # must not compare every one of them with every listed file.
    import time

    n = 3_000
    known = [_known(i, f"d/old-{i}", FileId(2, i), b'{"old":%d}\n' % i, 10) for i in range(n)]
    seen = [_seen(f"d/new-{i}", FileId(3, i), b'{"new":%d}\n' % i) for i in range(n)]
    started = time.perf_counter()
    out = reconcile(known, seen)
    assert time.perf_counter() - started < 3.0
    assert len(out.missing) == n and len(out.new) == n and not out.found

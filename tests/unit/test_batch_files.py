"""The batch file source: which files a path names, and the lines read from each."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from streamproc.batch.plan import BatchPlan
from streamproc.sources.file_listing import FileSourceError, list_files, read_file


def _tree(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    (data / "sub").mkdir(parents=True)
    for name in ("b.jsonl", "a.jsonl.gz", ".hidden", "_SUCCESS", "sub/c.jsonl"):
        (data / name).write_bytes(b"")
    return data


def test_a_directory_names_its_visible_files_in_path_order(tmp_path: Path) -> None:
    data = _tree(tmp_path)
    assert list_files(str(data)) == [str(data / "a.jsonl.gz"), str(data / "b.jsonl")]


def test_a_batch_jobs_directory_names_only_files_matching_its_patterns(tmp_path: Path) -> None:
    data = _tree(tmp_path)
    for name in ("b.jsonl.done", "notes.txt", "d.ndjson", "e.json.gz"):
        (data / name).write_bytes(b"")
    patterns = BatchPlan("p", "file", "t", "postgresql://x", None).file_patterns
    # a.jsonl.done, a marker beside the data, was loaded as JSON lines.
    assert list_files(str(data), patterns=patterns) == [
        str(data / name) for name in ("a.jsonl.gz", "b.jsonl", "d.ndjson", "e.json.gz")
    ]
    assert list_files(str(data), patterns=("*.done", "*.txt")) == [
        str(data / "b.jsonl.done"),
        str(data / "notes.txt"),
    ]
    # A glob or a file names its files itself.
    assert list_files(str(data / "*.txt"), patterns=patterns) == [str(data / "notes.txt")]


def test_a_glob_names_what_it_matches_and_recurses_with_two_stars(tmp_path: Path) -> None:
    data = _tree(tmp_path)
    assert list_files(str(data / "*.jsonl")) == [str(data / "b.jsonl")]
    assert list_files(str(data / "**" / "*.jsonl")) == [
        str(data / "b.jsonl"),
        str(data / "sub" / "c.jsonl"),
    ]


def test_a_file_names_itself(tmp_path: Path) -> None:
    data = _tree(tmp_path)
    assert list_files(str(data / "b.jsonl")) == [str(data / "b.jsonl")]


@pytest.mark.parametrize(
    ("path", "message"),
    [
        (
            "missing.jsonl",
            "extract.path: '{tmp}/missing.jsonl' does not exist; create it, or correct "
            "extract.path (a directory, a file or a glob of JSON-lines files)",
        ),
        ("*.csv", "extract.path: '{tmp}/*.csv' matches no file"),
    ],
)
def test_a_path_that_names_no_file_is_one_line(tmp_path: Path, path: str, message: str) -> None:
    with pytest.raises(FileSourceError) as caught:
        list_files(str(tmp_path / path))
    assert str(caught.value) == message.format(tmp=tmp_path)


def test_lines_are_numbered_from_zero_blank_ones_skipped_and_kept_as_bytes(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    path.write_bytes(b'{"a": 1}\n\n  \n{not json\r\n[1]\n')
    lines = read_file(3, str(path))
    assert [(r.partition, r.offset, r.value) for r in lines.records] == [
        (3, 0, b'{"a": 1}'),
        (3, 3, b"{not json\r"),
        (3, 4, b"[1]"),
    ]
    assert lines.partial_tail == 0


def test_an_incomplete_last_line_is_ignored_and_measured(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    path.write_bytes(b'{"a": 1}\n{"a": 2}')
    lines = read_file(0, str(path))
    assert [r.value for r in lines.records] == [b'{"a": 1}']
    assert lines.partial_tail == len(b'{"a": 2}')


def test_gzip_is_read_by_the_name_and_gives_the_same_lines(tmp_path: Path) -> None:
    data = b'{"a": 1}\n{"a": 2}\n{"a": 3'
    plain, packed = tmp_path / "a.jsonl", tmp_path / "a.jsonl.gz"
    plain.write_bytes(data)
    packed.write_bytes(gzip.compress(data))
    assert read_file(0, str(packed)) == read_file(0, str(plain))


def test_a_corrupt_gzip_file_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl.gz"
    path.write_bytes(gzip.compress(b'{"a": 1}\n' * 100)[:-12])
    with pytest.raises(FileSourceError, match=rf"^cannot read {path}: "):
        read_file(0, str(path))

"""The streaming file source through the whole runtime, in memory, against the model.

Files appear, grow and end with half-written lines between runs and while a
query runs; every run restarts from the checkpoint. The result table must
equal the independent model's row for row, and the ledger must count every
line exactly once.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import zlib
from dataclasses import replace
from pathlib import Path

import pytest

from streamproc.runtime.plan import QueryPlan
from streamproc.runtime.query import QueryFailedError, RunStats, StreamingQuery
from streamproc.sources.file_lines import decode_offset
from streamproc.sources.file_registry import MemoryFileRegistry
from streamproc.sources.files import FileSource, FileSourceConfig
from streamproc.state import memory_store_factory
from streamproc.testing import MemoryDatabase, memory_ports
from tests.component.filefeed import FileFeed
from tests.component.harness import make_plan, table_of
from tests.reference import assert_tables_equal, expected
from tests.streams import MODE_CASES, make_stream


def _plan(case: str, directory: Path, **changes: object) -> QueryPlan:
    plan = make_plan(MODE_CASES[case], topic=str(directory), source_type="file")
    return replace(plan, **changes)


def _query(plan: QueryPlan, registry: MemoryFileRegistry, db: MemoryDatabase) -> StreamingQuery:
    source = FileSource(
        FileSourceConfig(
            plan.query_name,
            plan.topic,
            plan.starting_offsets,
            plan.max_files_per_trigger,
            patterns=plan.file_patterns,
        ),
        registry,
    )
    return StreamingQuery(plan, memory_store_factory, ports=memory_ports(plan, source, db))


async def _run(plan: QueryPlan, registry: MemoryFileRegistry, db: MemoryDatabase) -> RunStats:
    return await asyncio.wait_for(_query(plan, registry, db).run(), 30)


def _records_in_ledger(db: MemoryDatabase, plan: QueryPlan) -> int:
    rows = db.ledger_rows(plan.query_name, plan.topic)
    # The ledger chains: each batch starts where the previous one ended.
    for before, after in itertools.pairwise(rows):
        assert after.start_offset == before.next_offset
    return sum(r.records for r in rows)


async def _committed(
    db: MemoryDatabase, plan: QueryPlan, running: asyncio.Future[RunStats], count: int
) -> None:
    """Return once the ledger counts `count` records; fail if the query ended before."""
    while _records_in_ledger(db, plan) < count:
        assert not running.done(), running.result()
        await asyncio.sleep(0.02)


@pytest.mark.parametrize("case", ["append_sliding", "update_tumbling", "complete_nonwindowed"])
async def test_files_read_across_restarts_equal_the_model(case: str, tmp_path: Path) -> None:
    records = [
        r for rs in make_stream(900, seed=zlib.crc32(case.encode()) % 97).values() for r in rs
    ]
    records.sort(key=lambda r: r["seq"])
    feed = FileFeed(tmp_path / "in")
    plan = _plan(case, feed.directory, max_records_per_trigger=120)
    registry, db = MemoryFileRegistry("q"), MemoryDatabase()

    feed.new_file("a.jsonl", records[:200])
    growing = feed.new_file(
        "b.jsonl",
        [*records[200:300], "not json"],
    )
    feed.append(growing, [], partial=b'{"user_id": "u1", ')
    first = await _run(plan, registry, db)
    # The half-written line is not read: 301 complete lines (one of them bad).
    assert (first.records, first.bad) == (301, 1)

    # The line is finished, the file grows, and new files appear (one gzip).
    feed.finish_line(
        growing, b'"event_time": "2025-11-26T10:00:00Z", "seq": -1}\n', records[300:400]
    )
    feed.new_file("c.jsonl.gz", records[400:650], gz=True)
    feed.new_file("d.jsonl", ["", *records[650:], ""])
    second = await _run(plan, registry, db)

    model = expected(MODE_CASES[case], feed.stream())
    total = len(feed.records)
    assert total == 902  # 900 records, the bad line, the finished line
    assert first.records + second.records == total
    assert _records_in_ledger(db, plan) == total
    assert first.late + second.late == len(model.late)
    assert first.bad + second.bad == len(model.bad) == 1
    assert_tables_equal(table_of(db, plan), model.table)
    assert [e.path for e in registry.entries] == [
        str(feed.directory / n) for n in ("a.jsonl", "b.jsonl", "c.jsonl.gz", "d.jsonl")
    ]


async def test_files_appearing_while_running_are_picked_up(tmp_path: Path) -> None:
    records = sorted(
        (r for rs in make_stream(400, seed=5).values() for r in rs), key=lambda r: r["seq"]
    )
    feed = FileFeed(tmp_path / "in")
    plan = _plan("update_tumbling", feed.directory, trigger="continuous")
    registry, db = MemoryFileRegistry("q"), MemoryDatabase()
    query = _query(plan, registry, db)
    running = asyncio.ensure_future(query.run())

    try:
        first = feed.new_file(
            "a.jsonl",
            records[:100],
        )
        await asyncio.wait_for(_committed(db, plan, running, 100), 30)
        feed.append(first, records[100:150], partial=b'{"user_id": "u2", "event_time": ')
        await asyncio.wait_for(_committed(db, plan, running, 150), 30)
        feed.finish_line(first, b'"2025-11-26T10:00:00Z"}\n', records[150:200])
        feed.new_file("b.jsonl", records[200:])
        await asyncio.wait_for(_committed(db, plan, running, 401), 30)
    finally:
        query.request_stop()
        stats = await asyncio.wait_for(running, 30)
    assert stats.records == 401 == len(feed.records)
    assert _records_in_ledger(db, plan) == 401
    assert_tables_equal(
        table_of(db, plan), expected(MODE_CASES["update_tumbling"], feed.stream()).table
    )


async def test_max_files_per_trigger_starts_that_many_files_a_batch(tmp_path: Path) -> None:
    records = sorted(
        (r for rs in make_stream(50, seed=9).values() for r in rs), key=lambda r: r["seq"]
    )
    feed = FileFeed(tmp_path / "in")
    for i in range(5):
        feed.new_file(f"f{i}.jsonl", records[i * 10 : (i + 1) * 10])
    plan = _plan("update_tumbling", feed.directory, max_files_per_trigger=2)
    registry, db = MemoryFileRegistry("q"), MemoryDatabase()
    stats = await _run(plan, registry, db)
    rows = db.ledger_rows(plan.query_name, plan.topic)
    spans = [
        (decode_offset(r.start_offset)[0], decode_offset(r.next_offset - 1)[0], r.records)
        for r in rows
    ]
    # Files 0-1, 2-3, then 4: a batch ends where its second file ends.
    assert spans == [(0, 1, 20), (1, 3, 20), (3, 4, 10)]
    assert stats.records == 50 and stats.batches == 3
    assert_tables_equal(
        table_of(db, plan), expected(MODE_CASES["update_tumbling"], feed.stream()).table
    )


async def test_a_directory_is_read_by_its_file_name_patterns(tmp_path: Path) -> None:
    records = sorted(
        (r for rs in make_stream(30, seed=4).values() for r in rs), key=lambda r: r["seq"]
    )
    feed = FileFeed(tmp_path / "in")
    feed.new_file("a.log", records[:10])
    # Not in the model: names the patterns do not give.
    (feed.directory / "b.jsonl").write_bytes(b'{"user_id": "x", "event_time": 0}\n' * 7)
    (feed.directory / "a.log.done").write_bytes(b"")
    feed.new_file("c.log", records[10:30])
    plan = _plan("update_tumbling", feed.directory, file_patterns=("*.log",))
    registry, db = MemoryFileRegistry("q"), MemoryDatabase()
    stats = await _run(plan, registry, db)
    assert stats.records == 30 == _records_in_ledger(db, plan)
    assert_tables_equal(
        table_of(db, plan), expected(MODE_CASES["update_tumbling"], feed.stream()).table
    )


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ("truncate", "was truncated or rewritten in place after this query read"),
        ("replace", "was truncated or rewritten in place after this query read"),
    ],
)
async def test_a_file_changed_under_the_query_stops_it(
    change: str, says: str, tmp_path: Path
) -> None:
    feed = FileFeed(tmp_path / "in")
    path = feed.new_file("a.jsonl", [{"user_id": "u1", "event_time": 1_000 * i} for i in range(20)])
    plan = _plan("update_tumbling", feed.directory)
    registry, db = MemoryFileRegistry("q"), MemoryDatabase()
    await _run(plan, registry, db)
    data = path.read_bytes()
    path.write_bytes(data[:40] if change == "truncate" else data.replace(b"u1", b"u9"))
    with pytest.raises(QueryFailedError) as failed:
        await _run(plan, registry, db)
    message = str(failed.value)
    assert f"file {path}" in message and says in message and "\n" not in message
    assert "streamproc reset" in message
    assert _records_in_ledger(db, plan) == 20  # nothing more was counted


async def test_a_second_worker_of_a_file_source_is_refused(tmp_path: Path) -> None:
    feed = FileFeed(tmp_path / "in")
    feed.new_file("a.jsonl", [{"user_id": "u1", "event_time": 0}])
    plan = _plan("update_tumbling", feed.directory)
    registry, db = MemoryFileRegistry("q"), MemoryDatabase()
    registry.locked = True  # another worker holds the query's file-source lock
    with pytest.raises(QueryFailedError, match="another worker is reading its file source"):
        await _run(plan, registry, db)
    assert db.ledger_rows(plan.query_name, plan.topic) == []


async def test_latest_skips_the_files_present_at_start(tmp_path: Path) -> None:
    # As Kafka's latest: it applies while the query has committed nothing.
    feed = FileFeed(tmp_path / "in")
    feed.new_file("old.jsonl", [{"user_id": "u1", "event_time": 0}] * 3)
    plan = _plan("update_tumbling", feed.directory, starting_offsets="latest", trigger="continuous")
    registry, db = MemoryFileRegistry("q"), MemoryDatabase()
    query = _query(plan, registry, db)
    running = asyncio.ensure_future(query.run())

    try:
        # The file is new only once the query has started (and listed the directory).
        await asyncio.wait_for(query.wait_until_assigned(), 30)
        feed.new_file("new.jsonl", [{"user_id": "u2", "event_time": 0}] * 2)
        await asyncio.wait_for(_committed(db, plan, running, 2), 30)
    finally:
        query.request_stop()
        stats = await asyncio.wait_for(running, 30)
    assert stats.records == 2 == _records_in_ledger(db, plan)
    only_new = expected(MODE_CASES["update_tumbling"], {0: feed.records[3:]})
    assert_tables_equal(table_of(db, plan), only_new.table)


async def test_lines_appended_to_a_file_behind_are_said_and_not_read(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    records = sorted(
        (r for rs in make_stream(20, seed=4).values() for r in rs), key=lambda r: r["seq"]
    )
    feed = FileFeed(tmp_path / "in")
    first = feed.new_file("a.jsonl", records[:10])
    feed.new_file("b.jsonl", records[10:])
    plan = _plan("update_tumbling", feed.directory)
    registry, db = MemoryFileRegistry("q"), MemoryDatabase()
    assert (await _run(plan, registry, db)).records == 20
    # Written to the older file while no worker runs (not through the feed: the
    # model must not expect these lines).
    line = b'{"user_id": "u1", "event_time": 5}\n'
    with first.open("ab") as f:
        f.write(line * 3)
    caplog.set_level(logging.WARNING, logger="streamproc.source")
    assert (await _run(plan, registry, db)).records == 0
    said = [r.getMessage() for r in caplog.records if "grew by" in r.getMessage()]
    assert said == [
        f"file {first} grew by {3 * len(line)} bytes after the source moved on to a newer "
        "file; those lines are not read (files are read in order, and only the newest one "
        "is followed while it grows): append to the newest file only, or write to a new file"
    ]
    assert _records_in_ledger(db, plan) == 20
    assert_tables_equal(
        table_of(db, plan), expected(MODE_CASES["update_tumbling"], feed.stream()).table
    )


async def test_a_restart_says_where_it_reads_on_as_file_and_byte(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    records = sorted(
        (r for rs in make_stream(20, seed=4).values() for r in rs), key=lambda r: r["seq"]
    )
    feed = FileFeed(tmp_path / "in")
    feed.new_file("a.jsonl", records[:10])
    second = feed.new_file("b.jsonl", records[10:])
    plan = _plan("update_tumbling", feed.directory)
    registry, db = MemoryFileRegistry("q"), MemoryDatabase()
    assert (await _run(plan, registry, db)).records == 20
    caplog.set_level(logging.INFO, logger="streamproc.source")
    assert (await _run(plan, registry, db)).records == 0
    said = [r.getMessage() for r in caplog.records if "reads on at" in r.getMessage()]
    # The checkpoint stores 1 << 40 | size; the log line names the file and the byte.
    assert said == [f"query q reads on at file {second} byte {second.stat().st_size}"]

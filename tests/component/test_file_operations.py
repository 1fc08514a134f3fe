"""What operators do to files under the streaming file source, in memory, against the model.

Rotation by rename (the new file already larger than the byte reached), a
symlink swapped, copytruncate (the copy listed or not), a file deleted half
read (held open by the running worker, or gone while no worker ran), a
restart inside a `.gz` file, and a rotated file gzipped while no worker ran.
Where the run goes on, the result table must equal the model row by row and
the ledger must count every line once; where it stops, it stops with one line.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

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
from tests.component.test_file_source import _committed, _records_in_ledger
from tests.reference import assert_tables_equal, expected
from tests.streams import MODE_CASES, make_stream

CASE = MODE_CASES["update_tumbling"]


def _records(n: int, seed: int = 3) -> list[dict[str, Any]]:
    return sorted(
        (r for rs in make_stream(n, seed=seed).values() for r in rs), key=lambda r: r["seq"]
    )


def _plan(path: Path | str, **changes: object) -> QueryPlan:
    plan = make_plan(CASE, topic=str(path), source_type="file")
    return replace(plan, **changes)


def _query(
    plan: QueryPlan,
    registry: MemoryFileRegistry,
    db: MemoryDatabase,
    on_progress: Any = None,
    **options: Any,
) -> StreamingQuery:
    config = FileSourceConfig(
        plan.query_name, plan.topic, plan.starting_offsets, plan.max_files_per_trigger, **options
    )
    source = FileSource(config, registry)
    ports = memory_ports(plan, source, db)
    return StreamingQuery(plan, memory_store_factory, ports=ports, on_progress=on_progress)


async def _run(
    plan: QueryPlan, registry: MemoryFileRegistry, db: MemoryDatabase, **options: Any
) -> RunStats:
    return await asyncio.wait_for(_query(plan, registry, db, **options).run(), 30)


async def _run_partly(
    plan: QueryPlan, registry: MemoryFileRegistry, db: MemoryDatabase, at_least: int
) -> int:
    """Run until the ledger counts at least `at_least` lines, then stop; the lines counted."""
    plan = replace(plan, trigger="processingtime", trigger_interval_ms=100)
    query = _query(plan, registry, db)
    running = asyncio.ensure_future(query.run())
    try:
        await asyncio.wait_for(_committed(db, plan, running, at_least), 30)
    finally:
        query.request_stop()
        await asyncio.wait_for(running, 30)
    return _records_in_ledger(db, plan)


def _assert_model(feed: FileFeed, db: MemoryDatabase, plan: QueryPlan) -> None:
    assert _records_in_ledger(db, plan) == len(feed.records)
    assert_tables_equal(table_of(db, plan), expected(CASE, feed.stream()).table)


def _said(caplog: pytest.LogCaptureFixture, words: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if words in r.getMessage()]


async def test_rotation_by_rename_reads_the_old_file_on_and_the_larger_new_one_from_byte_0(
    tmp_path: Path,
) -> None:
    records = _records(400)
    feed = FileFeed(tmp_path / "in")
    log = feed.new_file("app.log", records[:100])
    plan = _plan(feed.directory, trigger="continuous")
    registry, db = MemoryFileRegistry("q"), MemoryDatabase()
    query = _query(plan, registry, db)
    running = asyncio.ensure_future(query.run())
    try:
        await asyncio.wait_for(_committed(db, plan, running, 100), 30)
        rotated = feed.directory / "app.log.1"
        feed.rename(log, rotated)
        # The writer's last lines, through the descriptor it still holds.
        feed.append(rotated, records[100:120])
        # The new file is already larger than the byte reached in the old one.
        feed.new_file("app.log", records[120:])
        await asyncio.wait_for(_committed(db, plan, running, 400), 30)
    finally:
        query.request_stop()
        stats = await asyncio.wait_for(running, 30)
    assert stats.records == 400 and stats.bad == 0
    _assert_model(feed, db, plan)
    assert [(e.ordinal, Path(e.path).name) for e in registry.entries] == [
        (0, "app.log.1"),
        (1, "app.log"),
    ]


async def test_a_symlink_swapped_to_a_new_target_reads_the_old_target_to_its_end(
    tmp_path: Path,
) -> None:
    records = _records(300)
    feed = FileFeed(tmp_path / "targets")
    first = feed.new_file("a.jsonl", records[:100])
    listed = tmp_path / "in"
    listed.mkdir()
    link = listed / "current.jsonl"
    link.symlink_to(first)
    plan = _plan(listed, trigger="continuous")
    registry, db = MemoryFileRegistry("q"), MemoryDatabase()
    query = _query(plan, registry, db)
    running = asyncio.ensure_future(query.run())
    try:
        await asyncio.wait_for(_committed(db, plan, running, 100), 30)
        feed.append(first, records[100:107])
        second = feed.new_file("b.jsonl", records[107:])
        swap = listed / ".current.jsonl.new"
        swap.symlink_to(second)
        os.replace(swap, link)  # ln -sfn: the link names the new target at once
        await asyncio.wait_for(_committed(db, plan, running, 300), 30)
    finally:
        query.request_stop()
        stats = await asyncio.wait_for(running, 30)
    assert stats.records == 300
    _assert_model(feed, db, plan)


async def test_a_symlink_swapped_while_no_worker_ran_reads_the_old_target_to_its_end(
    tmp_path: Path,
) -> None:
    # The old target got lines no worker saw, then the link moved on: no listed name
    # names it any more, but it is still there, and it is read to its end.
    records = _records(300)
    feed = FileFeed(tmp_path / "targets")
    first = feed.new_file("a.jsonl", records[:100])
    listed = tmp_path / "in"
    listed.mkdir()
    link = listed / "current.jsonl"
    link.symlink_to(first)
    plan = _plan(listed)
    registry, db = MemoryFileRegistry("q"), MemoryDatabase()
    assert (await _run(plan, registry, db)).records == 100
    feed.append(first, records[100:107])
    second = feed.new_file("b.jsonl", records[107:])
    swap = listed / ".current.jsonl.new"
    swap.symlink_to(second)
    os.replace(swap, link)
    assert (await _run(plan, registry, db)).records == 200
    _assert_model(feed, db, plan)


async def _copytruncated_while_running(
    tmp_path: Path, **options: Any
) -> tuple[FileFeed, Path, MemoryDatabase, QueryPlan, asyncio.Future[RunStats], StreamingQuery]:
    """app.jsonl read to its end, then copied out of the glob's sight and rewritten in place."""
    records = _records(400)
    feed = FileFeed(tmp_path / "in")
    log = feed.new_file("app.jsonl", records[:100])
    plan = _plan(feed.directory / "*.jsonl", trigger="continuous")
    registry, db = MemoryFileRegistry("q"), MemoryDatabase()
    query = _query(plan, registry, db, **options)
    running = asyncio.ensure_future(query.run())
    await asyncio.wait_for(_committed(db, plan, running, 100), 30)
    # logrotate copytruncate: the copy (app.jsonl.1) is not matched by *.jsonl; the
    # file is truncated and the application writes on: more than was read before.
    shutil.copy(log, feed.directory / "app.jsonl.1")
    feed.rewrite(log, records[100:300])
    return feed, log, db, plan, running, query


async def test_copytruncate_under_a_running_worker_stops_it_by_default(tmp_path: Path) -> None:
    _, log, db, plan, running, query = await _copytruncated_while_running(tmp_path)
    try:
        with pytest.raises(QueryFailedError) as failed:
            await asyncio.wait_for(running, 30)
    finally:
        query.request_stop()
    message = str(failed.value)
    size = len(log.read_bytes())
    assert f"file {log} was truncated or rewritten in place" in message, message
    assert "after this query read" in message and "onFileTruncated" in message
    assert "\n" not in message and size > 0
    assert _records_in_ledger(db, plan) == 100  # nothing of the new content was counted


async def test_copytruncate_with_continue_reads_the_new_content_as_a_new_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="streamproc.source")
    feed, log, db, plan, running, query = await _copytruncated_while_running(
        tmp_path, on_file_truncated="continue"
    )
    try:
        await asyncio.wait_for(_committed(db, plan, running, 300), 30)
    finally:
        query.request_stop()
        stats = await asyncio.wait_for(running, 30)
    assert stats.records == 300
    _assert_model(feed, db, plan)
    said = _said(caplog, "was truncated or rewritten in place")
    assert len(said) == 1 and said[0].startswith(f"file {log} was truncated"), said
    assert "its new content is read as a new file" in said[0]
    # The new content has the next ordinal: offsets never go back.
    rows = db.ledger_rows(plan.query_name, plan.topic)
    assert decode_offset(rows[-1].next_offset)[0] == 1


async def test_copytruncate_with_the_copy_listed_reads_on_in_the_copy(tmp_path: Path) -> None:
    # The copy is in the directory the query lists: it is the file read so far,
    # under another name (its first bytes say so), and it is read on from the
    # byte reached; the truncated file's new content is a new file.
    records = _records(400)
    feed = FileFeed(tmp_path / "in")
    log = feed.new_file("app.jsonl", records[:100])
    plan = _plan(feed.directory, trigger="continuous")
    registry, db = MemoryFileRegistry("q"), MemoryDatabase()
    query = _query(plan, registry, db)
    running = asyncio.ensure_future(query.run())
    try:
        await asyncio.wait_for(_committed(db, plan, running, 100), 30)
        # Lines the worker has not seen yet, then the copy, then the truncation.
        feed.append(log, records[100:130])
        feed.copytruncate(log, feed.directory / "app.jsonl.1", records[130:350])
        await asyncio.wait_for(_committed(db, plan, running, 350), 30)
    finally:
        query.request_stop()
        stats = await asyncio.wait_for(running, 30)
    assert stats.records == 350
    _assert_model(feed, db, plan)


async def test_a_file_deleted_half_read_is_read_to_its_end_through_the_open_descriptor(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="streamproc.source")
    records = _records(6_000)
    feed = FileFeed(tmp_path / "in")
    doomed = feed.new_file("a.jsonl", records)
    plan = _plan(
        feed.directory,
        trigger="processingtime",
        trigger_interval_ms=40,
        max_records_per_trigger=200,
    )
    registry, db = MemoryFileRegistry("q"), MemoryDatabase()
    query = _query(plan, registry, db)
    running = asyncio.ensure_future(query.run())
    try:
        await asyncio.wait_for(_committed(db, plan, running, 400), 30)
        assert _records_in_ledger(db, plan) < 6_000  # deleted half read
        doomed.unlink()
        await asyncio.wait_for(_committed(db, plan, running, 6_000), 60)
    finally:
        query.request_stop()
        stats = await asyncio.wait_for(running, 30)
    assert stats.records == 6_000
    _assert_model(feed, db, plan)
    assert _said(caplog, "is gone") == []


async def _deleted_while_no_worker_ran(
    tmp_path: Path,
) -> tuple[FileFeed, Path, MemoryFileRegistry, MemoryDatabase, QueryPlan, int]:
    """a.jsonl read in part by a first run, then deleted; b.jsonl not started."""
    records = _records(400)
    feed = FileFeed(tmp_path / "in")
    doomed = feed.new_file("a.jsonl", records[:300])
    feed.new_file("b.jsonl", records[300:])
    plan = _plan(feed.directory, trigger="availablenow", max_records_per_trigger=100)
    registry, db = MemoryFileRegistry("q"), MemoryDatabase()
    read = await _run_partly(plan, registry, db, 100)
    assert read < 300
    next_offset = db.ledger_rows(plan.query_name, plan.topic)[-1].next_offset
    ordinal, read = decode_offset(next_offset)
    assert ordinal == 0
    unread = len(doomed.read_bytes()) - read
    doomed.unlink()
    feed.forget(doomed)
    # The model: what was read of a.jsonl, and all of b.jsonl.
    feed.records = [r for r in feed.records if r[0] < next_offset or r[0] >> 40 == 1]
    return feed, doomed, registry, db, plan, unread


async def test_a_file_deleted_with_bytes_unread_is_said_with_its_name_and_bytes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    feed, doomed, registry, db, plan, unread = await _deleted_while_no_worker_ran(tmp_path)
    caplog.set_level(logging.WARNING, logger="streamproc.source")
    seen: list[Any] = []
    stats = await asyncio.wait_for(_query(plan, registry, db, seen.append).run(), 30)
    assert stats.records == 100  # b.jsonl
    _assert_model(feed, db, plan)
    said = _said(caplog, "is gone")
    assert len(said) == 1, said
    assert said[0].startswith(
        f"file {doomed} is gone (deleted, or moved out of extract.path) with {unread} bytes "
        "not read"
    ), said
    assert sum(p.unread_bytes or 0 for p in seen) == unread
    assert sum(p.unread_files or 0 for p in seen) == 1
    # Said once: a later start finds nothing new to say.
    caplog.clear()
    await _run(plan, registry, db)
    assert _said(caplog, "is gone") == []


async def test_a_file_deleted_with_bytes_unread_stops_the_query_when_told_to(
    tmp_path: Path,
) -> None:
    feed, doomed, registry, db, plan, unread = await _deleted_while_no_worker_ran(tmp_path)
    with pytest.raises(QueryFailedError) as failed:
        await _run(plan, registry, db, on_file_deleted="stop")
    message = str(failed.value)
    assert f"file {doomed} is gone" in message and f"{unread} bytes" in message
    assert "onFileDeleted" in message and "\n" not in message
    assert _records_in_ledger(db, plan) == len(feed.records) - 100


async def test_a_restart_inside_a_gzip_file_reads_on(tmp_path: Path) -> None:
    records = _records(400)
    feed = FileFeed(tmp_path / "in")
    feed.new_file("a.jsonl.gz", records[:300], gz=True)
    feed.new_file("b.jsonl", records[300:])
    plan = _plan(feed.directory, trigger="availablenow", max_records_per_trigger=120)
    registry, db = MemoryFileRegistry("q"), MemoryDatabase()
    read = await _run_partly(plan, registry, db, 120)
    assert read < 300  # the checkpoint is inside a.jsonl.gz
    assert (await _run(plan, registry, db)).records == 400 - read
    _assert_model(feed, db, plan)


async def test_a_rotated_file_gzipped_while_no_worker_ran_is_read_on_from_the_gz(
    tmp_path: Path,
) -> None:
    records = _records(500)
    feed = FileFeed(tmp_path / "in")
    log = feed.new_file("app.log", records[:300])
    plan = _plan(feed.directory, trigger="availablenow", max_records_per_trigger=120)
    registry, db = MemoryFileRegistry("q"), MemoryDatabase()
    read = await _run_partly(plan, registry, db, 120)
    assert read < 300  # the checkpoint is inside app.log
    rotated = feed.directory / "app.log.1"
    feed.rename(log, rotated)
    feed.gzip(rotated)
    feed.new_file("app.log", records[300:])
    assert (await _run(plan, registry, db)).records == 500 - read
    _assert_model(feed, db, plan)
    assert [Path(e.path).name for e in registry.entries] == ["app.log.1.gz", "app.log"]

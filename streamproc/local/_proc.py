"""Child-process plumbing for the local stack: spawn, identify, signal, reap.

Every server is started in its own session (so its own process group, and a
terminal Ctrl-C does not reach it). A PID read back from ``stack.json`` is only
trusted when the process creation time recorded next to it (psutil
``create_time()``) still matches, so a recycled PID is never signalled.
Processes are inspected, awaited and signalled through psutil; only the
death signal (``PR_SET_PDEATHSIG``) and process-group signals use the OS
directly.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import IO

import psutil

_log = logging.getLogger("streamproc.local")

#: Popen objects of the servers this process started, by PID (to reap them).
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}

_PR_SET_PDEATHSIG = 1

#: Seconds two ``create_time()`` readings of one process may differ by.
#: psutil adds the boot time to the kernel's start time, and the kernel
#: reports the boot time in whole seconds, derived from the wall clock: a
#: clock step (NTP, VM resume) between spawn and check can move it by a
#: second or more. A recycled PID would have to belong to a process created
#: within this slack of our server, which had to exit meanwhile: not a
#: realistic case. A larger clock step fails safe (the server is not
#: recognised, hence not signalled).
CREATE_TIME_SLACK = 1.5


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port that is free on ``host`` right now.

    The port is only probed (bind to port 0, read it back, close), so another
    process may take it before the caller binds it: callers that start a server
    on it should retry with a fresh port when the bind fails.

    Args:
        host: Interface to probe, loopback by default.

    Returns:
        The port number.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _pdeathsig_setter(sig: int) -> Callable[[], None] | None:
    """Build a ``preexec_fn`` that makes the child receive ``sig`` when we die.

    The libc lookup happens here, in the parent, so the function run between
    fork and exec does as little as possible.

    Args:
        sig: Signal the kernel sends to the child when its parent thread exits.

    Returns:
        The function, or None when ``prctl`` is not available (not Linux).
    """
    if not sys.platform.startswith("linux"):
        return None
    libc_name = ctypes.util.find_library("c") or "libc.so.6"
    try:
        prctl = ctypes.CDLL(libc_name, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def _set() -> None:
        prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os.kill(os.getpid(), sig)

    return _set


@contextlib.contextmanager
def _sigint_deferred() -> Iterator[None]:
    """Hold back Ctrl-C while a child is spawned and registered.

    An interrupt that lands between ``fork`` and the caller recording the new
    PID would leak the child. Inside this block SIGINT is only noted; on the
    way out it is raised again, so the handler that was in place before
    (normally KeyboardInterrupt) runs as if the signal came just then.

    Only a Python-level handler is deferred: SIG_IGN means the process ignores
    Ctrl-C (a background job, nohup), and under SIG_DFL a Ctrl-C ends the
    process at once whatever we do, so both are left alone. No-op outside the
    main thread, where signal handlers cannot be set.
    """
    previous = signal.getsignal(signal.SIGINT)
    if threading.current_thread() is not threading.main_thread() or not callable(previous):
        yield
        return
    hit: list[bool] = []

    def _note(signum: int, frame: FrameType | None) -> None:
        hit.append(True)

    signal.signal(signal.SIGINT, _note)
    try:
        yield
    finally:
        # signal.signal runs a pending _note first, so no interrupt is lost in
        # between. Raising from finally lets Ctrl-C win over an error in the
        # block (that error becomes the KeyboardInterrupt's __context__).
        signal.signal(signal.SIGINT, previous)
        if hit:
            signal.raise_signal(signal.SIGINT)


def spawn(
    argv: Sequence[str],
    *,
    log_file: Path,
    env: Mapping[str, str],
    cwd: Path,
    user: int | None = None,
    group: int | None = None,
    die_with_parent: bool = False,
    death_signal: int = signal.SIGKILL,
    on_spawn: Callable[[int], None] | None = None,
) -> subprocess.Popen[bytes]:
    """Start a server process detached from the terminal.

    The child gets its own session/process group, stdin from /dev/null and
    stdout+stderr appended to ``log_file``.

    Args:
        argv: Program and arguments.
        log_file: File that receives the child's stdout and stderr.
        env: Complete environment of the child.
        cwd: Working directory of the child.
        user: UID to run as (requires root), or None for ours.
        group: GID to run as (requires root), or None for ours.
        die_with_parent: Ask the kernel (Linux ``PR_SET_PDEATHSIG``) to send
            ``death_signal`` to the child when this process dies, even by
            SIGKILL. Only honoured from the main thread: the kernel fires it
            when the spawning *thread* exits, which for a worker thread would
            be far too early.
        death_signal: See ``die_with_parent``.
        on_spawn: Called with the PID as soon as it is known, before a pending
            Ctrl-C is delivered (use it to record the PID for cleanup).

    Returns:
        The Popen handle (also kept in a module registry for reaping).
    """
    preexec: Callable[[], None] | None = None
    if die_with_parent:
        if threading.current_thread() is threading.main_thread():
            preexec = _pdeathsig_setter(death_signal)
        else:
            _log.debug("die_with_parent ignored: not called from the main thread")
    extra_groups: list[int] | None = [] if user is not None and os.geteuid() == 0 else None
    with _sigint_deferred(), open(log_file, "ab") as out:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=dict(env),
            cwd=cwd,
            user=user,
            group=group,
            extra_groups=extra_groups,
            start_new_session=True,
            preexec_fn=preexec,
        )
        _CHILDREN[proc.pid] = proc
        if on_spawn is not None:
            on_spawn(proc.pid)
    return proc


def create_time(pid: int) -> float | None:
    """Return when ``pid`` was created (psutil ``create_time()``, epoch seconds).

    Recorded next to the PID in ``stack.json`` at spawn, so that a later
    check (see :func:`is_alive`) can tell our server from a process that got
    the PID after ours exited.

    Args:
        pid: Process id.

    Returns:
        The creation time, or None if the process does not exist or cannot be
        inspected.
    """
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def created_from_ticks(ticks: int, written_at: float) -> float | None:
    """Convert a start time in clock ticks since boot into a creation time.

    ``stack.json`` files written before psutil was used hold the start time
    from field 22 of ``/proc/PID/stat`` (Linux only). psutil computes
    ``create_time()`` from that same field (``ticks / SC_CLK_TCK + boot
    time``), so the converted value identifies the process exactly as well as
    a freshly recorded one, within :data:`CREATE_TIME_SLACK`.

    Args:
        ticks: The recorded start time.
        written_at: When the file holding it was written (epoch seconds).

    Returns:
        The creation time, or None if it cannot be derived: the file predates
        the current boot (ticks count from another boot, and the processes
        it names are gone anyway) or the clock tick rate is unknown.
    """
    try:
        boot = psutil.boot_time()
        hertz = os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, AttributeError, psutil.Error):
        return None
    if written_at < boot - CREATE_TIME_SLACK or hertz <= 0:
        return None
    return ticks / hertz + boot


def _reap(pid: int) -> bool:
    """Reap ``pid`` if it is a server we spawned and it exited; True if so."""
    proc = _CHILDREN.get(pid)
    if proc is None or proc.poll() is None:
        return False
    del _CHILDREN[pid]
    return True


def _forget(proc: psutil.Process) -> None:
    """Drop a server psutil has reaped from the registry, keeping its exit status.

    psutil waits for its children with ``waitpid``, so the Popen handle would
    never learn the status (and would report 0): hand it over.
    """
    popen = _CHILDREN.pop(proc.pid, None)
    returncode: int | None = getattr(proc, "returncode", None)  # set by wait_procs
    if popen is not None and popen.returncode is None and returncode is not None:
        popen.returncode = returncode


def _process(pid: int, created: float | None) -> psutil.Process | None:
    """The running process ``pid``, if it is the one created at ``created``.

    Exited servers we spawned are reaped on the way. A zombie counts as gone:
    it has exited, only its parent has not collected the status yet.

    Args:
        pid: Process id; 0 or negative means "no process".
        created: Expected :func:`create_time`, or None to skip the identity
            check.

    Returns:
        A psutil handle (which keeps checking the identity itself when it is
        used to signal), or None.
    """
    if pid <= 0 or _reap(pid):
        return None
    try:
        proc = psutil.Process(pid)
    except psutil.Error:  # NoSuchProcess; AccessDenied on some platforms
        return None
    try:
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        if created is not None and abs(proc.create_time() - created) > CREATE_TIME_SLACK:
            return None  # the PID was recycled: not our process
    except psutil.NoSuchProcess:  # ZombieProcess included
        return None
    except psutil.AccessDenied:
        # It exists but cannot be inspected: never signal what we cannot
        # identify, but do not call it dead when no identity was asked for.
        return proc if created is None else None
    return proc


def _gone(proc: psutil.Process) -> bool:
    """True once ``proc`` has exited (zombie included) or its PID was reused."""
    _reap(proc.pid)
    try:
        return not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True
    except psutil.AccessDenied:
        return False


def _wait_gone(procs: Sequence[psutil.Process], timeout: float) -> list[psutil.Process]:
    """Wait up to ``timeout`` seconds until every process in ``procs`` is gone.

    Args:
        procs: Processes to wait for.
        timeout: Seconds to wait.

    Returns:
        Those still running when the time is up (empty on success).
    """
    deadline = time.monotonic() + timeout
    alive = [proc for proc in procs if not _gone(proc)]
    delay = 0.005
    while alive:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        # wait_procs reaps those that are our children. A zombie that is not
        # our child stays "running" for psutil until its parent reaps it, and
        # a server started by another process (``streamproc local down``)
        # may never be reaped while we wait: hence the short rounds and the
        # zombie check of _gone.
        gone, alive = psutil.wait_procs(alive, timeout=min(delay, remaining))
        for proc in gone:
            _forget(proc)
        alive = [proc for proc in alive if not _gone(proc)]
        delay = min(delay * 2, 0.1)
    return alive


def is_alive(pid: int, created: float | None = None) -> bool:
    """Tell whether ``pid`` runs and is the process we started.

    Exited children of this process are reaped on the way; zombies count as
    dead. With ``created`` (from :func:`create_time`), a PID that was recycled
    for another process counts as dead too.

    Args:
        pid: Process id; 0 or negative means "no process".
        created: Expected creation time, or None to skip the identity check.

    Returns:
        True if the process is running.
    """
    return _process(pid, created) is not None


def wait_gone(pid: int, created: float | None, timeout: float) -> bool:
    """Wait until ``pid`` has exited (and is reaped, when it is our child).

    Args:
        pid: Process id.
        created: Expected creation time (see :func:`is_alive`).
        timeout: Seconds to wait.

    Returns:
        True if the process is gone within ``timeout``.
    """
    proc = _process(pid, created)
    return proc is None or not _wait_gone([proc], timeout)


def _deliver(proc: psutil.Process, sig: int, *, group: bool = False) -> bool:
    """Send ``sig`` to ``proc``, or to the process group it leads; False if it is gone."""
    try:
        if group and os.getpgid(proc.pid) == proc.pid:
            # psutil has no killpg; the caller has just checked the leader's
            # identity, and a group id is only reused once the group is empty.
            os.killpg(proc.pid, sig)
        else:
            proc.send_signal(sig)  # re-checks the identity: NoSuchProcess if recycled
    except (psutil.NoSuchProcess, ProcessLookupError):
        return False
    return True


def send_signal(pid: int, sig: int, created: float | None, *, group: bool = False) -> bool:
    """Send ``sig`` to ``pid`` (or its process group) if it is still ours.

    Args:
        pid: Process id.
        sig: Signal number.
        created: Expected creation time (see :func:`is_alive`).
        group: Signal the whole process group led by ``pid``.

    Returns:
        True if the signal was sent.
    """
    proc = _process(pid, created)
    return proc is not None and _deliver(proc, sig, group=group)


def terminate(pid: int, created: float | None, sig: int, timeout: float) -> bool:
    """Stop a server: ``sig``, wait up to ``timeout`` s, then SIGKILL everything.

    SIGCONT follows ``sig`` so a paused (SIGSTOP) process handles it at once.
    The SIGKILL fallback also hits the process group and all descendants
    (PostgreSQL backends lead their own groups).

    Args:
        pid: Process id.
        created: Expected creation time (see :func:`is_alive`).
        sig: The polite signal (SIGTERM, or SIGINT for a PostgreSQL fast
            shutdown).
        timeout: Seconds to wait after the polite signal.

    Returns:
        True if a running process was found (and is now stopped).

    Raises:
        RuntimeError: The process survived SIGKILL.
    """
    proc = _process(pid, created)
    if proc is None or not _deliver(proc, sig):
        return False
    _deliver(proc, signal.SIGCONT, group=True)
    if not _wait_gone([proc], timeout):
        return True
    _log.warning("pid %d ignored signal %d for %.0f s: killing it", pid, sig, timeout)
    # Take the descendants before the kill: once the leader is gone they are
    # re-parented and can no longer be found from it.
    try:
        descendants = proc.children(recursive=True)
    except psutil.NoSuchProcess:
        descendants = []
    _deliver(proc, signal.SIGKILL, group=True)
    for child in descendants:
        _deliver(child, signal.SIGKILL)
    left = _wait_gone([proc, *descendants], 5.0)
    if proc in left:
        raise RuntimeError(f"pid {pid} survived SIGKILL")
    if left:
        _log.warning("children of pid %d survived SIGKILL: %s", pid, [p.pid for p in left])
    return True


def log_tail(path: Path, lines: int = 20) -> str:
    """Return the last ``lines`` lines of a log file ('' if unreadable)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 8192))
            text = fh.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def run_logged(
    argv: Sequence[str],
    *,
    log: IO[bytes],
    env: Mapping[str, str],
    cwd: Path,
    user: int | None,
    group: int | None,
    timeout: float,
) -> None:
    """Run a short command to completion, output appended to ``log``.

    The child is killed if we are interrupted (``subprocess.run`` semantics).

    Args:
        argv: Program and arguments.
        log: Open binary file for stdout and stderr.
        env: Complete environment.
        cwd: Working directory.
        user: UID to run as, or None.
        group: GID to run as, or None.
        timeout: Seconds before the command is killed.

    Raises:
        subprocess.CalledProcessError: The command failed.
        subprocess.TimeoutExpired: The command took too long.
    """
    extra_groups: list[int] | None = [] if user is not None and os.geteuid() == 0 else None
    subprocess.run(
        list(argv),
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        env=dict(env),
        cwd=cwd,
        user=user,
        group=group,
        extra_groups=extra_groups,
        timeout=timeout,
        check=True,
    )


def wait_until_stopped(pid: int, timeout: float) -> bool:
    """Wait until a process is stopped (SIGSTOP took effect); False on timeout or exit."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_STOPPED:
                return True
        except psutil.Error:
            return False
        time.sleep(0.01)
    return False

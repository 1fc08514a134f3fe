"""Child-process plumbing for the local stack: spawn, identify, signal, reap.

Every server is started in its own session (so its own process group, and a
terminal Ctrl-C does not reach it). A PID read back from ``stack.json`` is only
trusted when the process start time recorded next to it still matches, so a
recycled PID is never signalled.
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

_log = logging.getLogger("streamproc.local")

#: Popen objects of the servers this process started, by PID (to reap them).
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}

_PR_SET_PDEATHSIG = 1


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


def start_ticks(pid: int) -> int | None:
    """Return the kernel start time of ``pid`` (clock ticks since boot).

    Args:
        pid: Process id.

    Returns:
        The start time, or None if the process does not exist or /proc is
        unavailable.
    """
    stat = _proc_stat(pid)
    return None if stat is None else int(stat[19])


def _proc_stat(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (field 3 onwards)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    except OSError:
        return None
    return raw[raw.rindex(")") + 2 :].split()


def _reap(pid: int) -> bool:
    """Reap ``pid`` if it is our exited child; True if it is known to be gone."""
    proc = _CHILDREN.get(pid)
    if proc is not None:
        if proc.poll() is None:
            return False
        del _CHILDREN[pid]
        return True
    try:
        done, _status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return False  # not our child: someone else reaps it
    return done == pid


def is_alive(pid: int, ticks: int | None = None) -> bool:
    """Tell whether ``pid`` runs and is the process we started.

    Exited children of this process are reaped on the way; zombies count as
    dead. With ``ticks`` (from :func:`start_ticks`), a PID that was recycled
    for another process counts as dead too.

    Args:
        pid: Process id; 0 or negative means "no process".
        ticks: Expected start time, or None to skip the identity check.

    Returns:
        True if the process is running.
    """
    if pid <= 0 or _reap(pid):
        return False
    stat = _proc_stat(pid)
    if stat is None:
        if Path("/proc/self/stat").exists():
            return False
        try:  # no procfs: fall back to signal 0
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    if stat[0] in ("Z", "X"):
        return False
    return ticks is None or int(stat[19]) == ticks


def wait_gone(pid: int, ticks: int | None, timeout: float) -> bool:
    """Wait until ``pid`` has exited (and is reaped, when it is our child).

    Args:
        pid: Process id.
        ticks: Expected start time (see :func:`is_alive`).
        timeout: Seconds to wait.

    Returns:
        True if the process is gone within ``timeout``.
    """
    deadline = time.monotonic() + timeout
    delay = 0.005
    while is_alive(pid, ticks):
        if time.monotonic() >= deadline:
            return False
        time.sleep(delay)
        delay = min(delay * 2, 0.1)
    return True


def _children_of(pid: int) -> list[int]:
    """PIDs whose parent is ``pid`` (Linux /proc scan; empty elsewhere)."""
    found: list[int] = []
    with contextlib.suppress(OSError):
        for entry in os.scandir("/proc"):
            if entry.name.isdigit():
                stat = _proc_stat(int(entry.name))
                if stat is not None and int(stat[1]) == pid:
                    found.append(int(entry.name))
    return found


def send_signal(pid: int, sig: int, ticks: int | None, *, group: bool = False) -> bool:
    """Send ``sig`` to ``pid`` (or its process group) if it is still ours.

    Args:
        pid: Process id.
        sig: Signal number.
        ticks: Expected start time (see :func:`is_alive`).
        group: Signal the whole process group led by ``pid``.

    Returns:
        True if the signal was sent.
    """
    if not is_alive(pid, ticks):
        return False
    try:
        if group and os.getpgid(pid) == pid:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)
    except ProcessLookupError:
        return False
    return True


def terminate(pid: int, ticks: int | None, sig: int, timeout: float) -> bool:
    """Stop a server: ``sig``, wait up to ``timeout`` s, then SIGKILL everything.

    SIGCONT follows ``sig`` so a paused (SIGSTOP) process handles it at once.
    The SIGKILL fallback also hits the process group and the direct children
    (PostgreSQL backends lead their own groups).

    Args:
        pid: Process id.
        ticks: Expected start time (see :func:`is_alive`).
        sig: The polite signal (SIGTERM, or SIGINT for a PostgreSQL fast
            shutdown).
        timeout: Seconds to wait after the polite signal.

    Returns:
        True if a running process was found (and is now stopped).
    """
    if not send_signal(pid, sig, ticks):
        return False
    send_signal(pid, signal.SIGCONT, ticks, group=True)
    if wait_gone(pid, ticks, timeout):
        return True
    _log.warning("pid %d ignored signal %d for %.0f s: killing it", pid, sig, timeout)
    children = _children_of(pid)
    send_signal(pid, signal.SIGKILL, ticks, group=True)
    for child in children:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(child, signal.SIGKILL)
    if not wait_gone(pid, ticks, 5.0):
        raise RuntimeError(f"pid {pid} survived SIGKILL")
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

"""Waiting for the local stack's processes to exit, or to stop (SIGSTOP).

A process counts as gone once it has exited, zombie included, or its PID went
to another process; the servers we spawned are reaped on the way (see
`_children`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import psutil

from streamproc.local import _children
from streamproc.local._pids import running_process


def _has_exited(proc: psutil.Process) -> bool:
    """True once ``proc`` has exited (zombie included) or its PID was reused."""
    _children.reap_if_exited(proc.pid)
    try:
        return not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True
    except psutil.AccessDenied:
        return False


def still_running_after(procs: Sequence[psutil.Process], timeout: float) -> list[psutil.Process]:
    """Wait up to ``timeout`` seconds until every process in ``procs`` is gone.

    Args:
        procs: Processes to wait for.
        timeout: Seconds to wait.

    Returns:
        Those still running when the time is up (empty on success).
    """
    deadline = time.monotonic() + timeout
    alive = [proc for proc in procs if not _has_exited(proc)]
    delay = 0.005
    while alive:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        # wait_procs reaps those that are our children. A zombie that is not
        # our child stays "running" for psutil until its parent reaps it, and
        # a server started by another process (``streamproc local down``)
        # may never be reaped while we wait: hence the short rounds and the
        # zombie check of _has_exited.
        gone, alive = psutil.wait_procs(alive, timeout=min(delay, remaining))
        for proc in gone:
            _children.forget_reaped(proc)
        alive = [proc for proc in alive if not _has_exited(proc)]
        delay = min(delay * 2, 0.1)
    return alive


def wait_gone(pid: int, created: float | None, timeout: float) -> bool:
    """Wait until ``pid`` has exited (and is reaped, when it is our child).

    Args:
        pid: Process id.
        created: Expected creation time (see :func:`~streamproc.local._pids.is_alive`).
        timeout: Seconds to wait.

    Returns:
        True if the process is gone within ``timeout``.
    """
    proc = running_process(pid, created)
    return proc is None or not still_running_after([proc], timeout)


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

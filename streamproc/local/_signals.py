"""Signalling the local stack's servers, and stopping them: politely, then by SIGKILL.

A server is only signalled while it is still the process we started (see
`_pids`); process-group signals use the OS directly, since psutil has none.
"""

from __future__ import annotations

import logging
import os
import signal

import psutil

from streamproc.local._pids import running_process
from streamproc.local._wait import still_running_after

_log = logging.getLogger("streamproc.local")


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
        created: Expected creation time (see :func:`~streamproc.local._pids.is_alive`).
        group: Signal the whole process group led by ``pid``.

    Returns:
        True if the signal was sent.
    """
    proc = running_process(pid, created)
    return proc is not None and _deliver(proc, sig, group=group)


def terminate(pid: int, created: float | None, sig: int, timeout: float) -> bool:
    """Stop a server: ``sig``, wait up to ``timeout`` s, then SIGKILL everything.

    SIGCONT follows ``sig`` so a paused (SIGSTOP) process handles it at once.
    The SIGKILL fallback also hits the process group and all descendants
    (PostgreSQL backends lead their own groups).

    Args:
        pid: Process id.
        created: Expected creation time (see :func:`~streamproc.local._pids.is_alive`).
        sig: The polite signal (SIGTERM, or SIGINT for a PostgreSQL fast
            shutdown).
        timeout: Seconds to wait after the polite signal.

    Returns:
        True if a running process was found (and is now stopped).

    Raises:
        RuntimeError: The process survived SIGKILL.
    """
    proc = running_process(pid, created)
    if proc is None or not _deliver(proc, sig):
        return False
    _deliver(proc, signal.SIGCONT, group=True)
    if not still_running_after([proc], timeout):
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
    left = still_running_after([proc, *descendants], 5.0)
    if proc in left:
        raise RuntimeError(f"pid {pid} survived SIGKILL")
    if left:
        _log.warning("children of pid %d survived SIGKILL: %s", pid, [p.pid for p in left])
    return True

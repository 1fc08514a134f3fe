"""Which process a recorded PID is: ours only while its creation time still matches.

A PID read back from ``stack.json`` is only trusted when the process creation
time recorded next to it (psutil ``create_time()``) still matches, so a
recycled PID is never signalled. Processes are inspected through psutil.
"""

from __future__ import annotations

import os

import psutil

from streamproc.local import _children

#: Seconds two ``create_time()`` readings of one process may differ by.
#: psutil adds the boot time to the kernel's start time, and the kernel
#: reports the boot time in whole seconds, derived from the wall clock: a
#: clock step (NTP, VM resume) between spawn and check can move it by a
#: second or more. A recycled PID would have to belong to a process created
#: within this slack of our server, which had to exit meanwhile: not a
#: realistic case. A larger clock step fails safe (the server is not
#: recognised, hence not signalled).
CREATE_TIME_SLACK = 1.5


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


def running_process(pid: int, created: float | None) -> psutil.Process | None:
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
    if pid <= 0 or _children.reap_if_exited(pid):
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
    return running_process(pid, created) is not None

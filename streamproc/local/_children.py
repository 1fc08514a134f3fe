"""The servers this process spawned, kept by PID until their exit status is collected.

A server we spawned stays a zombie until we reap it, and a zombie still has
its PID: without reaping, a stopped server would look alive, and its exit
status (which a test may check) would be lost. The Popen handles are kept
here from `spawn` until the server is seen to exit.
"""

from __future__ import annotations

import subprocess

import psutil

#: Popen handles of the servers this process started, by PID.
_SPAWNED: dict[int, subprocess.Popen[bytes]] = {}


def register(proc: subprocess.Popen[bytes]) -> None:
    """Keep the handle of a server just spawned, to reap it once it exits."""
    _SPAWNED[proc.pid] = proc


def reap_if_exited(pid: int) -> bool:
    """Reap ``pid`` if it is a server we spawned and it exited; True if so."""
    proc = _SPAWNED.get(pid)
    if proc is None or proc.poll() is None:
        return False
    del _SPAWNED[pid]
    return True


def forget_reaped(proc: psutil.Process) -> None:
    """Drop a server psutil has reaped from the registry, keeping its exit status.

    psutil waits for its children with ``waitpid``, so the Popen handle would
    never learn the status (and would report 0): hand it over.
    """
    popen = _SPAWNED.pop(proc.pid, None)
    returncode: int | None = getattr(proc, "returncode", None)  # set by wait_procs
    if popen is not None and popen.returncode is None and returncode is not None:
        popen.returncode = returncode

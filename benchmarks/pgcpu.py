"""CPU time of a PostgreSQL server's processes, from /proc (Linux).

The scale-out part asks what a record costs in CPU, PostgreSQL's share included:
several workers can be faster or slower than one and still cost more CPU in the
database (every partition's states merged under the lock). PostgreSQL is one
postmaster and a process per connection (backends) and per background job
(checkpointer, walwriter, autovacuum, ...), all children of the postmaster.

`server_seconds(postmaster)` is the CPU all of them have used so far:
the postmaster's own utime + stime, its cutime + cstime (the CPU of children it
has reaped: backends whose connection ended), and utime + stime of each live child
(a process in /proc whose ppid is the postmaster). A measurement takes it before
and after; the difference is the server's CPU over the measurement. A child alive
before that exits before after moves its CPU from "live child" into the
postmaster's cutime/cstime, so the sum stays consistent.

The one race is a child reaped while /proc is being walked: it may be counted twice
or not at all. The postmaster's cutime/cstime is read before and after the walk and
the walk is repeated when it moved, so a sample is a consistent snapshot.

Only for a server whose processes this machine can see: the embedded stack's
(benchmarks/services.py knows its postmaster PID); an external database gives None.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")
# A walk of /proc takes a few ms; a backend ending in each of 5 walks in a row
# would be a storm of connections, and then an approximate figure is good enough.
_TRIES = 5


@dataclass(frozen=True)
class ProcStat:
    """The fields of /proc/<pid>/stat used here; times in clock ticks."""

    pid: int
    ppid: int
    utime: int
    stime: int
    cutime: int
    cstime: int


def parse_stat(text: str) -> ProcStat:
    """Parse one /proc/<pid>/stat line (proc(5)).

    The command name (field 2) is in parentheses and may hold spaces or ')', so the
    fields are counted from the last ')': state is field 3, ppid 4, utime 14,
    stime 15, cutime 16, cstime 17.
    """
    head, _, tail = text.rpartition(")")
    pid = int(head.partition("(")[0])
    fields = tail.split()  # fields[0] is field 3 (state)
    return ProcStat(
        pid=pid,
        ppid=int(fields[1]),
        utime=int(fields[11]),
        stime=int(fields[12]),
        cutime=int(fields[13]),
        cstime=int(fields[14]),
    )


def read_stat(pid: int, proc: Path = PROC) -> ProcStat | None:
    """/proc/<pid>/stat, or None when the process is gone (or was never there)."""
    try:
        return parse_stat((proc / str(pid) / "stat").read_text())
    except (OSError, ValueError, IndexError):  # exited between listing and reading
        return None


def _children_ticks(parent: int, proc: Path) -> int:
    """utime + stime of every live process whose parent is `parent`."""
    total = 0
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        stat = read_stat(int(entry.name), proc)
        if stat is not None and stat.ppid == parent:
            total += stat.utime + stat.stime
    return total


def server_ticks(postmaster: int, proc: Path = PROC) -> int | None:
    """CPU clock ticks used so far by the postmaster and all its children; None if gone."""
    ticks = None
    for _ in range(_TRIES):
        before = read_stat(postmaster, proc)
        children = _children_ticks(postmaster, proc)
        after = read_stat(postmaster, proc)
        if before is None or after is None:
            return None
        ticks = after.utime + after.stime + after.cutime + after.cstime + children
        if (before.cutime, before.cstime) == (after.cutime, after.cstime):
            break  # no child reaped during the walk: nothing counted twice or missed
    return ticks


def server_seconds(postmaster: int | None, proc: Path = PROC) -> float | None:
    """`server_ticks` in seconds; None without a postmaster PID or once it is gone."""
    if postmaster is None:
        return None
    ticks = server_ticks(postmaster, proc)
    return None if ticks is None else ticks / os.sysconf("SC_CLK_TCK")

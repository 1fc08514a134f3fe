"""Whole processes, timed from start to exit, with their peak RSS and output.

A process is started with ``subprocess.Popen`` (stdout and stderr into one log
file) and reaped with ``os.wait4``, whose rusage gives the peak resident set
size (``ru_maxrss``, KiB on Linux) of that process alone, and its CPU time (user +
system, all its threads and any children it reaped). Every process started
here dies with the harness (``PR_SET_PDEATHSIG``), even if the harness is killed.
Also parses what ``streamproc run`` may print at its end: a ``phases:`` line of
``name=<seconds>s`` pairs, a ``lock share: <fraction>`` line and a ``round trips
per commit: <n>`` line.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _die_with_parent() -> None:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG


def _own_code() -> dict[str, str]:
    """PYTHONPATH with this checkout first: the processes run the code next to the harness.

    The venv's `streamproc` script imports the package its editable install points
    at, which is another checkout when the harness runs from a git worktree; then
    the workers would run that checkout's code, not the one being measured.
    """
    rest = os.environ.get("PYTHONPATH")
    return {"PYTHONPATH": f"{REPO}{os.pathsep}{rest}" if rest else str(REPO)}


def streamproc_command(config: Path) -> list[str]:
    """``streamproc run CONFIG``: the console script of the venv, else ``-m streamproc.cli``."""
    script = Path(sys.executable).with_name("streamproc")
    if script.exists():
        return [str(script), "run", str(config)]
    return [sys.executable, "-m", "streamproc.cli", "run", str(config)]


def floor_command(bootstrap: str, topic: str) -> list[str]:
    """The floor process (benchmarks/floor.py)."""
    return [sys.executable, "-m", "benchmarks.floor", bootstrap, topic]


@dataclass(frozen=True)
class Finished:
    """One process that ran to its exit."""

    argv: tuple[str, ...]
    seconds: float  # process start (just before fork) to exit (reaped)
    exit_code: int  # negative: killed by that signal
    max_rss_kib: int
    output: str  # stdout and stderr, interleaved
    cpu_seconds: float = 0.0  # ru_utime + ru_stime of the reaped process

    @property
    def max_rss_mib(self) -> float:
        return self.max_rss_kib / 1024


class Running:
    """A started process; `wait` reaps it with os.wait4 and times it."""

    def __init__(self, argv: Sequence[str], log_path: Path, env: Mapping[str, str] | None = None):
        self.argv = tuple(argv)
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed when reaped
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            self.argv,
            cwd=REPO,
            env={**os.environ, **_own_code(), **(env or {})},
            stdout=self._log,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,
        )
        self.finished: Finished | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def output(self) -> str:
        """What the process printed so far."""
        return self.log_path.read_text(errors="replace")

    def wait(self, timeout: float | None = None) -> Finished:
        """Block until the process exits (SIGKILL it after timeout seconds)."""
        if self.finished is not None:
            return self.finished
        timer = None
        if timeout is not None:
            timer = threading.Timer(timeout, self.kill)
            timer.start()
        try:
            _, status, usage = os.wait4(self.proc.pid, 0)
        finally:
            if timer is not None:
                timer.cancel()
        ended = time.monotonic()
        code = os.waitstatus_to_exitcode(status)
        self.proc.returncode = code  # reaped here, not by Popen
        self._log.close()
        self.finished = Finished(
            self.argv,
            ended - self.started,
            code,
            usage.ru_maxrss,
            self.output(),
            usage.ru_utime + usage.ru_stime,
        )
        return self.finished

    def signal(self, sig: int) -> None:
        """Send a signal if the process has not been reaped yet."""
        if self.finished is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, sig)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)


def run(argv: Sequence[str], log_path: Path, timeout: float | None = None) -> Finished:
    """Run one process to its exit."""
    return Running(argv, log_path).wait(timeout)


def run_together(
    argvs: Sequence[Sequence[str]], log_dir: Path, stem: str, timeout: float | None = None
) -> tuple[float, list[Finished]]:
    """Start processes together; (seconds until the last one exited, each one's result)."""
    started = time.monotonic()
    procs = [Running(a, log_dir / f"{stem}-{i}.log") for i, a in enumerate(argvs)]
    results: list[Finished | None] = [None] * len(procs)

    def reap(i: int) -> None:
        results[i] = procs[i].wait(timeout)

    threads = [threading.Thread(target=reap, args=(i,)) for i in range(len(procs))]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        for p in procs:  # only on an exception (KeyboardInterrupt): leave nothing running
            p.kill()
    ended = time.monotonic()
    return ended - started, [r for r in results if r is not None]


# ----------------------------------------------------------------------------- output

_PHASES = re.compile(r"^\s*phases:\s*(.*)$", re.MULTILINE)
_PAIR = re.compile(r"([A-Za-z_][\w.-]*)=([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)s\b")
# Tolerant on purpose: only the number is taken, whatever follows it on the line
# (today "(PostgreSQL; 57 commits)"), so a reworded tail does not lose the figure.
_ROUND_TRIPS = re.compile(r"round trips per commit: ([0-9.]+)")
_LOCK = re.compile(r"^\s*lock share:\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)", re.MULTILINE)


def parse_phases(output: str) -> dict[str, float] | None:
    """The last ``phases: a=1.2s b=0.3s`` line as {name: seconds}; None when absent."""
    lines = _PHASES.findall(output)
    if not lines:
        return None
    pairs = _PAIR.findall(lines[-1])
    return {name: float(seconds) for name, seconds in pairs} or None


def parse_lock_share(output: str) -> float | None:
    """The last ``lock share: 0.42`` value; None when absent."""
    values = _LOCK.findall(output)
    return float(values[-1]) if values else None


def parse_round_trips(output: str) -> float | None:
    """The last ``round trips per commit: 1.00`` value; None when absent or unreadable."""
    for value in reversed(_ROUND_TRIPS.findall(output)):
        try:
            return float(value)
        except ValueError:  # "1.2.3" or "." match the regex but are no number
            continue
    return None

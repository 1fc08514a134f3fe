"""Starting the local stack's processes: servers detached from the terminal, and short commands.

Every server is started in its own session (so its own process group, and a
terminal Ctrl-C does not reach it), with its output appended to a log file
that `log_tail` reads back for error messages. Only the death signal
(``PR_SET_PDEATHSIG``) uses the OS directly.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import IO, Any

from streamproc.local import _children

_log = logging.getLogger("streamproc.local")

_PR_SET_PDEATHSIG = 1


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


def _child_io_and_identity(
    out: IO[bytes], env: Mapping[str, str], cwd: Path, user: int | None, group: int | None
) -> dict[str, Any]:
    """What a server and a short command get alike: no stdin, one output file, who runs it.

    As root, a child run as another user gets no supplementary groups (else it
    would keep root's).
    """
    return {
        "stdin": subprocess.DEVNULL,
        "stdout": out,
        "stderr": subprocess.STDOUT,
        "env": dict(env),
        "cwd": cwd,
        "user": user,
        "group": group,
        "extra_groups": [] if user is not None and os.geteuid() == 0 else None,
    }


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
        The Popen handle (also kept in `_children` for reaping).
    """
    preexec: Callable[[], None] | None = None
    if die_with_parent:
        if threading.current_thread() is threading.main_thread():
            preexec = _pdeathsig_setter(death_signal)
        else:
            _log.debug("die_with_parent ignored: not called from the main thread")
    with _sigint_deferred(), open(log_file, "ab") as out:
        proc = subprocess.Popen(
            list(argv),
            **_child_io_and_identity(out, env, cwd, user, group),
            start_new_session=True,
            preexec_fn=preexec,
        )
        _children.register(proc)
        if on_spawn is not None:
            on_spawn(proc.pid)
    return proc


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
    subprocess.run(
        list(argv),
        **_child_io_and_identity(log, env, cwd, user, group),
        timeout=timeout,
        check=True,
    )


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

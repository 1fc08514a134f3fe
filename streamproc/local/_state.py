"""The run directory: ``stack.json`` (what runs where) and a lock file."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

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
    broker_ticks: int | None = None
    broker_bin: str = ""
    cluster_id: str = ""
    postgres_port: int = 0
    postgres_pid: int = 0
    postgres_ticks: int | None = None
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
        """Read ``stack.json``; None if missing or unreadable."""
        try:
            data = json.loads((run_dir / STATE_FILE).read_text())
        except (OSError, ValueError):
            return None
        names = cls.__dataclass_fields__.keys()
        kwargs = {k: v for k, v in data.items() if k in names}
        kwargs["run_dir"] = run_dir
        try:
            return cls(**kwargs)
        except TypeError:
            return None


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

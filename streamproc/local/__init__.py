"""Local stack: the embedded Tansu broker and an embedded PostgreSQL.

Used by ``streamproc local up|down|status``, the demo and the tests. Both
servers are reached through their network protocols only, exactly like
Apache Kafka and PostgreSQL in production (OPERATING.md, "The local stack").

Typical use::

    info = start_stack(Path(".run/local"))
    ...  # info.bootstrap, info.dsn
    stop_stack(info.run_dir)

Fault injection: :func:`stop_postgres`/:func:`start_postgres` (same port,
data kept), :func:`pause_broker`/:func:`resume_broker` (SIGSTOP/SIGCONT; the
broker is memory-only, so :func:`stop_broker`/:func:`start_broker` lose all
topics).
"""

from streamproc.local._cli import local_main
from streamproc.local._ports import free_port
from streamproc.local._probe import broker_is_ready, postgres_is_ready
from streamproc.local._state import StackError, StackInfo
from streamproc.local.kafka import create_topic
from streamproc.local.stack import (
    default_run_dir,
    pause_broker,
    resume_broker,
    stack_status,
    start_broker,
    start_postgres,
    start_stack,
    stop_broker,
    stop_postgres,
    stop_stack,
)

__all__ = [
    "StackError",
    "StackInfo",
    "broker_is_ready",
    "create_topic",
    "default_run_dir",
    "free_port",
    "local_main",
    "pause_broker",
    "postgres_is_ready",
    "resume_broker",
    "stack_status",
    "start_broker",
    "start_postgres",
    "start_stack",
    "stop_broker",
    "stop_postgres",
    "stop_stack",
]

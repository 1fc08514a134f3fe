"""A PostgreSQL server that cannot be reached or refuses the login, said in one line.

Every command that connects (`run` of a query or a batch job, the Faust worker,
`status`, `reset`) says such a failure the same way, with no traceback:

    cannot connect to PostgreSQL at db.example:5432: password authentication failed for user "etl"

The server is named by host and port, taken from the DSN; the DSN itself, which
may hold a password, is never printed. Pure: no I/O, no client imported.
"""

from __future__ import annotations

import errno
import socket
import urllib.parse

from streamproc.runtime.failure_kinds import first_line

#: SQLSTATE classes and codes that mean the login itself failed: 28 invalid
#: authorization (a wrong password, an unknown role, no pg_hba.conf entry), 08
#: connection exceptions, 3D000 no such database, 57P03 the server is starting up.
_LOGIN_CLASSES = frozenset({"28", "08"})
_LOGIN_CODES = frozenset({"3D000", "57P03"})
_OS_REASONS = {
    errno.ECONNREFUSED: "connection refused (is the server up, and listening on that port?)",
    errno.EHOSTUNREACH: "host unreachable",
    errno.ENETUNREACH: "network unreachable",
    errno.ECONNRESET: "connection reset by the server",
    errno.ETIMEDOUT: "no answer in time",
}

#: The port a DSN without one means.
DEFAULT_PORT = 5432


def postgres_server(dsn: str) -> str:
    """Where a DSN points, as ``host:port`` (several hosts comma-separated); no user, no password.

    A unix-socket directory (``?host=/run/postgresql``) is named as given.
    """
    try:
        parts = urllib.parse.urlsplit(dsn)
        netloc = parts.netloc.rpartition("@")[2]
        query = urllib.parse.parse_qs(parts.query)
    except ValueError:
        return "the server of load.connectionParams"
    hosts = [h for h in netloc.split(",") if h] or [""]
    query_host = (query.get("host") or [""])[0]
    query_port = (query.get("port") or [""])[0]
    named = []
    for spec in hosts:
        host, port = _split_host(spec)
        host = host or query_host or "localhost"
        named.append(f"{host}:{port or query_port or DEFAULT_PORT}")
    return ",".join(named)


def _split_host(spec: str) -> tuple[str, str]:
    if spec.startswith("["):  # [IPv6]:port
        host, _, rest = spec[1:].partition("]")
        return f"[{host}]", rest.removeprefix(":")
    host, _, port = spec.partition(":")
    return urllib.parse.unquote(host), port


def login_failure(exc: BaseException) -> str | None:
    """Why a connection failed, when it is a failure to reach the server or to log in.

    None for any other failure (a query error, a privilege, a bug). Looks at the
    exception and at what it was raised from.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        reason = _reason(current)
        if reason is not None:
            return reason
        current = current.__cause__
    return None


def _reason(exc: BaseException) -> str | None:
    sqlstate = getattr(exc, "sqlstate", None)
    if isinstance(sqlstate, str) and len(sqlstate) == 5:
        if sqlstate[:2] in _LOGIN_CLASSES or sqlstate in _LOGIN_CODES:
            return first_line(exc)
        return None
    if isinstance(exc, socket.gaierror):
        return f"host name not found ({exc.strerror or first_line(exc)})"
    if isinstance(exc, TimeoutError):
        return "no answer in time"
    if isinstance(exc, OSError):
        if exc.errno in _OS_REASONS:
            return _OS_REASONS[exc.errno]
        text = str(exc)
        # asyncio's "Multiple exceptions: [Errno 111] Connect call failed (...), ..." when
        # a name resolves to several addresses (localhost: ::1 and 127.0.0.1).
        if "[Errno 111]" in text:
            return _OS_REASONS[errno.ECONNREFUSED]
        if "Connect call failed" in text or isinstance(exc, ConnectionError):
            return first_line(exc)
    return None


def connect_failure_line(dsn: str, exc: BaseException) -> str | None:
    """``cannot connect to PostgreSQL at HOST:PORT: REASON``, or None when it is not one."""
    reason = login_failure(exc)
    if reason is None:
        return None
    return f"cannot connect to PostgreSQL at {postgres_server(dsn)}: {reason}"

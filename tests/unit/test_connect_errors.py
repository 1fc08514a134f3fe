"""A PostgreSQL that cannot be reached or refuses the login: where it is and why, never the DSN."""

from __future__ import annotations

import errno
import socket

import pytest

from streamproc.runtime.connect_errors import connect_failure_line, login_failure, postgres_server


@pytest.mark.parametrize(
    ("dsn", "server"),
    [
        ("postgresql://etl:pw@db.example:6432/sales", "db.example:6432"),
        ("postgresql://etl:p%40ss%3Aw@db.example/sales", "db.example:5432"),
        ("postgres://etl@[::1]:5433/x", "[::1]:5433"),
        ("postgresql://u:pw@a:5432,b:5433/x", "a:5432,b:5433"),
        ("postgresql:///sales?host=/run/postgresql&port=5433", "/run/postgresql:5433"),
        ("postgresql://u:pw@/sales", "localhost:5432"),
    ],
)
def test_the_server_is_named_by_host_and_port_without_user_or_password(
    dsn: str, server: str
) -> None:
    assert postgres_server(dsn) == server


class _PgError(Exception):
    def __init__(self, sqlstate: str, message: str) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


@pytest.mark.parametrize(
    ("exc", "reason"),
    [
        (
            _PgError("28P01", 'password authentication failed for user "etl"'),
            'password authentication failed for user "etl"',
        ),
        (_PgError("28000", 'role "nobody" does not exist'), 'role "nobody" does not exist'),
        (_PgError("3D000", 'database "x" does not exist'), 'database "x" does not exist'),
        (ConnectionRefusedError(errno.ECONNREFUSED, "Connect call failed"), "connection refused"),
        (
            OSError("Multiple exceptions: [Errno 111] Connect call failed ('::1', 5432), ..."),
            "connection refused",
        ),
        (
            socket.gaierror(-2, "Name or service not known"),
            "host name not found (Name or service not known)",
        ),
        (TimeoutError(), "no answer in time"),
    ],
)
def test_a_failure_to_reach_or_log_in_has_a_reason(exc: BaseException, reason: str) -> None:
    found = login_failure(exc)
    assert found is not None and found.startswith(reason)


@pytest.mark.parametrize(
    "exc",
    [
        _PgError("42501", "permission denied for table t"),
        _PgError("23505", "duplicate key"),
        FileNotFoundError(errno.ENOENT, "No such file"),
        ValueError("x"),
    ],
)
def test_other_failures_are_not_connection_failures(exc: BaseException) -> None:
    assert login_failure(exc) is None
    assert connect_failure_line("postgresql://u:pw@h/x", exc) is None


def test_a_failure_wrapped_by_another_is_found_through_its_cause() -> None:
    try:
        try:
            raise ConnectionRefusedError(errno.ECONNREFUSED, "refused")
        except OSError as inner:
            raise RuntimeError("opening the sink failed") from inner
    except RuntimeError as outer:
        line = connect_failure_line("postgresql://u:secret@127.0.0.1:1/x", outer)
    assert line is not None
    assert line.startswith("cannot connect to PostgreSQL at 127.0.0.1:1: connection refused")
    assert "secret" not in line

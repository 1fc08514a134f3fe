"""asyncpg's client-side errors as port-level errors (streamproc/port_errors.py).

PostgreSQL's own errors carry a SQLSTATE and pass as they are: their class is
the port's reason. asyncpg's client-side errors (`InterfaceError`) carry none:
a connection the server closed under us is an outage; the rest (a misuse, a
configuration, a value asyncpg cannot encode for its column) are fatal.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from functools import wraps
from typing import Any, ParamSpec, TypeVar

from asyncpg.exceptions import InterfaceError

from streamproc.port_errors import PortError, PortFatal, PortUnavailable

P = ParamSpec("P")
T = TypeVar("T")


def port_error(exc: Exception) -> Exception:
    """A client-side asyncpg error as a port-level error; any other error as it is."""
    if isinstance(exc, InterfaceError) and not isinstance(exc, PortError):
        if "connection is closed" in str(exc):
            return PortUnavailable(exc)
        return PortFatal(exc)
    return exc


@asynccontextmanager
async def postgres_port_errors() -> AsyncIterator[None]:
    """Raise asyncpg's client-side errors met inside as port-level errors."""
    try:
        yield
    except InterfaceError as exc:
        raise port_error(exc) from exc


def raises_port_errors(
    method: Callable[P, Coroutine[Any, Any, T]],
) -> Callable[P, Coroutine[Any, Any, T]]:
    """A coroutine function that raises asyncpg's client-side errors as port-level errors."""

    @wraps(method)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        async with postgres_port_errors():
            return await method(*args, **kwargs)

    return wrapper

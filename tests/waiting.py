"""Waiting on a condition, never for a fixed time, without blocking the event loop."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


async def wait_until(
    condition: Callable[[], T | Awaitable[T]],
    what: str,
    timeout: float = 60.0,
    interval: float = 0.1,
) -> T:
    """Poll condition() (plain or async) until it returns something true.

    Args:
        condition: What to wait for; may be a coroutine function. An AssertionError it
            raises (a process that died, say) ends the wait at once.
        what: What is waited for, for the failure message.
        timeout: Seconds before the wait fails.
        interval: Seconds between polls.

    Returns:
        The first true value condition() returned.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value  # type: ignore[return-value]
        assert time.monotonic() < deadline, f"not in {timeout:g} s: {what}"
        await asyncio.sleep(interval)

"""Running a batch's CPU work on a thread, so the loop keeps driving the commit in flight.

Preparing a batch (decode, fold, emit) is seconds of pure Python. On the
event loop it would hold up the transaction of the previous batch between
its statements: PostgreSQL would sit idle while Python folds. On one worker
thread, the interpreter switches between the two every few milliseconds,
so the commit's statements go out while the next batch is folded.

Only one job runs at a time, and the loop awaits it under the query's lock,
so the engine is never touched by two threads at once. A cancelled caller
still waits for its job: the engine must not be closed under it.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")


class Offload:
    """One worker thread for a query's CPU-bound batch work."""

    def __init__(self) -> None:
        self._pool: ThreadPoolExecutor | None = None

    async def run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """fn(*args, **kwargs) on the worker thread; its result or its exception."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="streamproc-batch")
        loop = asyncio.get_running_loop()
        # run_in_executor drops the caller's context variables; the log context
        # (the batch a line is about) must follow the work onto the thread.
        context = contextvars.copy_context()
        job = loop.run_in_executor(self._pool, lambda: context.run(fn, *args, **kwargs))
        try:
            return await asyncio.shield(job)
        except asyncio.CancelledError:
            with contextlib.suppress(BaseException):
                await job
            raise

    def close(self) -> None:
        """Stop the worker thread (after the job it runs, if any)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

"""Fixtures shared by all test suites.

Servers: ``stack``, ``kafka_bootstrap`` and ``pg_dsn`` point at a Kafka
broker and a PostgreSQL server. ``STREAMPROC_KAFKA_BOOTSTRAP`` and
``STREAMPROC_PG_DSN`` select external servers (each on its own); whatever is
not external is started locally (``streamproc.local``) the first time a test
asks for it, once per session, and stopped at the end of the session, also
on Ctrl-C (atexit) and if pytest is killed (the kernel kills the servers).
Unit tests that request none of these fixtures start nothing.

Per test: ``unique_name`` (a fresh topic/group/table name) and ``pg`` (an
asyncpg connection).

Parallel runs (``make test``: pytest-xdist, ``-n``): every worker process starts its
own stack through these session fixtures (its own run directory, free ports) and
tmp_path is per worker, so nothing is shared between workers. The longest tests
run first (`pytest_collection_modifyitems`), so that the workers share them out
instead of one worker ending the run with them.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import secrets
import shutil
import signal
import tempfile
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import pytest
import pytest_asyncio

from streamproc.local import StackInfo, start_stack, stop_stack

KAFKA_ENV = "STREAMPROC_KAFKA_BOOTSTRAP"
PG_ENV = "STREAMPROC_PG_DSN"

#: The longest tests, longest first (as `pytest --durations` shows them): they start
#: first. xdist (``--maxschedchunk 1``) hands each worker two tests at first and one
#: more whenever it has one left, so the second test here shares the first one's
#: worker: a short one, so that no long test waits behind the longest.
START_FIRST = (
    "tests/faults/test_kill9.py",
    "tests/faults/test_injection.py::test_validate_accepts_the_clean_config",
    "tests/faults/test_postgres_outage.py",
    "tests/faults/test_rebalance.py",
    "tests/faults/test_broker_pause.py",
    "tests/integration/test_cli_run.py::test_faust_worker_runs_the_same_query",
    "tests/faults/test_bounded_runs.py",
)
#: The layers, slower first.
LAYERS = ("faults", "integration", "component", "unit")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run the longest tests first, then the layers from the slowest to the fastest."""

    def rank(item: pytest.Item) -> tuple[int, int]:
        for i, prefix in enumerate(START_FIRST):
            if item.nodeid.startswith(prefix):
                return (0, i)
        parts = item.nodeid.split("/")
        layer = parts[1] if len(parts) > 2 and parts[0] == "tests" else ""
        return (1, LAYERS.index(layer) if layer in LAYERS else len(LAYERS))

    items.sort(key=rank)


@dataclass(frozen=True)
class StackEndpoints:
    """The servers the tests use.

    Attributes:
        bootstrap: Kafka bootstrap servers.
        dsn: PostgreSQL URL.
        local: The locally started part, if any (for fault injection with
            ``streamproc.local.stop_postgres`` etc.); None if all external.
    """

    bootstrap: str
    dsn: str
    local: StackInfo | None

    @property
    def broker_is_local(self) -> bool:
        """True if the broker was started by this session."""
        return self.local is not None and bool(self.local.bootstrap)

    @property
    def postgres_is_local(self) -> bool:
        """True if PostgreSQL was started by this session."""
        return self.local is not None and bool(self.local.dsn)


# ----------------------------------------------------------------------------- servers


@pytest.fixture(scope="session")
def stack(request: pytest.FixtureRequest) -> Iterator[StackEndpoints]:
    """Kafka + PostgreSQL for the session: external (env vars) or local."""
    external_kafka = os.environ.get(KAFKA_ENV, "")
    external_pg = os.environ.get(PG_ENV, "")
    if external_kafka and external_pg:
        yield StackEndpoints(external_kafka, external_pg, None)
        return
    run_dir = Path(tempfile.mkdtemp(prefix="streamproc-test-stack-"))
    owner = os.getpid()

    def cleanup() -> None:
        if os.getpid() != owner:  # a forked child inherited the atexit hook
            return
        stop_stack(run_dir)
        if not request.session.testsfailed:  # keep the logs of a failed run
            shutil.rmtree(run_dir, ignore_errors=True)

    atexit.register(cleanup)  # Ctrl-C or an error that skips the teardown
    with _sigterm_as_keyboard_interrupt():
        try:
            info = start_stack(
                run_dir,
                broker=not external_kafka,
                postgres=not external_pg,
                die_with_parent=True,  # even a kill -9 of pytest leaves nothing running
            )
            yield StackEndpoints(external_kafka or info.bootstrap, external_pg or info.dsn, info)
        finally:
            cleanup()
            atexit.unregister(cleanup)


@contextlib.contextmanager
def _sigterm_as_keyboard_interrupt() -> Iterator[None]:
    """Let SIGTERM stop pytest like Ctrl-C does, so that teardowns run.

    Only when SIGTERM has its default action and we are in the main thread.
    """
    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
    ):
        yield
        return

    def _interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, _interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


@pytest.fixture(scope="session")
def local_stack(stack: StackEndpoints) -> StackInfo:
    """The local stack, for fault injection; skips if any server is external."""
    if stack.local is None or not (stack.broker_is_local and stack.postgres_is_local):
        pytest.skip("needs the local broker and PostgreSQL (external servers configured)")
    return stack.local


@pytest.fixture(scope="session")
def kafka_bootstrap(request: pytest.FixtureRequest) -> str:
    """Kafka bootstrap servers (``$STREAMPROC_KAFKA_BOOTSTRAP`` or local)."""
    external = os.environ.get(KAFKA_ENV)
    if external:
        return external
    endpoints: StackEndpoints = request.getfixturevalue("stack")
    return endpoints.bootstrap


@pytest.fixture(scope="session")
def pg_dsn(request: pytest.FixtureRequest) -> str:
    """PostgreSQL URL (``$STREAMPROC_PG_DSN`` or local)."""
    external = os.environ.get(PG_ENV)
    if external:
        return external
    endpoints: StackEndpoints = request.getfixturevalue("stack")
    return endpoints.dsn


# ----------------------------------------------------------------------------- per test


@pytest.fixture
def unique_name(request: pytest.FixtureRequest) -> str:
    """A fresh name for a topic, group or table: ``t_<test name>_<random>``.

    Only ``[a-z0-9_]``, at most 41 characters: PostgreSQL allows 63, which
    leaves room for suffixes like ``_partials``.
    """
    base = re.sub(r"[^a-z0-9_]+", "_", request.node.name.lower()).strip("_")
    return f"t_{base[:30]}_{secrets.token_hex(4)}"


@pytest_asyncio.fixture
async def pg(pg_dsn: str) -> AsyncIterator[Any]:
    """An asyncpg connection to ``pg_dsn``, closed after the test."""
    import asyncpg

    conn = await asyncpg.connect(pg_dsn, timeout=10)
    try:
        yield conn
    finally:
        try:
            await conn.close(timeout=5)
        except Exception:
            with contextlib.suppress(Exception):
                conn.terminate()

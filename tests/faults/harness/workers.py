"""Worker processes (``python -m tests.faults.worker CONFIG``), the clean reference run,
and a worker's metrics.

Workers run as real subprocesses, so that a kill -9 is a real one; each dies with pytest
(PR_SET_PDEATHSIG), and every test stops the workers it started by PID.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path

from streamproc.commands.run import store_factory_for
from streamproc.config import load_config
from streamproc.runtime.planner import plan_from_config
from streamproc.runtime.query import RunStats, StreamingQuery
from tests.waiting import wait_until

REPO = Path(__file__).resolve().parents[3]


def _die_with_parent() -> None:
    # A worker must not outlive pytest, even when pytest is killed with -9.
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG


class Worker:
    """One worker process: ``python -m tests.faults.worker CONFIG``, output to a log file."""

    def __init__(
        self,
        config: Path,
        log_path: Path,
        env: Mapping[str, str] | None = None,
        session_timeout_ms: int | None = None,
    ) -> None:
        """Start the worker.

        Args:
            config: The pipeline config.
            log_path: Where its stdout and stderr go.
            env: Extra environment variables.
            session_timeout_ms: Its consumer-group session (the worker's default if None).
        """
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.started = time.monotonic()
        extra = [str(session_timeout_ms)] if session_timeout_ms else []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.faults.worker", str(config), *extra],
            cwd=REPO,
            env={**os.environ, **(env or {})},
            stdout=self._log,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,
        )

    @property
    def pid(self) -> int:
        """The worker's process id."""
        return self.proc.pid

    def text(self) -> str:
        """Everything the worker logged so far."""
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        """True while the process runs."""
        return self.proc.poll() is None

    def assert_alive(self) -> None:
        """Fail with the end of its log if the worker exited."""
        assert self.alive(), f"worker {self.pid} exited:\n{self.text()[-3000:]}"

    async def wait_for(self, needle: str, timeout: float = 60.0) -> None:
        """Wait until the log contains needle (fails if the worker exits first)."""

        def logged() -> bool:
            if needle in self.text():
                return True
            self.assert_alive()
            return False

        try:
            await wait_until(logged, repr(needle), timeout, interval=0.05)
        except AssertionError as exc:
            if not self.alive():
                raise
            raise AssertionError(f"{exc} in the log:\n{self.text()[-3000:]}") from None

    def kill9(self) -> None:
        """SIGKILL: no cleanup of any kind in the worker."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    async def finish(self, timeout: float = 120.0) -> int:
        """Wait for the worker to exit by itself; its exit code."""
        try:
            await wait_until(lambda: not self.alive(), "the worker's exit", timeout)
        except AssertionError as exc:
            raise AssertionError(f"{exc}: still running\n{self.text()[-3000:]}") from None
        return int(self.proc.returncode)

    async def terminate(self, timeout: float = 60.0) -> int:
        """SIGTERM (commit the batch in flight, then exit); its exit code."""
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGTERM)
        return await self.finish(timeout)

    def stop(self) -> None:
        """Make sure the process is gone (for finally blocks)."""
        if self.alive():
            self.kill9()
        self._log.close()


async def clean_run(config: Path, **changes: str) -> RunStats:
    """Run a config's query once, in this process, availablenow, with renamed outputs.

    The reference every fault run is compared with: one worker, no fault.

    Args:
        config: The fault run's config.
        **changes: ``query`` and ``table`` (required), ``late_table``: the names the
            clean run writes under.

    Returns:
        The run's stats.
    """
    document = json.loads(config.read_text())
    streaming = document["streamingConfigJson"]
    streaming["triggerMode"] = "availablenow"
    streaming["queryName"] = changes["query"]
    document["pipelineId"] = changes["query"]
    document["load"]["table"] = changes["table"]
    if "late_table" in changes:
        streaming["lateDataConfig"]["lateDataTable"] = changes["late_table"]
    path = config.with_name(f"{changes['query']}.json")
    path.write_text(json.dumps(document))
    plan = plan_from_config(load_config(str(path)))
    query = StreamingQuery(plan, store_factory_for(plan, "memory"))
    return await asyncio.wait_for(query.run(), 300)


def scrape(port: int, metric: str, predicate: Callable[[str], bool] = lambda line: True) -> float:
    """The value of a metric line on a worker's /metrics, or NaN when absent."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    for line in text.splitlines():
        if line.startswith(metric + "{") and predicate(line):
            return float(line.rsplit(" ", 1)[1])
    return float("nan")

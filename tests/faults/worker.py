"""Test-only worker: ``python -m tests.faults.worker CONFIG [SESSION_TIMEOUT_MS]``.

Run from the repo root. Exactly ``streamproc run CONFIG`` (same plan, same
`run_query`, same exit codes and summary), except that the consumer-group
session timeout is 6 s (or the one given) instead of 10 s: a worker killed
with -9 stays in the group until its session times out, and a joining member
waits about half of it for its first assignment (STREAMING.md, "The local stack"), while the
fault tests kill and restart workers dozens of times.
"""

from __future__ import annotations

import asyncio
import dataclasses
import sys
import time

from streamproc.config import load_config
from streamproc.runtime.main import configure_logging, exit_status, run_query, summary_lines
from streamproc.runtime.planning import plan_from_config
from streamproc.runtime.query import QueryFailedError

SESSION_TIMEOUT_MS = 6_000


def main(argv: list[str]) -> int:
    config = load_config(argv[0])
    session_timeout_ms = int(argv[1]) if len(argv) > 1 else SESSION_TIMEOUT_MS
    plan = dataclasses.replace(plan_from_config(config), session_timeout_ms=session_timeout_ms)
    configure_logging(config.logging.log_level)
    started = time.monotonic()
    try:
        stats = asyncio.run(run_query(plan))
    except QueryFailedError as exc:
        print(f"streamproc: {exc}", file=sys.stderr)
        return 1
    for line in summary_lines(plan, stats, time.monotonic() - started):
        print(line, flush=True)
    return exit_status(plan, stats)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

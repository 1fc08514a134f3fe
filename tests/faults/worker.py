"""Test-only worker: ``python -m tests.faults.worker CONFIG [SESSION_TIMEOUT_MS]``.

Run from the repo root. Exactly ``streamproc run CONFIG`` (same plan, same
`run_query`, same exit codes and summary), except that the consumer-group
session timeout is 6 s (or the one given) instead of 10 s: a worker killed
with -9 stays in the group until its session times out, and a joining member
waits about half of it for its first assignment (OPERATING.md, "The local stack"), while the
fault tests kill and restart workers dozens of times.

Two knobs script the moments several workers meet, on the real broker and
PostgreSQL (tests/faults/test_several_workers.py):

- ``STREAMPROC_TEST_CLIENT_ID``: the Kafka client id, which orders the group's
  members and so decides which partitions the round-robin assignor gives each;
- ``STREAMPROC_TEST_GATE`` (a path) and ``STREAMPROC_TEST_GATE_COMMIT`` (N, default
  1): the N-th checkpoint commit this worker tries waits while that file exists,
  as a commit delayed by a slow network would (the batch stays in flight).
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import sys
import time
from pathlib import Path
from typing import Any

from streamproc.commands.run import configure_logging, exit_status, run_query, summary_lines
from streamproc.config import load_config
from streamproc.runtime.plan import QueryPlan
from streamproc.runtime.planner import plan_from_config
from streamproc.runtime.query import QueryFailedError
from streamproc.runtime.wiring import QueryPorts, kafka_postgres_ports
from streamproc.sinks.base import CommitBatch, CommitOutcome

SESSION_TIMEOUT_MS = 6_000


class GatedCommits:
    """Holds the N-th commit while the gate file exists; everything else as the checkpoint."""

    def __init__(self, checkpoint: Any, gate: Path, nth: int) -> None:
        self._checkpoint = checkpoint
        self._gate = gate
        self._nth = nth
        self._tries = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._checkpoint, name)

    async def commit(self, batch: CommitBatch, *, dry_run: bool = False) -> CommitOutcome:
        self._tries += 1
        if self._tries == self._nth:
            print(f"test gate: commit {self._nth} waits for {self._gate}", flush=True)
            while self._gate.exists():
                await asyncio.sleep(0.05)
        outcome: CommitOutcome = await self._checkpoint.commit(batch, dry_run=dry_run)
        return outcome


def ports_for(plan: QueryPlan) -> QueryPorts | None:
    gate = os.environ.get("STREAMPROC_TEST_GATE")
    if not gate:
        return None
    ports = kafka_postgres_ports(plan)
    nth = int(os.environ.get("STREAMPROC_TEST_GATE_COMMIT", "1"))
    gated: Any = GatedCommits(ports.checkpoint, Path(gate), nth)
    return dataclasses.replace(ports, checkpoint=gated)


def main(argv: list[str]) -> int:
    config = load_config(argv[0])
    session_timeout_ms = int(argv[1]) if len(argv) > 1 else SESSION_TIMEOUT_MS
    plan = dataclasses.replace(plan_from_config(config), session_timeout_ms=session_timeout_ms)
    client_id = os.environ.get("STREAMPROC_TEST_CLIENT_ID")
    if client_id:
        plan = dataclasses.replace(plan, kafka_params={**plan.kafka_params, "client_id": client_id})
    configure_logging(config.logging.log_level)
    started = time.monotonic()
    try:
        stats = asyncio.run(run_query(plan, ports=ports_for(plan)))
    except QueryFailedError as exc:
        print(f"streamproc: {exc}", file=sys.stderr)
        return 1
    for line in summary_lines(plan, stats, time.monotonic() - started):
        print(line, flush=True)
    return exit_status(plan, stats)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Shared machinery of the fault tests: configs, worker processes, exact checks, poison.

Workers run as real subprocesses (``python -m tests.faults.worker CONFIG``), so a kill
-9 is a real one. Every check is exact: the ledger must be contiguous per partition and
count every produced record once, and tables are compared row by row with the model
(tests/reference.py) and with one clean run.

Modules: `configs` (the pipeline and its query), `workers` (worker processes, the clean
run, metrics), `ledger` (ledger checks and progress waits), `poison` (bad input),
`lives` (a worker killed with -9 life after life, then a finish), `rebalance` (three
workers, one killed with -9, a fourth added; the checks against the model and a clean run).
"""

from tests.faults.harness.configs import (
    AGG_TEXT,
    DELAY_MS,
    SIZE_MS,
    SLIDE_MS,
    Pipeline,
    PipelineFactory,
    fault_query,
    pipeline_factory,
)
from tests.faults.harness.ledger import (
    LedgerSummary,
    check_ledger,
    wait_for_progress,
    wait_for_records,
)
from tests.faults.harness.poison import Poison, good_records, poison_records, with_poison
from tests.faults.harness.workers import REPO, Worker, clean_run, scrape

__all__ = [
    "AGG_TEXT",
    "DELAY_MS",
    "REPO",
    "SIZE_MS",
    "SLIDE_MS",
    "LedgerSummary",
    "Pipeline",
    "PipelineFactory",
    "Poison",
    "Worker",
    "check_ledger",
    "clean_run",
    "fault_query",
    "good_records",
    "pipeline_factory",
    "poison_records",
    "scrape",
    "wait_for_progress",
    "wait_for_records",
    "with_poison",
]

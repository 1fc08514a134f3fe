"""`streamproc reset`: drop a query's checkpoint, so that it starts over.

    streamproc reset CONFIG [--drop-results] [--wait] [--yes]
    streamproc reset QUERY --dsn DSN [--drop-results] [--wait] [--yes]

Removes the query's registration, positions, ledger rows, partial states and
bounded runs (and rows of layout 1, if any); with `--drop-results`, the result
table registered to the query and its rows in the late and dead-letter tables,
the same whether the query is named by its config or by its name, and a file
source's registered files (kept otherwise: the kept rows' keys carry the
files' ordinals, and a rerun adds nothing).
The next run reads the topic from `startingOffsets` again. Asks on a terminal
first; elsewhere it needs `--yes`. Refused while a worker of the query runs
(`--wait` waits for it to stop), for a table the query does not own, and for a
name that has no checkpoint: each is one line and exit 1, and nothing changes.
"""

from __future__ import annotations

import asyncio
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from streamproc.batch.plan import BatchPlan
    from streamproc.commands.reset_tables import ResetReport
    from streamproc.runtime.plan import QueryPlan


@dataclass(frozen=True, slots=True)
class ResetTarget:
    """What to reset, resolved from a config or a query name.

    Attributes:
        query: The query name, or a batch job's pipelineId (`batch`).
        batch: A batch job's config: its table claim is what is reset.
    """

    query: str
    dsn: str
    result_table: str | None
    late_table: str | None
    dlq_table: str | None = None
    batch: bool = False


def resolve_target(target: str, dsn: str | None) -> ResetTarget:
    """A query name with a DSN (a config file is read by `target_of_plan`).

    Raises:
        ValueError: one line saying what is missing.
    """
    if not target.strip():
        raise ValueError("reset needs a config file or a query name; got an empty name")
    if target.endswith(".json") or os.sep in target:
        raise ValueError(f"{target}: no such config file")
    dsn = dsn or os.environ.get("STREAMPROC_PG_DSN")
    if not dsn:
        raise ValueError(
            f"{target}: not a config file; to reset a query by name give --dsn "
            "(or set STREAMPROC_PG_DSN)"
        )
    return ResetTarget(target, dsn, None, None)


def target_of_plan(plan: QueryPlan | BatchPlan, dsn: str | None) -> ResetTarget:
    """A config's query (its DSN and tables), or a batch job's claim on its table."""
    from streamproc.batch.plan import BatchPlan

    if isinstance(plan, BatchPlan):
        return ResetTarget(
            plan.pipeline_id, dsn or plan.dsn, plan.table, None, plan.dlq_table, batch=True
        )
    assert plan.dsn is not None
    table = plan.table if plan.sink_type == "postgresql" else None
    late = plan.late_table if plan.late_strategy == "separatestream" else None
    return ResetTarget(plan.query_name, dsn or plan.dsn, table, late, plan.dlq_table)


def _confirm(question: str, stdin: TextIO, stdout: TextIO) -> bool:
    stdout.write(f"{question} [y/N] ")
    stdout.flush()
    return stdin.readline().strip().lower() in ("y", "yes")


def reset_from_cli(
    target: str,
    *,
    dsn: str | None = None,
    drop_results: bool = False,
    yes: bool = False,
    wait: bool = False,
    stdin: TextIO = sys.stdin,
    stdout: TextIO = sys.stdout,
) -> int:
    """Run `streamproc reset`; returns the exit status (0 done, 1 refused or failed).

    A config is read as `run` reads it (`preflight`): its warnings and errors are the
    same lines, each naming the file once.
    """
    if Path(target).is_file():
        from streamproc.commands.preflight import preflight

        checked = preflight(target)
        for line in checked.problem_lines(target):
            print(line, file=sys.stderr)
        if checked.plan is None:
            return 1
        resolved = target_of_plan(checked.plan, dsn)
    else:
        try:
            resolved = resolve_target(target, dsn)
        except ValueError as exc:
            print(f"streamproc: {exc}", file=sys.stderr)
            return 1
    what = (
        f"batch job {resolved.query}'s claim on table {resolved.result_table}"
        if resolved.batch
        else f"the checkpoint of query {resolved.query}"
    )
    if drop_results:
        what += " and its result table"
    if not yes:
        if not stdin.isatty():
            print(
                f"streamproc: reset would drop {what}; not a terminal, so confirm with --yes",
                file=sys.stderr,
            )
            return 1
        if not _confirm(f"Drop {what}? The next run starts over.", stdin, stdout):
            print("nothing was changed", file=stdout)
            return 1
    try:
        report = asyncio.run(_reset(resolved, drop_results, wait))
    except Exception as exc:
        from streamproc.runtime.connect_errors import connect_failure_line
        from streamproc.runtime.failure_kinds import first_line
        from streamproc.sinks.base import CheckpointError

        if isinstance(exc, CheckpointError):
            print(f"streamproc: {exc}", file=sys.stderr)
        else:
            why = connect_failure_line(resolved.dsn, exc) or first_line(exc)
            print(f"streamproc: reset of query {resolved.query} failed: {why}", file=sys.stderr)
        return 1
    dropped = "".join(f"; dropped table {t}" for t in report.dropped_tables)
    if resolved.batch:
        print(
            f"batch job {resolved.query}: released its table{dropped or ' (kept)'}; "
            f"{report.dead_letters} dead letter(s) removed",
            file=stdout,
        )
        return 0
    print(
        f"query {resolved.query}: removed {report.positions} position(s), "
        f"{report.ledger_rows} ledger row(s), {report.state_rows} partial state(s), "
        f"{report.late_rows} late row(s), {report.dead_letters} dead letter(s){dropped}",
        file=stdout,
    )
    return 0


async def _reset(target: ResetTarget, drop_results: bool, wait: bool) -> ResetReport:
    import asyncpg

    from streamproc.commands.reset_tables import ResetTables, reset_batch_job, reset_query

    conn = await asyncpg.connect(target.dsn, timeout=10)
    try:
        if target.batch:
            return await reset_batch_job(
                conn, target.query, drop_results=drop_results, dlq_table=target.dlq_table
            )
        if wait:
            print(f"waiting for the workers of query {target.query} to stop ...", flush=True)
        return await reset_query(
            conn,
            target.query,
            drop_results=drop_results,
            named=ResetTables(target.result_table, target.late_table, target.dlq_table),
            wait=wait,
        )
    finally:
        await conn.close()

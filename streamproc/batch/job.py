"""Run a batch job: read the bounded input, transform it, load it in one transaction.

    input (Kafka from startingOffsets to the ends at start, or JSON-lines files)
      -> decode (not JSON / not an object: bad)
      -> data-quality rules after extract
      -> aggregation: the streaming engine without a watermark (collect.py), every
         window, or session of a gapDuration, final at the end
         | no aggregation: the records themselves
      -> one PostgreSQL transaction: the table, the write mode, the rows, and the
         dead letters (dlqType kafka: sent before the commit; postgresql: rows of
         the dead-letter table, in the transaction)

Bad records never stop the job unless failFast is set; each is counted with its
reason, logged or dead-lettered per dlqConfig, and listed in the summary.
Records that quality rules quarantine (onFailure continue) are dead-lettered
the same way, with the rule as the reason, and counted as filtered.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from streamproc.batch.collect import BatchCollector, BatchFailedError
from streamproc.batch.kafka import bounded_ranges, read_bounded
from streamproc.batch.load import LoadResult, LoadTarget, RowRefusedError, load
from streamproc.batch.plan import BatchPlan
from streamproc.batch.report import BatchReport
from streamproc.runtime.connect_errors import connect_failure_line
from streamproc.runtime.failure_kinds import first_line, is_outage
from streamproc.runtime.resilience import CircuitBreaker, call_with_retry
from streamproc.sinks.base import DeadLetterRow
from streamproc.sinks.layout import dead_letter_table_sql, result_layout
from streamproc.sinks.postgres_dlq import insert_dead_letters
from streamproc.sinks.postgres_registry import create_if_missing
from streamproc.sources.base import RawRecord
from streamproc.sources.file_listing import identity, iter_files, list_files

log = logging.getLogger("streamproc.batch")

#: Lines of a file handed to the engine at a time.
CHUNK = 10_000


async def _input(plan: BatchPlan, collector: BatchCollector) -> AsyncIterator[Sequence[RawRecord]]:
    if plan.source_type == "file":
        # A glob that matches nothing is an empty input, as an empty directory is.
        collector.files = list_files(plan.path, allow_empty=True, patterns=plan.file_patterns)
        collector.report.files = len(collector.files)
        for path, lines in iter_files(collector.files):
            collector.identities.append(identity(path, lines))
            if lines.partial_tail:
                collector.report.incomplete.append(
                    f"{path}: last line incomplete ({lines.partial_tail} byte(s) after the last "
                    "newline)"
                )
            for start in range(0, len(lines.records), CHUNK):
                yield lines.records[start : start + CHUNK]
        return
    ranges = await bounded_ranges(plan.bootstrap, plan.topic, plan.kafka_params)
    async for batch in read_bounded(plan.bootstrap, plan.topic, ranges, plan.kafka_params):
        yield batch


async def run_batch(
    plan: BatchPlan, *, committing: Callable[[], None] | None = None
) -> BatchReport:
    """Run the job to its end: read, transform, load, dead letters; the report.

    Args:
        plan: The job.
        committing: Called when the load's transaction is about to commit: from
            then on the job is not to be cancelled (the table may be loaded already).

    Raises:
        BatchFailedError and the errors of the input and the load (see `run_batch_cli`).
    """
    collector = BatchCollector(plan, BatchReport(plan.source_name, plan.spec is not None))
    report = collector.report
    async for chunk in _input(plan, collector):
        collector.add(chunk)
        await asyncio.sleep(0)  # a signal is handled between chunks, not at the load
    collector.finish()
    docs, places = collector.rows()
    report.rows = len(docs) + len(report.refused)
    if plan.write_mode == "overwrite" and report.rows == 0 and not plan.allow_empty_overwrite:
        raise BatchFailedError(_empty_overwrite(plan, report))
    target = LoadTarget(
        plan.table,
        plan.write_mode,
        plan.upsert_keys,
        result_layout(plan.spec, plan.table) if plan.spec else None,
        frozenset(collector.fields),
        owner=plan.pipeline_id,
    )
    producer = await _dlq_producer(plan)
    job_id = f"{plan.pipeline_id}/job/{int(time.time() * 1000)}"

    async def before_commit(conn: Any, result: LoadResult) -> None:
        letters = list(collector.letters)
        rows = list(collector.dead_rows)
        if plan.spec is None:
            # Records loaded as they are: a refused row is a record, dead-lettered.
            for refusal in result.refused:
                raw = collector.records[refusal.seq]
                reason = f"refused by table {plan.table}: {refusal.reason}"
                collector.letter_for(raw, reason, refusal.reason, letters, rows)
        if producer is not None:
            await producer.send_all(letters)
            report.dead_letters = len(letters)
        if plan.dlq_table:
            await _write_dead_letters(conn, plan, job_id, rows)
            report.dead_letters = len(rows)
        if committing is not None:
            committing()

    try:
        result = await call_with_retry(
            lambda: load(
                plan.dsn,
                target,
                docs,
                batchsize=plan.batchsize,
                fail_fast=plan.fail_fast,
                before_commit=before_commit,
            ),
            plan.retry,
            CircuitBreaker(plan.breaker, name="postgresql"),
            what="batch load",
            is_outage=is_outage,
            retry_if=is_outage,
        )
    except RowRefusedError as exc:
        raise BatchFailedError(
            f"table {plan.table} refused {places[exc.refusal.seq]}: {exc.refusal.reason} "
            "(errorHandlingConfig.failFast: the load was rolled back, the table is unchanged)"
        ) from None
    except Exception as exc:
        # The DSN may hold a password: name the server (host:port) or the setting.
        line = connect_failure_line(plan.dsn, exc)
        if line is not None:
            raise BatchFailedError(
                f"batch job {plan.pipeline_id}: {line}; nothing was loaded"
            ) from None
        if not is_outage(exc):
            raise
        raise BatchFailedError(
            f"PostgreSQL (load.connectionParams) or the dead-letter Kafka cluster could not be "
            f"reached after errorHandlingConfig.retryConfig's attempts: {first_line(exc)}; "
            "nothing was loaded"
        ) from None
    finally:
        if producer is not None:
            await producer.stop()
    report.written, report.deleted = result.written, result.deleted
    for refusal in result.refused:
        report.refused.append((places[refusal.seq], refusal.reason))
        if plan.dlq_type == "logging" or plan.spec is not None:
            collector.log.warning(
                "row rejected by table %s: %s: %s", plan.table, places[refusal.seq], refusal.reason
            )
    if producer is not None:
        report.dead_letter_topic = plan.dlq_topic
    elif plan.dlq_table:
        report.dead_letter_topic = f"table {plan.dlq_table}"
    return report


def _empty_overwrite(plan: BatchPlan, report: BatchReport) -> str:
    """Why an overwrite with nothing to write stops instead of emptying the table."""
    files = "" if report.files is None else f" ({report.files} file(s))"
    counts = f"{report.read} record(s) read from {report.source}{files}"
    if report.bad or report.filtered:
        counts += f", {len(report.bad)} bad, {report.filtered} filtered"
    return (
        f"batch job {plan.pipeline_id}: no row to load ({counts}), and writeMode overwrite "
        f"would leave table {plan.table} empty; nothing was changed (set "
        "load.allowEmptyOverwrite: true to let an empty input empty it)"
    )


async def _write_dead_letters(
    conn: Any, plan: BatchPlan, job_id: str, rows: Sequence[DeadLetterRow]
) -> None:
    """dlqType postgresql: the job's dead letters, in its one transaction.

    The query column holds the pipelineId and the batch id names the job;
    a rerun over the same input leaves rows of positions already there as they are.
    """
    assert plan.dlq_table is not None
    await create_if_missing(conn, plan.dlq_table, dead_letter_table_sql(plan.dlq_table))
    await insert_dead_letters(
        conn,
        plan.dlq_table,
        query=plan.pipeline_id,
        topic=plan.source_name,
        rows=rows,
        batch_of=lambda _partition: job_id,
    )


async def _dlq_producer(plan: BatchPlan) -> Any:
    if plan.dlq_type != "kafka" or not plan.dlq_topic or not plan.dlq_bootstrap:
        return None
    from streamproc.sinks.kafka import KafkaProducerSink

    producer = KafkaProducerSink(plan.dlq_bootstrap, plan.kafka_params)
    await producer.start()
    return producer


#: Signals that stop a job: nothing is loaded (the load is one transaction).
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class JobStoppedError(Exception):
    """A signal stopped the job before its load committed."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


async def run_until_signal(plan: BatchPlan) -> BatchReport:
    """`run_batch`, stopped by SIGINT, SIGTERM or SIGHUP unless its load is committing.

    Raises:
        JobStoppedError: a signal came first; the load's transaction, if begun, was
            rolled back (the connection closed), so nothing was loaded.
    """
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    stopped: list[int] = []
    committing = False

    def commit_begins() -> None:
        nonlocal committing
        committing = True

    def stop(signum: int) -> None:
        if stopped:
            return
        stopped.append(signum)
        if committing:
            # Past the point of no return: the commit may be on the server already,
            # so the job ends as it would have, and says so.
            log.warning(
                "%s arrived while the load committed: the job finishes",
                signal.Signals(signum).name,
            )
        else:
            task.cancel()

    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, stop, int(sig))
    try:
        return await run_batch(plan, committing=commit_begins)
    except asyncio.CancelledError:
        if stopped and not committing:
            raise JobStoppedError(stopped[0]) from None
        raise
    finally:
        for sig in STOP_SIGNALS:
            loop.remove_signal_handler(sig)


def run_batch_cli(plan: BatchPlan) -> int:
    """`streamproc run CONFIG` of a batch job: the summary on stdout, exit 0; or one
    `streamproc:` line on stderr and exit 1 (128 + N when signal N stopped it)."""
    import sys

    from streamproc.batch.report import summary_lines

    started = time.monotonic()
    try:
        report = asyncio.run(run_until_signal(plan))
    except JobStoppedError as exc:
        print(
            f"streamproc: batch job {plan.pipeline_id} stopped by {exc}: nothing was loaded "
            f"(the load is one transaction; table {plan.table} is as it was), run it again",
            file=sys.stderr,
        )
        return 128 + exc.signum
    except Exception as exc:  # every failure is one line; the traceback only at DEBUG
        log.debug("batch job failed", exc_info=True)
        print(f"streamproc: {first_line(exc, limit=1000)}", file=sys.stderr)
        return 1
    elapsed = time.monotonic() - started
    for line in summary_lines(report, plan.pipeline_id, plan.table, plan.write_mode, elapsed):
        print(line)
    return 0

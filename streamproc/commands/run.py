"""Run one streaming query (or a batch job) in this process: `streamproc run CONFIG`.

SIGINT and SIGTERM finish and commit the batch in flight, then the process
exits 0. A bounded trigger (once, availablenow) exits 0 when it reached the
end offsets taken at start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TextIO

from streamproc.batch.plan import BatchPlan
from streamproc.commands.progressbar import ClearBarFilter, ProgressBar
from streamproc.runtime import logformat
from streamproc.runtime.logcontext import log_context
from streamproc.runtime.plan import QueryPlan
from streamproc.runtime.query import QueryFailedError, RunStats, StreamingQuery
from streamproc.runtime.wiring import QueryPorts
from streamproc.sources.kafka_errors import CLIENT_LOGGERS
from streamproc.state.base import LocalStateError, WindowStore
from streamproc.state.memory import memory_store_factory
from streamproc.state.rocks import rocks_store_factory

log = logging.getLogger("streamproc")


def store_factory_for(plan: QueryPlan, kind: str = "rocksdb") -> Callable[[int], WindowStore]:
    """The per-partition WindowStore factory of one worker.

    RocksDB stores live under ``checkpointLocation/<query>/state/<worker>/``,
    one directory per worker process: PostgreSQL is the checkpoint and every
    assigned partition is restored from it, so a worker never needs another
    worker's (or its own previous life's) local state, and two workers on one
    machine never contend for a RocksDB lock. Directories of dead workers on
    this host are removed.
    """
    if kind == "memory":
        return memory_store_factory
    base = Path(plan.checkpoint_location) / plan.query_name / "state"
    host = socket.gethostname()
    _remove_dead_worker_dirs(base, host)
    return rocks_store_factory(base / f"worker-{host}-{os.getpid()}")


def _remove_dead_worker_dirs(base: Path, host: str) -> None:
    prefix = f"worker-{host}-"
    if not base.is_dir():
        return
    for path in base.iterdir():
        pid_text = path.name.removeprefix(prefix)
        if path.name.startswith(prefix) and pid_text.isdigit() and not _alive(int(pid_text)):
            shutil.rmtree(path, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def summary_lines(plan: QueryPlan, stats: RunStats, elapsed_s: float) -> list[str]:
    """The closing summary of a run, in plain words.

    The rate counts the time spent on batches (fetch, decode, engine,
    checkpoint), not the time spent waiting for records to arrive.
    """
    busy = stats.batch_seconds + (stats.times.seconds.get("fetch", 0.0) if stats.run_id else 0.0)
    rate = stats.records / busy if busy > 0 else 0.0
    return [
        f"query {plan.query_name}: {stats.records} record(s) read in {stats.batches} batch(es), "
        f"{elapsed_s:.1f}s ({rate:,.0f} records/s over {busy:.1f}s of work)",
        f"  {'passed through' if plan.spec.passthrough else 'aggregated'} {stats.aggregated}, "
        f"late {stats.late}, bad {stats.bad} "
        f"(rejected by the sink and dead-lettered {stats.dead_lettered}), "
        f"filtered {stats.filtered}; result rows written {stats.result_rows}; "
        f"stale batches {stats.stale_batches}, failed commits {stats.failed_commits}, "
        f"sink outages {stats.sink_outages}",
        *_run_lines(stats),
        f"  {stats.late_summary.text()}",
        *_time_lines(stats),
    ]


def _time_lines(stats: RunStats) -> list[str]:
    """Where the time went (`phases:`) and the lock's share of it (`lock share:`)."""
    seconds = dict(stats.times.seconds)
    # What every worker of the query shares, held or waited for (closing, the
    # progress row, a shared result row's turn): it is what more workers queue on.
    held = seconds.pop("lock", 0.0) + seconds.get("lock_wait", 0.0)
    if not seconds:
        return []
    phases = " ".join(f"{name}={value:.3f}s" for name, value in seconds.items())
    lines = [f"  phases: {phases}"]
    if stats.counted_commits:
        lines.append(
            f"  round trips per commit: {stats.round_trips / stats.counted_commits:.2f} "
            f"(PostgreSQL; {stats.counted_commits} commits)"
        )
    # The loop's wall time: a commit runs while the next batch is fetched and
    # prepared, so the lock is held within this time, never beyond it.
    wall = stats.batch_seconds + seconds.get("fetch", 0.0)
    # Below a second of work the ratio is noise (a one-batch run's commit is most of
    # it, and timer granularity the rest): it said "23.22 ... at most 0.0x".
    if wall >= 1.0:
        share = held / wall
        bound = f"{1 / share:.1f}x" if share > 0 else "no bound"
        lines.append(
            f"  lock share: {share:.2f} (locks every worker of the query shares were held or "
            f"waited for {held:.1f}s of the {wall:.1f}s the worker ran batches: more workers "
            f"speed it up at most {bound})"
        )
    return lines


def _run_lines(stats: RunStats) -> list[str]:
    if stats.run_id is None:
        return []
    mine = sorted(stats.partitions)
    if stats.run_complete:
        return [
            f"  bounded run {stats.run_id}: this worker processed partitions {mine}; the query "
            f"reached the end offsets of run {stats.run_id} on all {stats.run_partitions} "
            "partitions"
        ]
    return [
        f"  bounded run {stats.run_id} interrupted: this worker processed partitions {mine}; "
        "the query had not reached its end offsets (the next bounded run goes on from there)"
    ]


#: Signals that stop a run gracefully (the batch in flight is committed).
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
#: Exit status of a bounded run that --max-seconds stopped before its end.
EXIT_TIMED_OUT = 124


def progress_bar_for(plan: QueryPlan, stream: TextIO) -> ProgressBar | None:
    """The bar of a bounded run on a terminal; None for any other run or stream.

    A file source's offsets are (file ordinal, byte) packed in one number: their
    differences count no records, so a bar over them would show nonsense.
    """
    if plan.trigger not in BOUNDED_TRIGGERS or plan.source_type == "file":
        return None
    bar = ProgressBar(stream)
    return bar if bar.enabled else None


async def run_query(
    plan: QueryPlan, *, max_seconds: float | None = None, ports: QueryPorts | None = None
) -> RunStats:
    """Run a query until it ends, a signal arrives, or max_seconds (wall) pass.

    SIGINT, SIGTERM and SIGHUP finish and commit the batch in flight, then
    stop; `RunStats.stopped_by` names the signal.

    Args:
        plan: The query.
        max_seconds: Stop after this many wall seconds.
        ports: The adapters to run on (default: the plan's Kafka and PostgreSQL).
    """
    try:
        factory = store_factory_for(plan)
    except LocalStateError as exc:
        raise QueryFailedError(str(exc)) from None
    bar = progress_bar_for(plan, sys.stderr)
    best = 0

    def show(_progress: object) -> None:
        nonlocal best
        offsets = query.run_offsets()
        if bar is not None and offsets is not None:
            # A rebalance may take partitions away: the bar never goes back.
            best = max(best, offsets[0])
            bar.update(best, offsets[1])

    query = StreamingQuery(plan, factory, ports=ports, on_progress=show if bar else None)
    with _bar_on_stderr(bar):
        stats = await _run_until_stopped(query, max_seconds)
        offsets = query.run_offsets()
        if bar is not None and offsets is not None:
            bar.finish(max(best, offsets[0]), offsets[1])
    return stats


#: Triggers whose runs end at the end offsets taken when they began.
BOUNDED_TRIGGERS = ("once", "availablenow")


@contextlib.contextmanager
def _bar_on_stderr(bar: ProgressBar | None) -> Iterator[None]:
    """While the bar is drawn, each log line first erases it."""
    if bar is None:
        yield
        return
    handlers = logging.getLogger().handlers
    erase = ClearBarFilter(bar)
    for handler in handlers:
        handler.addFilter(erase)
    try:
        yield
    finally:
        bar.clear()  # a failure's line must not land on the bar's
        for handler in handlers:
            handler.removeFilter(erase)


async def _run_until_stopped(query: StreamingQuery, max_seconds: float | None) -> RunStats:
    loop = asyncio.get_running_loop()

    def stop(signum: int) -> None:
        if query.stats.stopped_by is None:
            query.stats.stopped_by = signum
        query.request_stop()

    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, stop, int(sig))
    timer = loop.call_later(max_seconds, stop, 0) if max_seconds else None
    try:
        return await query.run()
    finally:
        if timer is not None:
            timer.cancel()
        for sig in STOP_SIGNALS:
            loop.remove_signal_handler(sig)


def exit_status(plan: QueryPlan, stats: RunStats) -> int:
    """0 for a run that ended as it should; 128 + signal for a bounded run a signal cut short.

    A continuous run stopped by a signal has done what it was asked (exit
    0); a bounded run that did not reach its end must not look finished to a
    scheduler: 130 (SIGINT), 143 (SIGTERM), 129 (SIGHUP), or 124 when
    --max-seconds stopped it.
    """
    if stats.run_id is None or stats.run_complete or stats.stopped_by is None:
        return 0
    return EXIT_TIMED_OUT if stats.stopped_by == 0 else 128 + stats.stopped_by


def configure_logging(level: str = "INFO") -> None:
    """Log lines on stderr: key=value on a terminal, JSON lines otherwise (`logformat`)."""
    logformat.configure_logging(level, quiet=CLIENT_LOGGERS)


def run_from_cli(config_path: str, *, max_seconds: float | None = None) -> int:
    """`streamproc run CONFIG`: exit 0 when done or stopped, 1 on a bad config or a failure."""
    from streamproc.commands.preflight import preflight

    checked = preflight(config_path)
    for line in checked.problem_lines(config_path):
        print(line, file=sys.stderr)
    if checked.plan is None:
        return 1
    plan = checked.plan
    try:
        configure_logging(plan.log_level)
    except ValueError as exc:
        print(f"streamproc: {exc}", file=sys.stderr)
        return 1
    if isinstance(plan, BatchPlan):
        from streamproc.batch.job import run_batch_cli

        with log_context(pipeline_id=plan.pipeline_id):
            return run_batch_cli(plan)
    with log_context(pipeline_id=plan.pipeline_id, query=plan.query_name):
        return _run_streaming(plan, checked.notes, max_seconds)


def _run_streaming(plan: QueryPlan, notes: list[str], max_seconds: float | None) -> int:
    for note in notes:
        log.info("%s", note)
    started = time.monotonic()
    try:
        stats = asyncio.run(run_query(plan, max_seconds=max_seconds))
    except QueryFailedError as exc:
        print(f"streamproc: {exc}", file=sys.stderr)
        return 1
    for line in summary_lines(plan, stats, time.monotonic() - started):
        print(line)
    return exit_status(plan, stats)

"""`streamproc status CONFIG`: read a query's checkpoint and its topic's ends, then report.

    streamproc status CONFIG [--json] [--stale-after DURATION] [--batches N]

The I/O half of `status_model.py`: the query's rows in PostgreSQL (registration,
positions, the newest ledger rows, the newest bounded run) and each
partition's end offset from the broker. Reads only: it joins no consumer
group and takes no lock, so it is safe beside running workers.
"""

from __future__ import annotations

import asyncio
import sys
from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime
from typing import Any, TextIO

from streamproc.commands.status_model import (
    EXIT_ERROR,
    CheckpointView,
    LedgerBatch,
    PositionRow,
    QueryStatus,
    RunRow,
    TopicEnd,
    build_status,
    exit_status,
)
from streamproc.commands.status_render import text_lines, to_json
from streamproc.runtime.plan import QueryPlan
from streamproc.sinks.layout import (
    LEDGER_TABLE,
    POSITIONS_TABLE,
    PROGRESS_TABLE,
    QUERIES_TABLE,
    RUNS_TABLE,
)
from streamproc.sinks.layout import quote_ident as q
from streamproc.sources.file_registry import FILES_TABLE

#: How many of the newest batches `status` shows by default.
DEFAULT_BATCHES = 10
#: Seconds to wait for PostgreSQL or the broker before calling it unreachable.
CONNECT_TIMEOUT_S = 10.0


class StatusError(RuntimeError):
    """The status cannot be read (unknown query, a server unreachable): one line."""


def status_from_cli(
    config_path: str,
    *,
    as_json: bool = False,
    stale_after: str | None = None,
    batches: int = DEFAULT_BATCHES,
    stdout: TextIO = sys.stdout,
) -> int:
    """Run `streamproc status`: 0 fine, 2 stale (with --stale-after), 1 on any error."""
    from streamproc.commands.preflight import preflight
    from streamproc.commands.status_model import parse_stale_after
    from streamproc.config.durations import DurationError

    try:
        stale_after_ms = None if stale_after is None else parse_stale_after(stale_after)
    except DurationError as exc:
        print(f"streamproc: --stale-after: {exc}", file=sys.stderr)
        return EXIT_ERROR
    checked = preflight(config_path)
    if checked.plan is None:
        for line in checked.problem_lines(config_path):
            print(line, file=sys.stderr)
        return EXIT_ERROR
    if not isinstance(checked.plan, QueryPlan):
        # A batch job keeps no checkpoint: its table is all there is to see.
        print(
            f"streamproc: {config_path}: mode 'batch' keeps no checkpoint, so it has no "
            "status; a batch job's report is printed when it ends",
            file=sys.stderr,
        )
        return EXIT_ERROR
    try:
        status = asyncio.run(read_status(checked.plan, batches=batches))
    except StatusError as exc:
        print(f"streamproc: {exc}", file=sys.stderr)
        return EXIT_ERROR
    if as_json:
        print(to_json(status, stale_after_ms), file=stdout)
    else:
        for line in text_lines(status, stale_after_ms):
            print(line, file=stdout)
    return exit_status(status, stale_after_ms)


async def read_status(plan: QueryPlan, *, batches: int = DEFAULT_BATCHES) -> QueryStatus:
    """The query's status now: its checkpoint in PostgreSQL beside the topic's ends.

    Raises:
        StatusError: the query has no checkpoint, or a server cannot be reached.
    """
    assert plan.dsn is not None  # the plan refuses a query without a checkpoint database
    checkpoint = await _read_checkpoint(
        plan.dsn, plan.query_name, plan.topic, batches, files=plan.source_type == "file"
    )
    ends = await _read_ends(plan)
    return build_status(
        pipeline_id=plan.pipeline_id,
        query=plan.query_name,
        topic=plan.topic,
        starting_offsets=plan.starting_offsets,
        checkpoint=checkpoint,
        ends=ends,
    )


async def _read_checkpoint(
    dsn: str, query: str, topic: str, batches: int, *, files: bool = False
) -> CheckpointView:
    import asyncpg

    from streamproc.runtime.connect_errors import connect_failure_line
    from streamproc.runtime.failure_kinds import first_line

    try:
        conn = await asyncpg.connect(dsn, timeout=CONNECT_TIMEOUT_S)
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        line = connect_failure_line(dsn, exc) or f"cannot reach PostgreSQL: {first_line(exc)}"
        raise StatusError(f"query {query}: {line}") from None
    try:
        return await read_checkpoint(conn, query, topic, batches, files=files)
    finally:
        await conn.close()


async def read_checkpoint(
    conn: Any, query: str, topic: str, batches: int, *, files: bool = False
) -> CheckpointView:
    """A query's rows: registration, positions, newest batches and bounded run.

    With `files` (a file source), also its files' paths by ordinal, so that its
    positions show as file and byte.

    Raises:
        StatusError: the query was never registered here (or was reset).
    """
    registered = None
    if await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", q(QUERIES_TABLE)):
        registered = await conn.fetchrow(
            f"SELECT created_at, global_watermark_ms, clock_timestamp() AS now "
            f"FROM {q(QUERIES_TABLE)} WHERE query = $1",
            query,
        )
    if registered is None:
        raise StatusError(
            f"query {query} has no checkpoint in this database: it never ran against it, "
            "or it was reset (check queryName and the PostgreSQL URL)"
        )
    positions = await conn.fetch(
        f"""SELECT partition, next_offset, watermark_ms, max_event_time_ms, committed_at
            FROM {q(POSITIONS_TABLE)} WHERE query = $1 AND topic = $2 ORDER BY partition""",
        query,
        topic,
    )
    run = await conn.fetchrow(
        f"""SELECT run_id, trigger, status, started_at, finished_at FROM {q(RUNS_TABLE)}
            WHERE query = $1 ORDER BY run_id DESC LIMIT 1""",
        query,
    )
    return CheckpointView(
        registered_at_ms=_ms(registered["created_at"]),
        global_watermark_ms=registered["global_watermark_ms"],
        positions=tuple(
            PositionRow(
                r["partition"],
                r["next_offset"],
                r["watermark_ms"],
                r["max_event_time_ms"],
                _ms(r["committed_at"]),
            )
            for r in positions
        ),
        batches=await _newest_batches(conn, query, topic, batches),
        run=None
        if run is None
        else RunRow(
            run["run_id"],
            run["trigger"],
            run["status"],
            _ms(run["started_at"]),
            None if run["finished_at"] is None else _ms(run["finished_at"]),
        ),
        now_ms=_ms(registered["now"]),
        files=await _file_paths(conn, query) if files else None,
    )


async def _file_paths(conn: Any, query: str) -> dict[int, str]:
    """A file source's registered files: path by ordinal (none before its first listing)."""
    if not await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", q(FILES_TABLE)):
        return {}
    rows = await conn.fetch(f"SELECT ordinal, path FROM {q(FILES_TABLE)} WHERE query = $1", query)
    return {r["ordinal"]: r["path"] for r in rows}


async def _newest_batches(conn: Any, query: str, topic: str, count: int) -> tuple[LedgerBatch, ...]:
    """The newest `count` batches: the progress table's rows, else from the ledger."""
    if count <= 0:
        return ()
    if await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", q(PROGRESS_TABLE)):
        rows = await conn.fetch(
            f"""SELECT committed_at, partitions, input_rows, aggregated, late, bad, filtered,
                       dead_lettered, processed_rows_per_second, state_rows_total, breaker,
                       breaker_opened, retries, worker
                FROM {q(PROGRESS_TABLE)} WHERE query = $1 ORDER BY seq DESC LIMIT $2""",
            query,
            count,
        )
        if rows:
            return tuple(_progress_batch(r) for r in rows)
    return await _ledger_batches(conn, query, topic, count)


async def _ledger_batches(conn: Any, query: str, topic: str, count: int) -> tuple[LedgerBatch, ...]:
    """The newest `count` batches, from each partition's newest `count` ledger rows.

    For a checkpoint from before the progress table (or one whose rows were deleted).

    Each of the newest batches has a row in some partition, and that row is
    among the partition's newest `count`; so reading those through the
    ledger's primary key (per partition, by offset) finds them all without
    scanning a long ledger.
    """
    if count <= 0:
        return ()
    rows = await conn.fetch(
        f"""SELECT l.* FROM {q(POSITIONS_TABLE)} p CROSS JOIN LATERAL (
                SELECT committed_at, records, aggregated, late, bad, filtered, dead_lettered
                FROM {q(LEDGER_TABLE)} l
                WHERE l.query = p.query AND l.topic = p.topic AND l.partition = p.partition
                ORDER BY l.start_offset DESC LIMIT $3) l
            WHERE p.query = $1 AND p.topic = $2""",
        query,
        topic,
        count,
    )
    return group_batches(rows, count)


def _progress_batch(r: Any) -> LedgerBatch:
    return LedgerBatch(
        _ms(r["committed_at"]),
        r["partitions"],
        r["input_rows"],
        r["aggregated"],
        r["late"],
        r["bad"],
        r["filtered"],
        r["dead_lettered"],
        processed_rows_per_second=r["processed_rows_per_second"],
        state_rows_total=r["state_rows_total"],
        breaker=r["breaker"],
        breaker_opened=r["breaker_opened"],
        retries=r["retries"],
        worker=r["worker"],
    )


def group_batches(rows: Sequence[Any], count: int) -> tuple[LedgerBatch, ...]:
    """Ledger rows summed per batch (rows of one transaction share committed_at), newest first."""
    sums: dict[datetime, list[int]] = defaultdict(lambda: [0] * 7)
    fields = ("records", "aggregated", "late", "bad", "filtered", "dead_lettered")
    for row in rows:
        total = sums[row["committed_at"]]
        total[0] += 1
        for i, name in enumerate(fields, start=1):
            total[i] += row[name]
    newest = sorted(sums, reverse=True)[:count]
    return tuple(LedgerBatch(_ms(at), *_seven(sums[at])) for at in newest)


def _seven(n: list[int]) -> tuple[int, int, int, int, int, int, int]:
    return n[0], n[1], n[2], n[3], n[4], n[5], n[6]


async def _read_ends(plan: QueryPlan) -> dict[int, TopicEnd]:
    """Every partition's log start and end: the fetch high watermark, not ListOffsets.

    The local broker's ListOffsets undercounts (OPERATING.md, "The local stack"), so the
    end is what a fetch response says, as `KafkaSource.describe` reads it.
    A partition the checkpoint knows but the topic no longer has gets no end.
    """
    if plan.source_type == "file":
        # Byte offsets across files make no record count: no ends, lag unknown.
        return {}
    from streamproc.runtime.failure_kinds import first_line
    from streamproc.sources.base import SourceTopicMissingError
    from streamproc.sources.kafka import KafkaSource, KafkaSourceConfig

    source = KafkaSource(
        KafkaSourceConfig(
            bootstrap=plan.bootstrap,
            topic=plan.topic,
            group_id=plan.group_id,
            client_params=plan.kafka_params,
        )
    )
    try:
        count = await asyncio.wait_for(source.partition_count(), CONNECT_TIMEOUT_S)
        described = await source.describe(dict.fromkeys(range(count)))
    except SourceTopicMissingError as exc:
        raise StatusError(str(exc)) from None
    except Exception as exc:
        raise StatusError(
            f"cannot read the ends of topic {plan.topic} from {plan.bootstrap}: {first_line(exc)}"
        ) from None
    finally:
        await source.stop()
    return {p: TopicEnd(info.log_start, info.end) for p, info in described.items()}


def _ms(stamp: datetime) -> int:
    return int(stamp.timestamp() * 1000)

"""A commit in one round trip: a server-side function per query executes the plan.

The plan of a worker that merges its rows itself (it owns every partition, or the
query has no windows to close elsewhere) needs nothing back from PostgreSQL in the
middle of its transaction, so the whole of `postgres_commit.execute` runs as one
call of a PL/pgSQL function: positions, states, rows, side rows, closing and
progress, in the same order and under the same locks, in one implicit
transaction. The function is made per query (its result table's columns are part
of its signature) on each connection, in `pg_temp`: it needs no privilege beyond
the tables', and goes with the connection.

Data travel as arrays, one per column (states, rows, evictions, expired keys),
and the few per-partition and per-record rows (ledger, late rows, dead letters,
the progress row) as JSON. A stale batch raises SQLSTATE SPSTL (its partitions in
the message), which rolls back everything it did; a checkpoint reset under the
worker raises SPRST.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from streamproc.engine import QuerySpec
from streamproc.sinks.base import (
    CheckpointConflictError,
    ClosingWindowsError,
    CommitBatch,
    CommitOutcome,
    batch_id,
    reset_under_worker,
)
from streamproc.sinks.commit_plan import CommitPlan
from streamproc.sinks.layout import ResultTableLayout
from streamproc.sinks.postgres_expiry import TOMBSTONE_STATE
from streamproc.sinks.postgres_fastpath_sql import (
    CLOSING_STATE,
    CLOSING_TAKEN_STATE,
    FUNCTION,
    LOCAL_W_STATE,
    RESET_STATE,
    STALE_STATE,
    commit_function_sql,
)
from streamproc.sinks.postgres_registry import privilege_error
from streamproc.sinks.postgres_table import deleted_rows
from streamproc.sinks.progress_rows import ProgressRow
from streamproc.sinks.rows import encode_key, encode_state
from streamproc.sinks.session_commit import FENCE_STATE

#: A function takes at most 100 arguments (FUNC_MAX_ARGS); 30 are not row columns.
FIXED_ARGUMENTS = 30
MAX_ROW_COLUMNS = 100 - FIXED_ARGUMENTS


@dataclass(frozen=True, slots=True)
class Resume:
    """The second call of a claim that found rows in the table (see `FastPath.arguments`).

    Attributes:
        rows: The merged rows, encoded as the staging table's records.
        written: Rows the first call counted as written.
        inserted_states: State rows the first call inserted (for the state total).
    """

    rows: Sequence[Sequence[Any]]
    written: int
    inserted_states: int


def existing_rows(existing: Any, own_records: Sequence[Sequence[Any]], width: int) -> list[int]:
    """The indexes of the claimed rows the function found in the table.

    Args:
        existing: The function's `existing`: a JSON array of keys as the staged rows
            have them (group values, their types, the window's start in ms), or None.
        own_records: The claimed rows as staged (`PostgresTableSink.encode`).
        width: How many leading fields of a staged row are its key.
    """
    if existing is None:
        return []
    keys = json.loads(existing) if isinstance(existing, str) else existing
    index = {tuple(record[:width]): i for i, record in enumerate(own_records)}
    return sorted(index[tuple(key)] for key in keys)


@dataclass(frozen=True, slots=True)
class FastPath:
    """The commit function of one query: its SQL, and how to call it."""

    query: str
    topic: str
    spec: QuerySpec
    layout: ResultTableLayout
    late_table: str | None
    dlq_table: str | None
    progress_keep: int

    def applies(self, plan: CommitPlan) -> bool:
        """True for a plan the function can run: whole, or a claim in two calls.

        Not: sessions merged by the checkpoint (partitions on several workers), a
        closing or an expiry that merges stored states (append mode, or a state timeout,
        with windows closed by more than one worker), nor merged rows without the
        worker's own merge to claim with.
        """
        if len(self.row_columns()) > MAX_ROW_COLUMNS:
            return False
        kind = plan.rows.kind
        if self.spec.session is not None:
            # A worker closing its own sessions replaces rows and keeps fences; merges
            # over every partition's state rows read them back: statement by statement.
            return plan.closes_locally and kind in ("replace", "none")
        if kind == "merge" and not self.layout.key_columns:
            return False  # one row for the whole query: claimed statement by statement
        if kind not in ("upsert", "none", "merge") or (kind == "merge" and plan.own_rows is None):
            return False
        closing = plan.closing
        if closing.kind == "append" and closing.local_rows is None:
            return False
        if closing.expiry == "scan":
            return False
        return plan.closes_locally or self.spec.window is None or closing.kind in ("none", "evict")

    @property
    def key_width(self) -> int:
        """How many leading fields of a staged row are its key (values, types, window)."""
        layout = self.layout
        return len(layout.group_by) + int(layout.typed) + int(layout.windowed)

    def row_columns(self) -> list[tuple[str, str]]:
        layout = self.layout
        columns = [(f"k{i}", "text") for i in range(len(layout.group_by))]
        if layout.typed:
            columns.append(("types", "text"))
        if layout.windowed:
            columns += [("ws", "bigint"), ("we", "bigint")]
        values = layout.columns[len(layout.columns) - len(layout.value_columns) :]
        columns += [(f"v{i}", c.sql_type) for i, c in enumerate(values)]
        return columns

    def create_sql(self) -> str:
        """CREATE OR REPLACE FUNCTION pg_temp.streamproc_commit(...) for this query."""
        return commit_function_sql(self)

    def arguments(
        self,
        plan: CommitPlan,
        batch: CommitBatch,
        incarnation: str | None,
        staged: Any,
        progress: ProgressRow,
        resume: Resume | None = None,
    ) -> list[Any]:
        """The function's arguments for a plan, in order.

        A plan whose rows are claimed (kind 'merge', with the worker's own merge) is
        called with kind 'claim'; when the claim found rows in the table, the second
        call (`resume`) writes their merge and does the rest (states are not sent again).
        """
        parts = sorted(plan.partitions, key=lambda p: p.partition)
        carried = [
            {
                "partition": p.partition,
                "start_offset": p.start_offset,
                "next_offset": p.next_offset,
                "batch_id": batch_id(
                    self.query, self.topic, p.partition, p.start_offset, p.next_offset
                ),
                "records": p.records,
                "aggregated": p.aggregated,
                "late": p.late,
                "bad": p.bad,
                "filtered": p.filtered,
                "max_event_time": _iso(p.max_event_ts_ms),
                "watermark": _iso(p.watermark_ms),
                "dead_lettered": p.dead_lettered,
                "error": p.error,
                "max_event_time_ms": p.max_event_ts_ms,
                "watermark_ms": p.watermark_ms,
                "last_record": _b64(p.last_record),
            }
            for p in parts
        ]
        basis = (
            None
            if plan.basis is None
            else json.dumps(
                [{"partition": p, "next_offset": o} for p, o in sorted(plan.basis.items())]
            )
        )
        states = staged.states if staged is not None and resume is None else []
        s_cols: list[list[Any]] = (
            [list(c) for c in zip(*states, strict=True)] if states else [[]] * 6
        )
        evicted = [
            (p, encode_key(key), 0 if start is None else start)
            for p, keys in plan.evicted.items()
            for key, start, _end in keys
        ]
        e_cols = _columns(evicted, 3)
        kind: str = plan.rows.kind
        if plan.closing.kind in ("append", "sessions") and plan.closing.local_rows is not None:
            kind = "close"
        records: Sequence[Sequence[Any]] = ()
        if resume is not None:
            kind, records = "upsert", resume.rows
        elif kind == "merge":
            kind = "claim"
            records = staged.own_rows if staged is not None and staged.own_rows else ()
        elif staged is not None and staged.rows is not None:
            records = staged.rows
        row_cols = _columns(records, len(self.row_columns()))
        expired = [
            (encode_key(key), start)
            for key, start, _end in plan.closing.expired
            if start is not None
        ]
        x_cols: list[list[Any]] = (
            [list(c) for c in zip(*expired, strict=True)] if expired else [[], []]
        )
        return [
            incarnation,
            json.dumps(carried),
            [p.partition for p in parts],
            basis,
            *s_cols,
            *e_cols,
            kind,
            *row_cols,
            json.dumps([_late(r) for r in plan.late_rows]),
            json.dumps([_dead(self.query, self.topic, plan, d) for d in plan.dead_letter_rows]),
            plan.closes_locally,
            plan.watermark_ms,
            plan.topic_partitions,
            plan.idle_timeout_ms,
            plan.closing.kind,
            *x_cols,
            TOMBSTONE_STATE,
            json.dumps(_progress(progress)),
            self.progress_keep,
            resume is not None,
            0 if resume is None else resume.written,
            0 if resume is None else resume.inserted_states,
            None if self.spec.session is None else json.dumps(self._sessions(plan)),
        ]

    def _sessions(self, plan: CommitPlan) -> Mapping[str, Any]:
        """`p_sessions`: the rows of sessions that moved or merged, the sessions closed
        (their fences), whether closed sessions are fenced, and a fence's state (only
        the function of a session query reads it)."""
        closed = [[_b64(encode_key(key)), start, end] for key, start, end in plan.closing.closed]
        return {
            "deleted": deleted_rows(self.layout, plan.rows.deleted),
            "closed": closed,
            "fences": plan.closing.fences,
            "fence": _b64(encode_state(FENCE_STATE)),
        }

    def call_sql(self) -> str:
        """SELECT ... FROM the function, with one placeholder per argument."""
        count = FIXED_ARGUMENTS + len(self.row_columns())
        args = ", ".join(f"${i}" for i in range(1, count + 1))
        return (
            "SELECT stale, written, closed, watermark, total, pending, held_ms, existing, "
            f"inserted_states FROM {FUNCTION}({args})"
        )


def _columns(records: Sequence[Sequence[Any]], width: int) -> list[list[Any]]:
    """Records as one list per column (the function takes arrays)."""
    if not records:
        return [[] for _ in range(width)]
    return [list(c) for c in zip(*records, strict=True)]


def _iso(ms: int | None) -> str | None:
    if ms is None:
        return None
    from streamproc.sinks.rows import ms_to_datetime

    moment = ms_to_datetime(ms)
    return None if moment is None else moment.isoformat()


def _b64(data: bytes | None) -> str | None:
    import base64

    return None if data is None else base64.b64encode(data).decode("ascii")


def _late(r: Any) -> Mapping[str, Any]:
    from streamproc.sinks.rows import to_json

    return {
        "partition": r.partition,
        "offset_": r.offset,
        "event_time": _iso(r.event_ts_ms),
        "watermark": _iso(r.watermark_ms),
        "reason": r.reason,
        "record": json.loads(to_json(r.record)),
    }


def _dead(query: str, topic: str, plan: CommitPlan, d: Any) -> Mapping[str, Any]:
    from streamproc.sinks.postgres_dlq import storable_text

    span = next((p for p in plan.partitions if p.partition == d.partition), None)
    bid = (
        batch_id(query, topic, span.partition, span.start_offset, span.next_offset)
        if span is not None
        else ""
    )
    return {
        "partition": d.partition,
        "offset_": d.offset,
        "key": _b64(d.key),
        "value": _b64(d.value),
        "reason": storable_text(d.reason),
        "error": None if d.error is None else storable_text(d.error),
        "source": d.source,
        "batch_id": bid,
    }


def _progress(row: ProgressRow) -> Mapping[str, Any]:
    return {
        "pipeline": row.pipeline_id,
        "batch_id": row.batch_number,
        "worker": row.worker,
        "partitions": row.partitions,
        "input_rows": row.input_rows,
        "aggregated": row.aggregated,
        "late": row.late,
        "bad": row.bad,
        "filtered": row.filtered,
        "dead_lettered": row.dead_lettered,
        "state_rows_updated": row.state_rows_updated,
        "min_event_time": _iso(row.min_event_ts_ms),
        "max_event_time": _iso(row.max_event_ts_ms),
        "input_rows_per_second": row.input_rows_per_second,
        "processed_rows_per_second": row.processed_rows_per_second,
        "duration_ms": dict(row.duration_ms),
        "sources": list(row.sources),
        "breaker": row.breaker_state,
        "breaker_opened": row.breaker_opened,
        "retries": row.retries,
    }


def outcome_of(record: Any) -> tuple[CommitOutcome, bool]:
    """The function's result as a commit outcome, and whether a closing is pending."""
    return (
        CommitOutcome(
            (),
            record["written"],
            record["closed"],
            record["watermark"],
            state_rows_total=record["total"],
        ),
        bool(record["pending"]),
    )


def refused_batch(exc: Exception, query: str, closing_windows: int) -> tuple[int, ...]:
    """A stale batch's partitions from the function's failure; any other failure raised
    as the commit in several statements raises it (nothing of the batch was written)."""
    state = getattr(exc, "sqlstate", None)
    message = str(exc)
    if state == STALE_STATE:
        return tuple(int(p) for p in message.split(",") if p.strip())
    if state == RESET_STATE:
        raise CheckpointConflictError(reset_under_worker(query)) from None
    if state == LOCAL_W_STATE:
        engine_w, checkpoint_w = message.split(",")
        raise RuntimeError(
            f"query {query}: internal error: the worker's W ({engine_w}) is not the "
            f"checkpoint's ({checkpoint_w}); nothing of the batch was written"
        ) from None
    if state == CLOSING_TAKEN_STATE:
        raise CheckpointConflictError(
            f"query {query}: {message} closing window row(s) were already in the "
            "result table, which only this query may write; nothing of the batch was written"
        ) from None
    if state == CLOSING_STATE:
        cause_state, constraint, table, text = message.split("|", 3)
        cause = ServerRefusal(cause_state, text, constraint or None, table or None)
        raise ClosingWindowsError(cause, closing_windows) from None
    if isinstance(exc, asyncpg.InsufficientPrivilegeError):
        raise privilege_error(exc, f"query {query}: writing its batch") from None
    raise exc


class ServerRefusal(Exception):
    """PostgreSQL's refusal inside the commit function, as asyncpg reports one (the failure
    policy reads its SQLSTATE, constraint and table)."""

    def __init__(
        self, sqlstate: str, message: str, constraint: str | None, table: str | None
    ) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate
        self.constraint_name = constraint
        self.table_name = table

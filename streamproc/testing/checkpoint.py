"""An in-memory checkpoint and result table: the `Checkpoint` port without PostgreSQL.

`MemoryDatabase` is the shared store (several workers' checkpoints see the
same one, as they would see one PostgreSQL database); `MemoryCheckpoint` is
one query's view of it, with the same commit semantics as
`PostgresCheckpoint` (the contract tests run both); `MemoryTableSink` holds a
result table. The database can be told to fail like PostgreSQL does:

    db.outage = True                      every call raises ConnectionRefusedError
                                          (an outage: the query waits and replays)
    db.refuse_key = lambda key: "why"     a commit touching that group key raises a
                                          refusal (SQLSTATE 22000), as a value
                                          PostgreSQL cannot store does
    db.fail_commits.append(exc)           the next commit raises exc
    db.before_commit[n] = step            step() runs before the first commit tried after
                                          n succeeded: it may raise (a BaseException
                                          stands for a kill -9) or start an outage
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from streamproc.engine import PartialRow, QuerySpec, ResultRow, finalize, merge_states
from streamproc.sinks.base import (
    CommitBatch,
    CommitOutcome,
    LateRow,
    PartitionCheckpoint,
    PartitionCommit,
    ResultSink,
)

#: A group key with each value's JSON type, so that 1, 1.0, True and "1" stay apart
#: where JSON says they differ (see `typed_key`).
TypedKey = tuple[tuple[str, Any], ...]
#: (typed key, window start, window end)
RowId = tuple[TypedKey, int | None, int | None]


def typed_key(key: Sequence[Any]) -> TypedKey:
    """A key whose equality is JSON's: equal numbers are equal, types otherwise apart."""
    out: list[tuple[str, Any]] = []
    for value in key:
        if isinstance(value, bool):
            out.append(("boolean", value))
        elif isinstance(value, int | float):
            number = value + 0.0 if isinstance(value, float) else value
            if isinstance(number, float) and number.is_integer() and math.isfinite(number):
                number = int(number)
            out.append(("number", number))
        elif value is None:
            out.append(("null", None))
        else:
            out.append((type(value).__name__, value))
    return tuple(out)


class RefusedError(Exception):
    """A refusal as PostgreSQL reports one (SQLSTATE class 22: data exception)."""

    sqlstate = "22000"


@dataclass
class LedgerEntry:
    """One ledger row."""

    commit: PartitionCommit
    committed_at_ms: int


@dataclass
class MemoryDatabase:
    """What PostgreSQL would hold: ledgers, partials, result and late tables."""

    clock_ms: Callable[[], int] = field(default=lambda: 0)
    ledger: dict[tuple[str, str, int], list[LedgerEntry]] = field(default_factory=dict)
    #: (query, typed key, window start, partition) -> partial row
    partials: dict[tuple[str, TypedKey, int | None, int], PartialRow] = field(default_factory=dict)
    tables: dict[str, dict[RowId, ResultRow]] = field(default_factory=dict)
    late_tables: dict[str, dict[tuple[str, int, int], LateRow]] = field(default_factory=dict)
    outage: bool = False
    refuse_key: Callable[[tuple[Any, ...]], str | None] | None = None
    fail_commits: list[BaseException] = field(default_factory=list)
    before_commit: dict[int, Callable[[], None]] = field(default_factory=dict)
    commits: int = 0

    def check_reachable(self) -> None:
        """Raise like a server that is down."""
        if self.outage:
            raise ConnectionRefusedError("memory database: connection refused (outage)")

    def check_key(self, key: tuple[Any, ...]) -> None:
        """Raise like a server refusing a value."""
        if self.refuse_key is not None:
            reason = self.refuse_key(key)
            if reason is not None:
                raise RefusedError(reason)

    def table_rows(self, table: str) -> list[ResultRow]:
        """The rows of a result table."""
        return list(self.tables.get(table, {}).values())

    def ledger_rows(self, query: str, topic: str) -> list[PartitionCommit]:
        """Every ledger row of a query, by partition and offset."""
        out = []
        for (q, t, _p), entries in sorted(self.ledger.items()):
            if q == query and t == topic:
                out += [e.commit for e in entries]
        return out


class MemoryTableSink:
    """A result table in a `MemoryDatabase` (a `ResultSink`)."""

    def __init__(self, db: MemoryDatabase, table: str) -> None:
        self._db = db
        self.table = table

    async def start(self) -> None:
        """Nothing to open."""

    async def stop(self) -> None:
        """Nothing to close."""

    async def prepare(self, tx: Any) -> None:
        """Create the table when missing."""
        self._db.tables.setdefault(self.table, {})

    async def write(self, tx: Any, rows: Sequence[ResultRow], *, insert_only: bool) -> int:
        """Upsert rows, or insert the absent ones."""
        table = self._db.tables.setdefault(self.table, {})
        for row in rows:
            row_id = (typed_key(row.key), row.window_start_ms, row.window_end_ms)
            if insert_only and row_id in table:
                continue
            table[row_id] = row
        return len(rows)


class MemoryCheckpoint:
    """One query's checkpoint in a `MemoryDatabase` (a `Checkpoint`)."""

    def __init__(
        self,
        db: MemoryDatabase,
        *,
        query: str,
        topic: str,
        spec: QuerySpec,
        sink: ResultSink,
        late_table: str | None = None,
    ) -> None:
        self._db = db
        self._query = query
        self._topic = topic
        self._spec = spec
        self._sink = sink
        self._late_table = late_table

    async def open(self) -> None:
        """Create the late table; let the sink create its table."""
        self._db.check_reachable()
        if self._late_table:
            self._db.late_tables.setdefault(self._late_table, {})
        await self._sink.prepare(None)

    async def close(self) -> None:
        """Nothing to release."""

    def _chain(self, partition: int) -> list[LedgerEntry]:
        return self._db.ledger.get((self._query, self._topic, partition), [])

    async def load_partition(self, partition: int) -> PartitionCheckpoint:
        """The partition's ledger position and open partials."""
        self._db.check_reachable()
        chain = self._chain(partition)
        if not chain:
            return PartitionCheckpoint(partition, None, None, ())
        last = chain[-1].commit
        partials = tuple(
            row
            for (q, _k, _ws, p), row in self._db.partials.items()
            if q == self._query and p == partition
        )
        return PartitionCheckpoint(partition, last.next_offset, last.max_event_ts_ms, partials)

    async def watermarks(self) -> dict[int, int | None]:
        """The latest committed watermark of every partition with a ledger row."""
        self._db.check_reachable()
        return {
            p: entries[-1].commit.watermark_ms
            for (q, t, p), entries in self._db.ledger.items()
            if q == self._query and t == self._topic and entries
        }

    async def commit(self, batch: CommitBatch) -> CommitOutcome:
        """One atomic commit: nothing is changed unless everything can be."""
        db = self._db
        step = db.before_commit.pop(db.commits, None)
        if step is not None:
            step()
        db.check_reachable()
        if db.fail_commits:
            raise db.fail_commits.pop(0)
        stale = tuple(
            p.partition
            for p in batch.partitions
            if self._chain(p.partition)
            and self._chain(p.partition)[-1].commit.next_offset != p.start_offset
        )
        if stale:
            return CommitOutcome(stale=stale)
        for rows in batch.partials.values():
            for row in rows:
                db.check_key(row.key)
        # Work on copies: a refusal half-way leaves the database as it was.
        partials = dict(db.partials)
        for partition, rows in batch.partials.items():
            for row in rows:
                partials[(self._query, typed_key(row.key), row.window_start_ms, partition)] = row
        mode = self._spec.output_mode
        to_write: list[tuple[Sequence[ResultRow], bool]] = []
        if mode != "append":
            rows_now = (
                batch.local_rows
                if batch.local_rows is not None
                else self._merge_touched(partials, batch.partials)
            )
            to_write.append((rows_now, False))
        ledger = {k: list(v) for k, v in db.ledger.items()}
        now = db.clock_ms()
        for p in batch.partitions:
            ledger.setdefault((self._query, self._topic, p.partition), []).append(
                LedgerEntry(p, now)
            )
        watermark = self._global_watermark(ledger, batch, now)
        closed = 0
        if self._spec.window is not None and watermark is not None:
            ending = [k for k, row in partials.items() if self._closes(k, row, watermark)]
            if mode == "append":
                closing = {k: partials.pop(k) for k in ending}
                merged = self._merge(closing.values())
                to_write.append((merged, True))
                closed = len(merged)
            elif mode == "update":
                for k in ending:
                    partials.pop(k)
                closed = len(ending)
        if mode != "append":
            for partition, keys in batch.evicted.items():
                for key, start, _end in keys:
                    partials.pop((self._query, typed_key(key), start, partition), None)
        for result_rows, _ in to_write:
            for result in result_rows:
                db.check_key(result.key)
        written = 0
        for result_rows, insert_only in to_write:
            written += await self._sink.write(None, result_rows, insert_only=insert_only)
        if self._late_table:
            late = db.late_tables.setdefault(self._late_table, {})
            for r in batch.late_rows:
                late.setdefault((self._topic, r.partition, r.offset), r)
        db.partials = partials
        db.ledger = ledger
        db.commits += 1
        return CommitOutcome((), written, closed, watermark)

    def _closes(self, k: tuple[str, TypedKey, int | None, int], row: PartialRow, w: int) -> bool:
        return k[0] == self._query and row.window_end_ms is not None and row.window_end_ms <= w

    def _merge_touched(
        self,
        partials: Mapping[tuple[str, TypedKey, int | None, int], PartialRow],
        touched_rows: Mapping[int, Sequence[PartialRow]],
    ) -> list[ResultRow]:
        touched = {
            (typed_key(r.key), r.window_start_ms) for rows in touched_rows.values() for r in rows
        }
        return self._merge(
            row
            for (q, k, ws, _p), row in sorted(partials.items(), key=_by_partition)
            if q == self._query and (k, ws) in touched
        )

    def _merge(self, rows: Any) -> list[ResultRow]:
        grouped: dict[tuple[TypedKey, int | None], list[PartialRow]] = {}
        for row in rows:
            grouped.setdefault((typed_key(row.key), row.window_start_ms), []).append(row)
        windowed = self._spec.window is not None
        out = []
        for group in grouped.values():
            first = group[0]
            values = finalize(self._spec, merge_states(self._spec, [r.state for r in group]))
            out.append(
                ResultRow(
                    first.key,
                    first.window_start_ms if windowed else None,
                    first.window_end_ms if windowed else None,
                    values,
                )
            )
        return out

    def _global_watermark(
        self,
        ledger: Mapping[tuple[str, str, int], list[LedgerEntry]],
        batch: CommitBatch,
        now_ms: int,
    ) -> int | None:
        idle = batch.idle_timeout_ms
        marks: list[int] = []
        seen = 0
        for (q, t, _p), entries in ledger.items():
            if q != self._query or t != self._topic or not entries:
                continue
            seen += 1
            last = entries[-1]
            if idle is not None and now_ms - last.committed_at_ms > idle:
                continue
            if last.commit.watermark_ms is None:
                return None
            marks.append(last.commit.watermark_ms)
        if seen < batch.topic_partitions and idle is None:
            return None
        return min(marks) if marks else None


def _by_partition(item: tuple[tuple[str, TypedKey, int | None, int], PartialRow]) -> int:
    return item[0][3]

"""What PostgreSQL would hold for the in-memory checkpoint: `MemoryDatabase` and its rows.

Several workers' checkpoints (`MemoryCheckpoint`) see the same database, as
they would see one PostgreSQL database; the test drives it like the operator
drives the real one (`reset`, or deleting rows to see a restore refuse). It can
be told to fail like PostgreSQL does:

    db.outage = True                      every call raises ConnectionRefusedError
                                          (an outage: the query waits and replays)
    db.refuse_key = lambda key: "why"     a commit touching that group key raises a
                                          refusal (SQLSTATE 22000), as a value
                                          PostgreSQL cannot store does
    db.fail_commits.append(exc)           the next commit raises exc
    db.before_commit[n] = step            step() runs before the first commit tried after
                                          n succeeded: it may raise (a BaseException
                                          stands for a kill -9) or start an outage; a
                                          coroutine it returns is awaited (the commit
                                          stays in flight while other workers go on)

Rows are keyed as PostgreSQL's unique constraints key them; group keys go
through `typed_key` so that equal JSON values meet and different ones do not.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from streamproc.engine import PartialRow, ResultRow
from streamproc.sinks.base import DeadLetterRow, LateRow, PartitionCommit, QueryRunningError
from streamproc.sinks.progress_rows import ProgressRow

#: A group key with each value's JSON type, so that 1, 1.0, True and "1" stay apart
#: where JSON says they differ (see `typed_key`).
TypedKey = tuple[tuple[str, Any], ...]
#: (typed key, window start, window end)
RowId = tuple[TypedKey, int | None, int | None]
#: (query, typed key, window start, partition): a partial state's row
#: (`streamproc_state`); TOMBSTONE_PARTITION holds an expired (key, window).
StateKey = tuple[str, TypedKey, int | None, int]


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
class Position:
    """Where a partition of a query resumes (`streamproc_positions`)."""

    next_offset: int
    max_event_ts_ms: int | None
    watermark_ms: int | None
    last_record: bytes | None
    committed_at_ms: int


@dataclass
class Registered:
    """A query's registration (`streamproc_queries`)."""

    definition: Mapping[str, Any]
    result_table: str | None
    #: Changes whenever the query is (re-)registered (see `Registration.incarnation`).
    incarnation: int = 0
    global_watermark_ms: int | None = None


@dataclass
class Run:
    """A bounded run (`streamproc_runs`)."""

    run_id: int
    ends: dict[int, int]
    status: str = "running"


@dataclass(frozen=True)
class StoredDeadLetter:
    """A row of a dead-letter table: the record, its batch id and when (db clock)."""

    row: DeadLetterRow
    batch_id: str
    at_ms: int


#: (query, source topic, partition, offset): the unique key of a late or dead-letter
#: table's rows (a record lands there once, however often its batch is replayed).
SourcePosition = tuple[str, str, int, int]


@dataclass
class MemoryDatabase:
    """What PostgreSQL would hold: registry, positions, ledger, states, tables, runs."""

    clock_ms: Callable[[], int] = field(default=lambda: 0)
    queries: dict[str, Registered] = field(default_factory=dict)
    positions: dict[tuple[str, int], Position] = field(default_factory=dict)
    ledger: dict[tuple[str, str, int], list[LedgerEntry]] = field(default_factory=dict)
    partials: dict[StateKey, PartialRow] = field(default_factory=dict)
    tables: dict[str, dict[RowId, ResultRow]] = field(default_factory=dict)
    late_tables: dict[str, dict[SourcePosition, LateRow]] = field(default_factory=dict)
    dead_letter_tables: dict[str, dict[SourcePosition, StoredDeadLetter]] = field(
        default_factory=dict
    )
    runs: dict[str, list[Run]] = field(default_factory=dict)
    #: query -> its newest progress rows (`streamproc_progress`), oldest first,
    #: with each one's state rows total
    progress: dict[str, list[tuple[ProgressRow, int]]] = field(default_factory=dict)
    #: query -> checkpoints that are members of its bounded run
    run_members: dict[str, set[int]] = field(default_factory=dict)
    outage: bool = False
    refuse_key: Callable[[tuple[Any, ...]], str | None] | None = None
    fail_commits: list[BaseException] = field(default_factory=list)
    before_commit: dict[int, Callable[[], Awaitable[None] | None]] = field(default_factory=dict)
    commits: int = 0
    #: query -> the open checkpoints (workers) holding a claim on it (`postgres_claims`)
    claims: dict[str, set[int]] = field(default_factory=dict)
    #: Numbers registrations (`Registered.incarnation`).
    registrations: int = 0

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

    def reset(self, query: str, *, drop_table: str | None = None, force: bool = False) -> None:
        """`streamproc reset`: forget a query's checkpoint (and drop its table).

        Refused while a worker holds a claim on the query, unless forced (a reset
        the claims could not see: a worker must then find out at its next commit).
        """
        if self.claims.get(query) and not force:
            raise QueryRunningError(f"query {query} is running: stop the worker first")
        self.queries.pop(query, None)
        self.runs.pop(query, None)
        self.progress.pop(query, None)
        self.positions = {k: v for k, v in self.positions.items() if k[0] != query}
        self.partials = {k: v for k, v in self.partials.items() if k[0] != query}
        self.ledger = {k: v for k, v in self.ledger.items() if k[0] != query}
        for name, late in self.late_tables.items():
            self.late_tables[name] = {k: v for k, v in late.items() if k[0] != query}
        for name, letters in self.dead_letter_tables.items():
            self.dead_letter_tables[name] = {k: v for k, v in letters.items() if k[0] != query}
        if drop_table is not None:
            self.tables.pop(drop_table, None)

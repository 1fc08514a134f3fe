"""An in-memory checkpoint: the `Checkpoint` port without PostgreSQL.

`MemoryCheckpoint` is one query's view of a `MemoryDatabase` (where several
workers' checkpoints meet, as in one PostgreSQL database), with the same commit
semantics as `PostgresCheckpoint`: the contract tests run both. Its result
table is a `MemoryTableSink`; `db.dead_letter_tables` holds the dead-letter
tables of dlqType postgresql. How the database is told to fail like PostgreSQL
does is said in `streamproc.testing.database`.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable, Mapping, Sequence

from streamproc.engine import QuerySpec
from streamproc.sinks.base import (
    RESET_HINT,
    BoundedRun,
    CheckpointConflictError,
    CommitBatch,
    CommitOutcome,
    PartitionCheckpoint,
    PartitionCommit,
    QueryIdentity,
    ResultSink,
    Watermarks,
)
from streamproc.sinks.definition import definition_changes
from streamproc.sinks.layout import TOMBSTONE_PARTITION
from streamproc.sinks.progress_rows import PROGRESS_KEEP
from streamproc.sinks.session_commit import fences_of
from streamproc.testing.commits import MemoryCommits
from streamproc.testing.database import MemoryDatabase, Position, Registered, Run


class MemoryCheckpoint:
    """One query's checkpoint in a `MemoryDatabase` (a `Checkpoint`), as `PostgresCheckpoint`."""

    def __init__(
        self,
        db: MemoryDatabase,
        *,
        identity: QueryIdentity,
        spec: QuerySpec,
        sink: ResultSink,
        late_table: str | None = None,
        dlq_table: str | None = None,
        progress_keep: int = PROGRESS_KEEP,
    ) -> None:
        self._db = db
        self._identity = identity
        self._spec = spec
        self._query = identity.query
        self._topic = identity.topic
        self._sink = sink
        self._late_table = late_table
        self._dlq_table = dlq_table
        #: The registration this checkpoint opened (a commit of another is refused).
        self._incarnation = 0
        self._commits = MemoryCommits(
            db,
            query=identity.query,
            topic=identity.topic,
            spec=spec,
            sink=sink,
            late_table=late_table,
            dlq_table=dlq_table,
            progress_keep=progress_keep,
        )

    def stage(self, batch: CommitBatch) -> CommitBatch:
        """Nothing to encode: rows and states are kept as they are."""
        return batch

    async def open(self) -> None:
        """Register the query (or check its definition); create the tables."""
        db = self._db
        db.check_reachable()
        if self._late_table:
            db.late_tables.setdefault(self._late_table, {})
        if self._dlq_table:
            db.dead_letter_tables.setdefault(self._dlq_table, {})
        db.claims.setdefault(self._query, set()).add(id(self))
        try:
            self._open_tables()
        except BaseException:
            db.claims[self._query].discard(id(self))  # refused: it does not run the query
            raise
        await self._sink.prepare(None)

    def _open_tables(self) -> None:
        db = self._db
        self._register()
        table = self._identity.result_table
        if (
            table is not None
            and table not in db.tables
            and any(k[0] == self._query for k in db.ledger)
        ):
            raise CheckpointConflictError(
                f"query {self._query}: its result table {table} does not exist, but its "
                "checkpoint holds committed batches whose rows were written there; restore "
                "the table, or start over with `streamproc reset CONFIG --drop-results`"
            )

    def _register(self) -> None:
        db, identity, query = self._db, self._identity, self._query
        registered = db.queries.get(query)
        if registered is not None:
            changes = definition_changes(registered.definition, identity.definition)
            if not changes:
                self._incarnation = registered.incarnation
                return
            if self._has_state():
                raise CheckpointConflictError(
                    f"query {query}: its checkpoint was made by another definition ("
                    + "; ".join(changes)
                    + f"), and running on it would give wrong results; {RESET_HINT}"
                )
            if db.claims.get(query, set()) - {id(self)}:
                raise CheckpointConflictError(
                    f"query {query}: another worker runs it with another definition ("
                    + "; ".join(changes)
                    + "); nothing was written; give this config another queryName, or stop "
                    "the other worker"
                )
        elif any(k[0] == query for k in db.ledger):
            raise CheckpointConflictError(
                f"query {query}: its ledger has rows but no definition in streamproc_queries: "
                f"the checkpoint was written by an older streamproc (layout 1), or its "
                f"registration was deleted; {RESET_HINT}"
            )
        owner = next(
            (
                q
                for q, r in db.queries.items()
                if q != query and identity.result_table and r.result_table == identity.result_table
            ),
            None,
        )
        if owner is not None:
            raise CheckpointConflictError(
                f"query {query}: table {identity.result_table} belongs to query {owner}; two "
                "queries writing one table would overwrite or drop each other's rows; give "
                f"load.table another name, or run `streamproc reset` on query {owner}"
            )
        db.registrations += 1
        self._incarnation = db.registrations
        db.queries[query] = Registered(
            dict(identity.definition), identity.result_table, self._incarnation
        )

    def _has_state(self) -> bool:
        db, query = self._db, self._query
        return any(k[0] == query for k in (*db.positions, *db.partials, *db.ledger))

    async def close(self) -> None:
        """Leave a bounded run and let go of the claim."""
        self._db.run_members.get(self._query, set()).discard(id(self))
        self._db.claims.get(self._query, set()).discard(id(self))

    async def load_partition(self, partition: int) -> PartitionCheckpoint:
        """The partition's position and open states, after checking its ledger chain."""
        db = self._db
        db.check_reachable()
        position = db.positions.get((self._query, partition))
        chain = [e.commit for e in db.ledger.get((self._query, self._topic, partition), [])]
        self._check_chain(partition, position, chain)
        # Tombstones are the query's, not the partition's: a record of any
        # partition for an expired (key, window) is late.
        mine = [
            (p, row)
            for (q, _k, _ws, p), row in db.partials.items()
            if q == self._query and p in (partition, TOMBSTONE_PARTITION)
        ]
        # Sessions keep closed ones as fences there (`session_commit`), not partials.
        sessions = self._spec.session is not None
        partials = tuple(r for p, r in mine if not (sessions and p == TOMBSTONE_PARTITION))
        fences = fences_of(r for p, r in mine if sessions and p == TOMBSTONE_PARTITION)
        if position is None:  # a new partition: no state, but the query's fences
            return PartitionCheckpoint(partition, None, None, (), fences=fences)
        return PartitionCheckpoint(
            partition,
            position.next_offset,
            position.max_event_ts_ms,
            partials,
            position.last_record,
            fences,
        )

    def _check_chain(
        self, partition: int, position: Position | None, chain: Sequence[PartitionCommit]
    ) -> None:
        where = f"query {self._query}, partition {partition} of {self._topic}"
        breaks = [
            b.start_offset for a, b in itertools.pairwise(chain) if a.next_offset != b.start_offset
        ]
        problem = None
        if position is None and chain:
            problem = f"its ledger has {len(chain)} row(s) but no position"
        elif position is not None and not chain:
            problem = f"its position is at offset {position.next_offset} but its ledger is empty"
        elif breaks:
            problem = f"its ledger has a gap or an overlap at offset {breaks[0]}"
        elif position is not None and chain[-1].next_offset != position.next_offset:
            problem = (
                f"its ledger ends at offset {chain[-1].next_offset} but its position is at "
                f"{position.next_offset} (a ledger row was deleted or added)"
            )
        if problem is not None:
            raise CheckpointConflictError(
                f"{where}: {problem}; resuming could apply a batch twice or skip one, so "
                f"nothing was processed; restore the rows, or {RESET_HINT}"
            )

    async def watermarks(self) -> Watermarks:
        """The committed watermark of every partition with a position, and W."""
        db = self._db
        db.check_reachable()
        marks = {p: pos.watermark_ms for (q, p), pos in db.positions.items() if q == self._query}
        registered = db.queries.get(self._query)
        return Watermarks(marks, registered.global_watermark_ms if registered else None)

    async def other_workers(self) -> int:
        """How many other open checkpoints hold a claim on the query."""
        self._db.check_reachable()
        return len(self._db.claims.get(self._query, set()) - {id(self)})

    async def committed_offsets(self) -> dict[int, int]:
        """The next offset of every partition with a position."""
        self._db.check_reachable()
        return {
            p: pos.next_offset for (q, p), pos in self._db.positions.items() if q == self._query
        }

    async def begin_run(
        self, trigger: str, take_ends: Callable[[], Awaitable[Mapping[int, int]]]
    ) -> BoundedRun:
        """Join the run in progress (another member is in it), or begin one."""
        db = self._db
        db.check_reachable()
        members = db.run_members.setdefault(self._query, set())
        runs = db.runs.setdefault(self._query, [])
        others = members - {id(self)}
        members.add(id(self))
        if runs and runs[-1].status == "running":
            if others:
                return BoundedRun(runs[-1].run_id, dict(runs[-1].ends), joined=True)
            runs[-1].status = "abandoned"
        ends = dict(await take_ends())
        run = Run(len(runs) + 1, ends)
        runs.append(run)
        return BoundedRun(run.run_id, dict(ends))

    async def finish_run(self, run: BoundedRun) -> None:
        """Mark the run done and leave it."""
        for r in self._db.runs.get(self._query, []):
            if r.run_id == run.run_id and r.status == "running":
                r.status = "done"
        await self.close()

    async def commit(self, batch: CommitBatch, *, dry_run: bool = False) -> CommitOutcome:
        """One atomic commit: nothing is changed unless everything can be (dry_run: nothing)."""
        db = self._db
        # Like a round trip to a server: other tasks (the next batch, a
        # rebalance) run while the commit is in flight.
        await asyncio.sleep(0)
        step = db.before_commit.pop(db.commits, None)
        if step is not None:
            waiting = step()
            if waiting is not None:
                await waiting  # the commit is in flight meanwhile: others go on
        db.check_reachable()
        if db.fail_commits:
            raise db.fail_commits.pop(0)
        return await self._commits.run(batch, incarnation=self._incarnation, dry_run=dry_run)

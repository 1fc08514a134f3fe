"""PostgreSQL as sink and checkpoint: result table, partials, ledger, late rows.

One `commit()` is one transaction that makes a micro-batch durable, exactly
once (DESIGN.md section 3): it checks that every partition's batch starts
where the ledger says that partition ended, upserts the partitions' partial
aggregates, writes the merged result rows, the late side-table rows and the
ledger rows, and closes windows the global watermark has passed. A batch that
does not start at the ledger's position is stale (a replay, or a zombie after
a rebalance) and nothing of it is written.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import asyncpg

from streamproc.engine import PartialRow, QuerySpec, ResultRow, WindowKey, finalize, merge_states
from streamproc.sinks.base import (
    CommitBatch,
    CommitOutcome,
    LateRow,
    PartitionCheckpoint,
    PartitionCommit,
    ResultSink,
    batch_id,
)
from streamproc.sinks.layout import (
    LEDGER_TABLE,
    PARTIALS_TABLE,
    create_late_table_sql,
    create_ledger_table_sql,
    create_partials_table_sql,
    quote_ident,
    upgrade_ledger_table_sql,
)
from streamproc.sinks.rows import datetime_to_ms, key_json, ms_to_datetime, to_json

# Non-windowed aggregation stores its partials with this window, so that one
# primary key serves both shapes.
NO_WINDOW_MS = 0
# Seconds one statement may take before the server counts as unreachable
# (a sink transaction of a 20,000-record batch takes well under a second).
COMMAND_TIMEOUT_S = 120.0


class PostgresCheckpoint:
    """The exactly-once checkpoint of one query in PostgreSQL (a `Checkpoint`)."""

    def __init__(
        self,
        dsn: str,
        *,
        query: str,
        topic: str,
        spec: QuerySpec,
        sink: ResultSink,
        late_table: str | None = None,
    ) -> None:
        """Args:
        dsn: the database of the checkpoint (and of a result table).
        query: the query name (ledger and partials key).
        topic: the source topic.
        spec: the query's shape.
        sink: where result rows go, written inside each commit's transaction
            (a table of this database, or a topic: then the transaction
            commits only after the rows were delivered, so result messages
            are at-least-once).
        late_table: the separatestream side table, if any.
        """
        self._dsn = dsn
        self._query = query
        self._topic = topic
        self._spec = spec
        self._sink = sink
        self._late_table = late_table
        self._pool: Any = None
        self._lock_key = f"streamproc:{query}"

    async def open(self) -> None:
        """Connect, create missing tables, and refuse an incompatible result table."""
        # min_size=0: while the server is down the pool does not keep trying
        # (and logging) to refill a floor; the query's breaker paces reconnects.
        # command_timeout: a server that stops answering is an outage, not a hang.
        self._pool = await asyncpg.create_pool(
            self._dsn, min_size=0, max_size=2, timeout=10, command_timeout=COMMAND_TIMEOUT_S
        )
        async with self._pool.acquire() as conn, conn.transaction():
            # Serialise DDL between workers starting at the same time.
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", "streamproc:ddl")
            await conn.execute(create_ledger_table_sql())
            upgraded = await conn.fetchval(
                """SELECT count(*) FROM pg_attribute WHERE attrelid = to_regclass($1)
                   AND attname IN ('dead_lettered', 'error') AND NOT attisdropped""",
                quote_ident(LEDGER_TABLE),
            )
            if upgraded < 2:  # ALTER TABLE locks the ledger: only when needed
                await conn.execute(upgrade_ledger_table_sql())
            await conn.execute(create_partials_table_sql())
            if self._late_table:
                await conn.execute(create_late_table_sql(self._late_table))
            await self._sink.prepare(conn)

    async def close(self) -> None:
        """Close the connection pool."""
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    async def load_partition(self, partition: int) -> PartitionCheckpoint:
        """Read a partition's ledger position and its open partials."""
        async with self._pool.acquire() as conn:
            row = await conn.fetchrow(
                f"""SELECT next_offset, max_event_time FROM {quote_ident(LEDGER_TABLE)}
                    WHERE query = $1 AND topic = $2 AND partition = $3
                    ORDER BY start_offset DESC LIMIT 1""",
                self._query,
                self._topic,
                partition,
            )
            partials = await conn.fetch(
                f"""SELECT key::text, window_start_ms, window_end_ms, state::text
                    FROM {quote_ident(PARTIALS_TABLE)} WHERE query = $1 AND partition = $2""",
                self._query,
                partition,
            )
        if row is None:
            return PartitionCheckpoint(partition, None, None, ())
        return PartitionCheckpoint(
            partition,
            row["next_offset"],
            datetime_to_ms(row["max_event_time"]),
            tuple(self._partial_from_row(r) for r in partials),
        )

    def _partial_from_row(self, r: Any) -> PartialRow:
        windowed = self._spec.window is not None
        return PartialRow(
            tuple(json.loads(r["key"])),
            r["window_start_ms"] if windowed else None,
            r["window_end_ms"] if windowed else None,
            tuple(json.loads(r["state"])),
        )

    async def watermarks(self) -> dict[int, int | None]:
        """The latest committed watermark of every partition with a ledger row."""
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(
                f"""SELECT DISTINCT ON (partition) partition, watermark
                    FROM {quote_ident(LEDGER_TABLE)} WHERE query = $1 AND topic = $2
                    ORDER BY partition, start_offset DESC""",
                self._query,
                self._topic,
            )
        return {r["partition"]: datetime_to_ms(r["watermark"]) for r in rows}

    async def commit(self, batch: CommitBatch) -> CommitOutcome:
        """Make one micro-batch durable in one transaction, or report it stale."""
        async with self._pool.acquire() as conn, conn.transaction():
            # One query's commits never interleave, so merges from two
            # workers cannot race and the ledger check below is decisive.
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", self._lock_key)
            stale = await self._stale_partitions(conn, batch.partitions)
            if stale:
                # Nothing is written; the caller reloads these partitions.
                return CommitOutcome(stale=stale)
            await self._upsert_partials(conn, batch.partials)
            written = 0
            mode = self._spec.output_mode
            if mode != "append":
                if batch.local_rows is not None:
                    rows = batch.local_rows
                else:
                    rows = await self._merge_from_partials(conn, batch.partials)
                written = await self._sink.write(conn, rows, insert_only=False)
            await self._insert_late_rows(conn, batch.late_rows)
            await self._insert_ledger_rows(conn, batch.partitions)
            watermark = await self._global_watermark(conn, batch)
            closed = 0
            if self._spec.window is not None and watermark is not None:
                if mode == "append":
                    closed = await self._close_windows(conn, watermark)
                    written += closed
                elif mode == "update":
                    closed = await self._evict_closed(conn, watermark)
            if mode != "append":
                # stateTimeout evictions (and update-mode local evictions) drop
                # partials that no longer count; closed append windows were
                # already removed by _close_windows.
                await self._delete_partials(conn, batch.evicted)
            return CommitOutcome((), written, closed, watermark)

    async def _stale_partitions(
        self, conn: Any, partitions: Sequence[PartitionCommit]
    ) -> tuple[int, ...]:
        if not partitions:
            return ()
        rows = await conn.fetch(
            f"""SELECT DISTINCT ON (partition) partition, next_offset
                FROM {quote_ident(LEDGER_TABLE)}
                WHERE query = $1 AND topic = $2 AND partition = ANY($3::int[])
                ORDER BY partition, start_offset DESC""",
            self._query,
            self._topic,
            [p.partition for p in partitions],
        )
        committed = {r["partition"]: r["next_offset"] for r in rows}
        return tuple(
            p.partition
            for p in partitions
            if p.partition in committed and committed[p.partition] != p.start_offset
        )

    async def _upsert_partials(
        self, conn: Any, partials: Mapping[int, Sequence[PartialRow]]
    ) -> None:
        parts: list[int] = []
        keys: list[str] = []
        starts: list[int] = []
        ends: list[int] = []
        states: list[str] = []
        for partition, rows in partials.items():
            for row in rows:
                parts.append(partition)
                keys.append(key_json(row.key))
                starts.append(NO_WINDOW_MS if row.window_start_ms is None else row.window_start_ms)
                ends.append(NO_WINDOW_MS if row.window_end_ms is None else row.window_end_ms)
                states.append(to_json(list(row.state)))
        if not parts:
            return
        await conn.execute(
            f"""INSERT INTO {quote_ident(PARTIALS_TABLE)}
                  (query, partition, key, window_start_ms, window_end_ms, state)
                SELECT $1, * FROM unnest($2::int[], $3::jsonb[], $4::bigint[], $5::bigint[],
                                         $6::jsonb[])
                ON CONFLICT (query, key, window_start_ms, partition)
                DO UPDATE SET state = EXCLUDED.state""",
            self._query,
            parts,
            keys,
            starts,
            ends,
            states,
        )

    async def _delete_partials(
        self,
        conn: Any,
        evicted: Mapping[int, Sequence[WindowKey]],
    ) -> None:
        parts: list[int] = []
        keys: list[str] = []
        starts: list[int] = []
        for partition, window_keys in evicted.items():
            for key, start, _end in window_keys:
                parts.append(partition)
                keys.append(key_json(key))
                starts.append(NO_WINDOW_MS if start is None else start)
        if not parts:
            return
        await conn.execute(
            f"""DELETE FROM {quote_ident(PARTIALS_TABLE)} p
                USING unnest($2::int[], $3::jsonb[], $4::bigint[]) AS d(partition, key, start)
                WHERE p.query = $1 AND p.partition = d.partition AND p.key = d.key
                  AND p.window_start_ms = d.start""",
            self._query,
            parts,
            keys,
            starts,
        )

    async def _merge_from_partials(
        self, conn: Any, partials: Mapping[int, Sequence[PartialRow]]
    ) -> list[ResultRow]:
        touched = {
            (key_json(r.key), NO_WINDOW_MS if r.window_start_ms is None else r.window_start_ms)
            for rows in partials.values()
            for r in rows
        }
        if not touched:
            return []
        keys, starts = zip(*touched, strict=True)
        rows = await conn.fetch(
            f"""SELECT p.key::text, p.window_start_ms, p.window_end_ms, p.state::text
                FROM {quote_ident(PARTIALS_TABLE)} p
                JOIN unnest($2::jsonb[], $3::bigint[]) AS t(key, start)
                  ON p.key = t.key AND p.window_start_ms = t.start
                WHERE p.query = $1""",
            self._query,
            list(keys),
            list(starts),
        )
        return self._merge_rows(rows)

    def _merge_rows(self, rows: Iterable[Any]) -> list[ResultRow]:
        grouped: dict[tuple[str, int, int], list[Sequence[Any]]] = defaultdict(list)
        for r in rows:
            grouped[(r["key"], r["window_start_ms"], r["window_end_ms"])].append(
                json.loads(r["state"])
            )
        windowed = self._spec.window is not None
        merged: list[ResultRow] = []
        for (key, start, end), states in grouped.items():
            values = finalize(self._spec, merge_states(self._spec, states))
            merged.append(
                ResultRow(
                    tuple(json.loads(key)),
                    start if windowed else None,
                    end if windowed else None,
                    values,
                )
            )
        return merged

    async def _insert_late_rows(self, conn: Any, late_rows: Sequence[LateRow]) -> None:
        if not late_rows or not self._late_table:
            return
        await conn.executemany(
            f"""INSERT INTO {quote_ident(self._late_table)}
                  (query, source_topic, source_partition, source_offset, event_time, watermark,
                   reason, record)
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb)
                ON CONFLICT (source_topic, source_partition, source_offset) DO NOTHING""",
            [
                (
                    self._query,
                    self._topic,
                    r.partition,
                    r.offset,
                    ms_to_datetime(r.event_ts_ms),
                    ms_to_datetime(r.watermark_ms),
                    r.reason,
                    to_json(r.record),
                )
                for r in late_rows
            ],
        )

    async def _insert_ledger_rows(self, conn: Any, partitions: Sequence[PartitionCommit]) -> None:
        if not partitions:
            return
        await conn.executemany(
            f"""INSERT INTO {quote_ident(LEDGER_TABLE)}
                  (query, topic, partition, start_offset, next_offset, batch_id, records,
                   aggregated, late, bad, filtered, max_event_time, watermark, dead_lettered,
                   error)
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)""",
            [
                (
                    self._query,
                    self._topic,
                    p.partition,
                    p.start_offset,
                    p.next_offset,
                    batch_id(self._query, self._topic, p.partition, p.start_offset, p.next_offset),
                    p.records,
                    p.aggregated,
                    p.late,
                    p.bad,
                    p.filtered,
                    ms_to_datetime(p.max_event_ts_ms),
                    ms_to_datetime(p.watermark_ms),
                    p.dead_lettered,
                    p.error,
                )
                for p in partitions
            ],
        )

    async def _global_watermark(self, conn: Any, batch: CommitBatch) -> int | None:
        """W = min over every partition of the topic of its committed watermark.

        A partition with no ledger row holds W back, unless idleTimeout is set
        and the ledger row (or the query's first row) is older than it.
        """
        rows = await conn.fetch(
            f"""SELECT DISTINCT ON (partition) partition, watermark,
                       extract(epoch from now() - committed_at) * 1000 AS age_ms
                FROM {quote_ident(LEDGER_TABLE)} WHERE query = $1 AND topic = $2
                ORDER BY partition, start_offset DESC""",
            self._query,
            self._topic,
        )
        idle = batch.idle_timeout_ms
        marks: list[int] = []
        seen = 0
        for r in rows:
            seen += 1
            if idle is not None and float(r["age_ms"]) > idle:
                continue
            if r["watermark"] is None:
                return None
            marks.append(datetime_to_ms(r["watermark"]) or 0)
        if seen < batch.topic_partitions and idle is None:
            return None
        return min(marks) if marks else None

    async def _close_windows(self, conn: Any, watermark_ms: int) -> int:
        """Append mode: write every window with end <= W once, then drop its partials."""
        rows = await conn.fetch(
            f"""DELETE FROM {quote_ident(PARTIALS_TABLE)}
                WHERE query = $1 AND window_end_ms <= $2
                RETURNING key::text, window_start_ms, window_end_ms, state::text""",
            self._query,
            watermark_ms,
        )
        merged = self._merge_rows(rows)
        await self._sink.write(conn, merged, insert_only=True)
        return len(merged)

    async def _evict_closed(self, conn: Any, watermark_ms: int) -> int:
        """Update mode: partials of windows with end <= W can never change again."""
        status: str = await conn.execute(
            f"""DELETE FROM {quote_ident(PARTIALS_TABLE)}
                WHERE query = $1 AND window_end_ms <= $2""",
            self._query,
            watermark_ms,
        )
        return int(status.split()[-1])

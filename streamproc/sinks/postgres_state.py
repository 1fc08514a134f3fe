"""The partial states in PostgreSQL (`streamproc_state`): written, deleted, read, merged.

A state row is one partition's partial aggregate of one (key, window), keyed by
(query, partition, window start, key). Rows go in by binary COPY to a temporary
table, then one statement applies them. Merging the states of every partition
of a (key, window) into its result row happens in Python (`merge_rows`): the
state bytes are the engine's own encoding.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from streamproc.engine import PartialRow, QuerySpec, ResultRow, WindowKey, finalize, merge_states
from streamproc.sinks.base import ResultSink
from streamproc.sinks.layout import STAGE_KEYS, STAGE_STATES, STATE_TABLE, quote_ident
from streamproc.sinks.rows import decode_key, decode_state, encode_key, encode_state

#: Non-windowed aggregation stores its states with this window, so that one primary
#: key serves both shapes.
NO_WINDOW_MS = 0

_STATE = quote_ident(STATE_TABLE)


def state_records(
    sink: ResultSink, partials: Mapping[int, Sequence[PartialRow]], touch_slot: int | None
) -> list[tuple[Any, ...]]:
    """The staging records of partial states; refuses keys the sink cannot hold."""
    sink.check_keys(row.key for rows in partials.values() for row in rows)
    return [
        (
            partition,
            encode_key(row.key),
            NO_WINDOW_MS if row.window_start_ms is None else row.window_start_ms,
            NO_WINDOW_MS if row.window_end_ms is None else row.window_end_ms,
            encode_state(row.state),
            None if touch_slot is None else row.state[touch_slot],
        )
        for partition, rows in partials.items()
        for row in rows
    ]


async def stage_states(conn: Any, records: Sequence[tuple[Any, ...]]) -> None:
    """Copy partial states to the temporary staging table (binary COPY, encoded in C)."""
    if records:
        await conn.copy_records_to_table(STAGE_STATES, records=records)


async def apply_states(conn: Any, query: str) -> int:
    """Upsert the staged partial states; returns how many were new rows (not updates).

    A row the upsert inserted has no xmax yet; one it updated has this transaction's:
    so the same statement counts the new states.
    """
    inserted: int = await conn.fetchval(
        f"""WITH upserted AS (
              INSERT INTO {_STATE}
                (query, partition, key, window_start_ms, window_end_ms, state, touched_ms)
              SELECT $1, partition, key, window_start_ms, window_end_ms, state, touched_ms
              FROM {STAGE_STATES}
              ON CONFLICT (query, partition, window_start_ms, key)
              DO UPDATE SET window_end_ms = EXCLUDED.window_end_ms, state = EXCLUDED.state,
                            touched_ms = EXCLUDED.touched_ms
              RETURNING xmax = 0 AS inserted)
            SELECT count(*) FILTER (WHERE inserted) FROM upserted""",
        query,
    )
    await conn.execute(f"TRUNCATE {STAGE_STATES}")
    return inserted


async def delete_states(conn: Any, query: str, evicted: Mapping[int, Sequence[WindowKey]]) -> int:
    """Delete evicted states; returns how many rows went."""
    records = [
        (partition, encode_key(key), NO_WINDOW_MS if start is None else start)
        for partition, window_keys in evicted.items()
        for key, start, _end in window_keys
    ]
    if not records:
        return 0
    await conn.copy_records_to_table(STAGE_KEYS, records=records)
    status: str = await conn.execute(
        f"""DELETE FROM {_STATE} s USING {STAGE_KEYS} d
            WHERE s.query = $1 AND s.partition = d.partition AND s.key = d.key
              AND s.window_start_ms = d.window_start_ms""",
        query,
    )
    await conn.execute(f"TRUNCATE {STAGE_KEYS}")
    return int(status.split()[-1])


def window_keys(
    keys: Iterable[tuple[Sequence[Any], int | None]],
) -> list[tuple[bytes, int]]:
    """(key, window start) pairs as the state table stores them."""
    return [(encode_key(key), NO_WINDOW_MS if start is None else start) for key, start in keys]


async def states_of(
    conn: Any, query: str, keys: Sequence[tuple[bytes, int]], partitions: list[int]
) -> list[Any]:
    """Every partition's state of each (key, window), in partition order.

    One index lookup per (key, window) and partition.
    """
    if not keys:
        return []
    await conn.copy_records_to_table(STAGE_KEYS, records=[(0, key, start) for key, start in keys])
    rows = await conn.fetch(
        f"""SELECT s.key, s.window_start_ms, s.window_end_ms, s.state
            FROM {STAGE_KEYS} t CROSS JOIN unnest($2::int[]) AS p(partition)
            JOIN {_STATE} s ON s.query = $1 AND s.partition = p.partition
              AND s.window_start_ms = t.window_start_ms AND s.key = t.key
            ORDER BY s.partition""",
        query,
        partitions,
    )
    await conn.execute(f"TRUNCATE {STAGE_KEYS}")
    return list(rows)


def merge_rows(spec: QuerySpec, rows: Iterable[Any]) -> list[ResultRow]:
    """Merge states of the same (key, window), in the order given (partition order)."""
    grouped: dict[tuple[bytes, int, int], list[Sequence[Any]]] = defaultdict(list)
    for r in rows:
        grouped[(r["key"], r["window_start_ms"], r["window_end_ms"])].append(
            decode_state(r["state"])
        )
    windowed = spec.windowed
    merged: list[ResultRow] = []
    for (key, start, end), states in grouped.items():
        values = finalize(spec, merge_states(spec, states))
        merged.append(
            ResultRow(
                decode_key(key), start if windowed else None, end if windowed else None, values
            )
        )
    return merged


def partial_from_row(spec: QuerySpec, r: Any) -> PartialRow:
    """A stored state row as the engine's partial."""
    windowed = spec.windowed
    return PartialRow(
        decode_key(r["key"]),
        r["window_start_ms"] if windowed else None,
        r["window_end_ms"] if windowed else None,
        decode_state(r["state"]),
    )

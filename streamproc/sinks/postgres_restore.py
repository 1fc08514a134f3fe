"""Restoring a partition: its position, its open states, and its ledger chain checked.

A worker that takes a partition rebuilds its engine state from what this reads,
and resumes at the position; a ledger that does not chain up to the position (a
row deleted or added by hand) stops it rather than apply a batch twice or skip one.
"""

from __future__ import annotations

from typing import Any

from streamproc.engine import QuerySpec
from streamproc.sinks.base import RESET_HINT, CheckpointConflictError, PartitionCheckpoint
from streamproc.sinks.layout import (
    LEDGER_TABLE,
    POSITIONS_TABLE,
    STATE_TABLE,
    TOMBSTONE_PARTITION,
    quote_ident,
)
from streamproc.sinks.postgres_state import partial_from_row
from streamproc.sinks.session_commit import fences_of

_LEDGER = quote_ident(LEDGER_TABLE)
_POSITIONS = quote_ident(POSITIONS_TABLE)
_STATE = quote_ident(STATE_TABLE)


async def load_partition(
    conn: Any, query: str, topic: str, spec: QuerySpec, partition: int
) -> PartitionCheckpoint:
    """A partition's position and open states, after checking its ledger chain.

    Raises:
        CheckpointConflictError: the ledger and the position disagree (a row
            deleted or added by hand): resuming would apply a batch twice
            or skip one.
    """
    position = await conn.fetchrow(
        f"""SELECT next_offset, max_event_time_ms, last_record FROM {_POSITIONS}
            WHERE query = $1 AND partition = $2""",
        query,
        partition,
    )
    chain = await conn.fetchrow(
        f"""SELECT count(*) AS rows,
                   (array_agg(next_offset ORDER BY start_offset DESC))[1] AS last_next,
                   min(start_offset) FILTER (WHERE prev IS DISTINCT FROM start_offset
                                               AND prev IS NOT NULL) AS break_at
            FROM (SELECT start_offset, next_offset,
                         lag(next_offset) OVER (ORDER BY start_offset) AS prev
                  FROM {_LEDGER} WHERE query = $1 AND topic = $2 AND partition = $3) c""",
        query,
        topic,
        partition,
    )
    # With the partition's partials, the query's tombstones (windowed
    # stateTimeout): an expired (key, window) takes no record of any partition.
    states = await conn.fetch(
        f"""SELECT partition, key, window_start_ms, window_end_ms, state FROM {_STATE}
            WHERE query = $1 AND partition IN ($2, {TOMBSTONE_PARTITION})""",
        query,
        partition,
    )
    check_chain(f"query {query}, partition {partition} of {topic}", position, chain)
    # Sessions keep closed ones there as fences (`session_commit`), not partials.
    sessions = spec.session is not None
    fenced = [sessions and r["partition"] == TOMBSTONE_PARTITION for r in states]
    fences = fences_of(partial_from_row(spec, r) for r, f in zip(states, fenced, strict=True) if f)
    if position is None:  # a new partition: no state, but the query's fences
        return PartitionCheckpoint(partition, None, None, (), fences=fences)
    return PartitionCheckpoint(
        partition,
        position["next_offset"],
        position["max_event_time_ms"],
        tuple(partial_from_row(spec, r) for r, f in zip(states, fenced, strict=True) if not f),
        position["last_record"],
        fences,
    )


def check_chain(where: str, position: Any, chain: Any) -> None:
    """Refuse a ledger that does not chain from its first row to the position."""
    problem = None
    if position is None and chain["rows"]:
        problem = f"its ledger has {chain['rows']} row(s) but no position"
    elif position is not None and not chain["rows"]:
        problem = f"its position is at offset {position['next_offset']} but its ledger is empty"
    elif chain["break_at"] is not None:
        problem = f"its ledger has a gap or an overlap at offset {chain['break_at']}"
    elif position is not None and chain["last_next"] != position["next_offset"]:
        problem = (
            f"its ledger ends at offset {chain['last_next']} but its position is at "
            f"{position['next_offset']} (a ledger row was deleted or added)"
        )
    if problem is not None:
        raise CheckpointConflictError(
            f"{where}: {problem}; resuming could apply a batch twice or skip one, so "
            f"nothing was processed; restore the rows, or {RESET_HINT}"
        )

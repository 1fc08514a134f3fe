"""What the runtime's sink would hold, simulated from the engine's emissions.

The property tests (test_engine_properties.py) feed `Emission`s to these and compare
what they hold with the model (tests/reference.py). Unlike the model, they use engine
code (`merge_states`, `finalize`): they stand in for the PostgreSQL sink, not for the
semantics.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from streamproc.engine import PartialRow, QuerySpec, finalize, merge_states
from tests.reference import TableKey, typed


def table_key(key: Sequence[Any], ws: int | None, we: int | None) -> TableKey:
    """The comparison key of a result row."""
    return (typed(key), ws, we)


class SinkTable:
    """The result table as the runtime's sink would hold it, fed with `Emission.rows`.

    append inserts (a second insert of a key is a bug), update upserts, complete replaces.
    """

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.rows: dict[TableKey, tuple[Any, ...]] = {}

    def apply(self, emission: Any) -> None:
        """Apply one emission's rows."""
        if self.mode == "complete":
            self.rows = {}
        for row in emission.rows:
            tkey = table_key(row.key, row.window_start_ms, row.window_end_ms)
            if self.mode == "append":
                assert tkey not in self.rows, f"append emitted {tkey} twice"
            self.rows[tkey] = row.values


class PartialsRuntime:
    """The exactly-once runtime of STREAMING.md ("Exactly once"), with dicts for Postgres tables.

    Per emit: upsert every partial (key, window, partition), recompute the sink rows the
    partials touch (append: the closed windows) by merging all partitions' partials with
    `merge_states` + `finalize`, then delete the evicted partials.
    """

    def __init__(self, spec: QuerySpec) -> None:
        self.spec = spec
        self.partials: dict[TableKey, dict[int, tuple[Any, ...]]] = {}
        self.keys: dict[TableKey, tuple[Any, ...]] = {}
        self.sink = SinkTable(spec.output_mode)

    def apply(self, emission: Any) -> None:
        """Apply one emission as the runtime's transaction would."""
        touched: dict[TableKey, None] = {}
        for partition, rows in emission.partials.items():
            for row in rows:
                tkey = table_key(row.key, row.window_start_ms, row.window_end_ms)
                self.partials.setdefault(tkey, {})[partition] = row.state
                self.keys[tkey] = tuple(row.key)
                touched[tkey] = None
        if self.spec.output_mode == "append":
            touched = {table_key(k, ws, we): None for k, ws, we in emission.closed}
        elif self.spec.output_mode == "complete":
            touched = dict.fromkeys(self.partials)
            self.sink.rows = {}
        for tkey in touched:
            by_partition = self.partials.get(tkey, {})
            states = [by_partition[p] for p in sorted(by_partition)]
            if states:
                self.sink.rows[tkey] = finalize(self.spec, merge_states(self.spec, states))
        for partition, gone in emission.evicted.items():
            for key, ws, we in gone:
                tkey = table_key(key, ws, we)
                self.partials.get(tkey, {}).pop(partition, None)
                if not self.partials.get(tkey, True):
                    del self.partials[tkey]
        w = emission.global_watermark_ms
        if self.spec.output_mode != "complete" and w is not None:
            # Partials of closed windows are dropped by W, as the checkpoint does.
            for tkey in [t for t in self.partials if t[2] is not None and t[2] <= w]:
                del self.partials[tkey]

    def partials_of(self, partition: int) -> list[Any]:
        """The committed partial rows of one partition (what `Engine.restore` reads)."""
        out = []
        for tkey, states in self.partials.items():
            if partition in states:
                _, ws, we = tkey
                out.append(PartialRow(self.keys[tkey], ws, we, states[partition]))
        return out

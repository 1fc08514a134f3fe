"""Aggregate state: slot layout, per-record update code, merge and finalize.

The partial state of one (key, window) in one partition is a flat list of JSON values.
Slots are allocated in order of first use and shared between aggregates of the same
column (`sum` and `avg` of a column share its running sum; `avg` and `count` share its
non-null count), so each record does each piece of arithmetic once:

    rows      n                          records, for `*:count`
    n:c       n                          present-and-not-null values of c
    sum:c     s                          sum of c; None until a number is seen
    min:c     m                          least number; None until a number is seen
    max:c     m                          greatest number; None until a number is seen
    first:c   [ts, partition, offset, value]   record with the least (ts, p, offset)
    last:c    [ts, partition, offset, value]   record with the greatest (ts, p, offset)
    touch     t                          last event time (or wall time) of the key, only
                                         with a state timeout; windowed: the max event
                                         time of the (key, window)'s records

    avg(c) = sum:c / n:c, None when n:c == 0

Exactness: counts and sums of ints are Python ints, so merging partial states of any
split gives exactly one pass's result. A sum or avg over floats is a left-to-right float
sum: within a partition it is the same for any batch split; across partitions it can
differ from one pass in the last bits (float addition is not associative). `avg` of ints
is exact: int / int is correctly rounded. min, max, first and last are exact.

first/last take the record's value as it is, null when null or missing (Spark's
`first(col)` without ignoreNulls does the same); a NaN or infinite float there is a bad
record, since JSON (and so the JSONB partials) cannot hold it. Without an event-time column every
record has event time 0, so first/last go by (partition, offset).

Numbers must be finite; sum/avg inputs must also satisfy |x| <= 1e290 so that no sum of
up to 1e18 values overflows a double (which would break JSON storage of partials).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal

from streamproc.engine.spec import AggSpec, QuerySpec

MAX_ABS_NUMBER = 1e290

Need = Literal["any", "finite", "number"]
_NEED_RANK = {"any": 0, "finite": 1, "number": 2}
#: Slot kind -> initial values (its width).
_SLOT_INIT: dict[str, tuple[Any, ...]] = {
    "rows": (0,),
    "n": (0,),
    "sum": (None,),
    "min": (None,),
    "max": (None,),
    "first": (None, None, None, None),
    "last": (None, None, None, None),
    "touch": (None,),
}
#: Aggregate function -> slot kinds it reads.
_AGG_SLOTS: dict[str, tuple[str, ...]] = {
    "count": ("n",),
    "sum": ("sum",),
    "avg": ("sum", "n"),
    "min": ("min",),
    "max": ("max",),
    "first": ("first",),
    "last": ("last",),
}


@dataclass(frozen=True, slots=True)
class ColumnUse:
    """An input column read by value aggregates, and the strictest value kind they need.

    Attributes:
        column: Field name.
        need: "number" (sum, avg, min, max), "finite" (first, last: any JSON value but
            NaN and infinities, which JSON cannot carry) or "any" (count).
        label: The aggregate that imposes `need`, e.g. `amount:sum`, for reasons.
    """

    column: str
    need: Need
    label: str


@dataclass(frozen=True, slots=True)
class AggregatePlan:
    """The state layout of a query and its compiled merge and finalize functions.

    Attributes:
        slots: (kind, column, first index) of every slot group, in layout order.
        width: Slots per state.
        init: State of a (key, window) before any record.
        touch_slot: Slot of the key's last activity, when a state timeout is set.
        columns: Input columns read by value aggregates, in first-use order.
        finalize_exprs: Per aggregate, an expression of the output value over `s`.
        merge2: merge2(a, b) -> new state; a holds the earlier contributions.
        finalize: finalize(state) -> output values, in aggregation order.
        source: Generated source of merge2 and finalize, for debugging.
    """

    aggregations: tuple[AggSpec, ...]
    slots: tuple[tuple[str, str | None, int], ...]
    width: int
    init: tuple[Any, ...]
    touch_slot: int | None
    columns: tuple[ColumnUse, ...]
    merge2: Callable[[Sequence[Any], Sequence[Any]], list[Any]]
    finalize: Callable[[Sequence[Any]], tuple[Any, ...]]
    source: str


def _need_of(func: str) -> Need:
    # min/max are numeric too: the sink stores them as double precision, and
    # a string there would poison every batch that tried to write it.
    if func in ("sum", "avg", "min", "max"):
        return "number"
    if func in ("first", "last"):
        return "finite"
    return "any"


def _column_uses(aggs: Sequence[AggSpec]) -> tuple[ColumnUse, ...]:
    uses: dict[str, ColumnUse] = {}
    for agg in aggs:
        if agg.column is None:
            continue
        need = _need_of(agg.func)
        old = uses.get(agg.column)
        if old is None or _NEED_RANK[need] > _NEED_RANK[old.need]:
            uses[agg.column] = ColumnUse(agg.column, need, agg.label)
    return tuple(uses.values())


def _layout(spec: QuerySpec) -> dict[tuple[str, str | None], int]:
    """(slot kind, column) -> first index, allocated in order of first use."""
    index: dict[tuple[str, str | None], int] = {}
    width = 0
    wanted: list[tuple[str, str | None]] = []
    for agg in spec.aggregations:
        if agg.column is None:
            wanted.append(("rows", None))
        else:
            wanted += [(kind, agg.column) for kind in _AGG_SLOTS[agg.func]]
    if spec.state_timeout_ms is not None:
        wanted.append(("touch", None))
    for slot in wanted:
        if slot not in index:
            index[slot] = width
            width += len(_SLOT_INIT[slot[0]])
    return index


def _merge_source(layout: dict[tuple[str, str | None], int]) -> str:
    lines = ["def merge2(a, b):", "    out = list(a)"]
    for (kind, _), i in layout.items():
        if kind in ("rows", "n"):
            lines.append(f"    out[{i}] = a[{i}] + b[{i}]")
        elif kind in ("sum", "min", "max", "touch"):
            op = {"sum": "x + y", "min": "min(x, y)", "max": "max(x, y)", "touch": "max(x, y)"}
            lines += [
                f"    x = a[{i}]; y = b[{i}]",
                "    if y is not None:",
                f"        out[{i}] = y if x is None else {op[kind]}",
            ]
        else:  # first / last: compare (ts, partition, offset); ts None means empty
            cmp = "<" if kind == "first" else ">"
            lines += [
                f"    y = b[{i}]",
                f"    if y is not None and (a[{i}] is None or "
                f"(y, b[{i + 1}], b[{i + 2}]) {cmp} (a[{i}], a[{i + 1}], a[{i + 2}])):",
                f"        out[{i}:{i + 4}] = b[{i}:{i + 4}]",
            ]
    lines.append("    return out")
    return "\n".join(lines)


def _finalize_expr(agg: AggSpec, layout: dict[tuple[str, str | None], int]) -> str:
    c = agg.column
    f = agg.func
    if c is None:
        return f"s[{layout[('rows', None)]}]"
    if f == "count":
        return f"s[{layout[('n', c)]}]"
    if f == "sum":
        return f"s[{layout[('sum', c)]}]"
    if f == "avg":
        s, n = layout[("sum", c)], layout[("n", c)]
        return f"(None if s[{n}] == 0 else s[{s}] / s[{n}])"
    if f in ("min", "max"):
        return f"s[{layout[(f, c)]}]"
    return f"s[{layout[(f, c)] + 3}]"


def compile_functions(source: str, names: Iterable[str]) -> dict[str, Any]:
    """Compile generated source and return the named functions it defines."""
    namespace: dict[str, Any] = {}
    exec(compile(source, "<streamproc-generated>", "exec"), namespace)
    return {name: namespace[name] for name in names}


@lru_cache(maxsize=64)
def plan_for(spec: QuerySpec) -> AggregatePlan:
    """The aggregate plan of a query (cached: specs are frozen and hashable)."""
    layout = _layout(spec)
    init: list[Any] = []
    for kind, _ in layout:
        init.extend(_SLOT_INIT[kind])
    exprs = [_finalize_expr(agg, layout) for agg in spec.aggregations]
    source = (
        _merge_source(layout) + "\n\n\ndef finalize(s):\n    return (" + ", ".join(exprs) + ",)\n"
    )
    functions = compile_functions(source, ("merge2", "finalize"))
    return AggregatePlan(
        aggregations=spec.aggregations,
        slots=tuple((kind, column, i) for (kind, column), i in layout.items()),
        width=len(init),
        init=tuple(init),
        touch_slot=layout.get(("touch", None)),
        columns=_column_uses(spec.aggregations),
        merge2=functions["merge2"],
        finalize=functions["finalize"],
        source=source,
    )


def checked_state(spec: QuerySpec, state: Sequence[Any]) -> list[Any]:
    """A partial state read back from outside (e.g. JSONB), as a mutable list.

    Raises:
        ValueError: the state does not have the query's slot count.
    """
    width = plan_for(spec).width
    if isinstance(state, str | bytes) or len(state) != width:
        raise ValueError(f"partial state {state!r} does not have {width} slots")
    return list(state)


def merge_states(spec: QuerySpec, states: Iterable[Sequence[Any]]) -> tuple[Any, ...]:
    """Merge partial states of one (key, window), e.g. from several partitions.

    States are merged left to right; pass them in partition order for float sums that
    match the engine's own rows bit for bit. No states gives the empty state.
    """
    plan = plan_for(spec)
    merged: list[Any] | None = None
    for state in states:
        if len(state) != plan.width:
            raise ValueError(f"partial state {state!r} does not have {plan.width} slots")
        merged = list(state) if merged is None else plan.merge2(merged, state)
    return plan.init if merged is None else tuple(merged)


def finalize(spec: QuerySpec, state: Sequence[Any]) -> tuple[Any, ...]:
    """The output values of a (merged) partial state, in aggregation order."""
    plan = plan_for(spec)
    if len(state) != plan.width:
        raise ValueError(f"partial state {state!r} does not have {plan.width} slots")
    return plan.finalize(state)


def update_lines(
    plan: AggregatePlan,
    column_var: dict[str, str],
    ts_expr: str,
    touch_expr: str | None,
) -> list[str]:
    """Statements that fold one validated record into the state list `st`.

    Args:
        plan: The aggregate plan.
        column_var: Local variable holding each column's value (None when missing).
        ts_expr: Expression of the record's event time (`ts`, or `0` without one).
        touch_expr: Expression of the key's activity time for a state timeout, if any.

    The kernel binds `p` (partition) and `off` (offset). Values were validated before
    any of these statements run, so they cannot fail half-way.
    """
    per_column: dict[str, list[str]] = {}
    always: list[str] = []
    for kind, column, i in plan.slots:
        if kind == "rows":
            always.append(f"st[{i}] += 1")
            continue
        if kind == "touch":
            if touch_expr is not None:
                always += [f"x = st[{i}]", f"if x is None or {touch_expr} > x:"]
                always.append(f"    st[{i}] = {touch_expr}")
            continue
        assert column is not None
        v = column_var[column]
        if kind in ("first", "last"):
            cmp = "<" if kind == "first" else ">="  # same partition: later offset wins ties
            always += [f"x = st[{i}]", f"if x is None or {ts_expr} {cmp} x:"]
            always.append(f"    st[{i}:{i + 4}] = ({ts_expr}, p, off, {v})")
            continue
        body = per_column.setdefault(column, [])
        if kind == "n":
            body.append(f"st[{i}] += 1")
        elif kind == "sum":
            body += [f"x = st[{i}]", f"st[{i}] = {v} if x is None else x + {v}"]
        else:
            cmp = "<" if kind == "min" else ">"
            body += [f"x = st[{i}]", f"if x is None or {v} {cmp} x:", f"    st[{i}] = {v}"]
    lines = list(always)
    for column, body in per_column.items():
        lines.append(f"if {column_var[column]} is not None:")
        lines += ["    " + line for line in body]
    return lines

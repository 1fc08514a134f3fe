"""A query's definition: what its stored state means, and how to tell it changed.

The checkpoint of a query (its positions, partial states and result rows) is
only valid for the definition that made it. The definition is stored with
the query when it first commits; a run whose definition differs is refused,
with one line naming what changed (`definition_changes`), since running it on
the old state would give silently wrong results. What cannot change results
(trigger, batch sizes, retries, logging, the watermark delay, timeouts) is
not part of it and may change between runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from streamproc.engine import QuerySpec

#: The layout of everything streamproc stores (tables, partial states, keys).
#: 1: streamproc 0.1 (jsonb partials, group values as plain text).
#: 2: typed group keys (`group_key_types`), binary partials, positions,
#:    query registry, bounded runs.
LAYOUT_VERSION = 2


def query_definition(
    spec: QuerySpec,
    *,
    topic: str,
    sink: Mapping[str, str],
) -> dict[str, Any]:
    """The definition of a query as JSON values (stored with its checkpoint).

    Args:
        spec: The query's shape.
        topic: The source topic.
        sink: Where results go: ``{"table": name}`` or ``{"topic": name}``.
    """
    window = spec.window
    definition: dict[str, Any] = {
        "layout": LAYOUT_VERSION,
        "source topic": topic,
        "group-by": list(spec.group_by),
        "window": None
        if window is None
        else {"duration_ms": window.size_ms, "slide_ms": window.slide_ms},
        "aggregations": [f"{a.output}={a.label}" for a in spec.aggregations],
        "output mode": spec.output_mode,
        "event time": None
        if spec.event_time_column is None
        else {"column": spec.event_time_column, "format": spec.event_time_format},
        "sink": dict(sink),
    }
    if window is not None:
        # A windowed stateTimeout changes what a partial state holds (its
        # activity) and leaves tombstones; its duration may change between runs.
        definition["state timeout"] = (
            None if spec.state_timeout_ms is None else "expires idle (key, window)s"
        )
    if spec.passthrough:
        # Only then: a key absent from stored definitions would read as a change.
        definition["rows"] = "one per record (no aggregation)"
    return definition


def _show(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, list):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} {_show(v)}" for k, v in value.items()) + "}"
    return str(value)


def definition_changes(stored: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """What differs between a stored definition and the current one, one phrase each.

    Example: ``aggregations changed from [value_max=value:max] to [value_sum=value:sum]``.
    """
    changes = []
    for name in current:
        if name == "layout":
            continue
        before, after = stored.get(name), current[name]
        if before != after:
            changes.append(f"{name} changed from {_show(before)} to {_show(after)}")
    return changes

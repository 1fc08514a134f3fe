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

import os
from collections.abc import Mapping
from typing import Any

from streamproc.config import format_duration_ms
from streamproc.engine import QuerySpec
from streamproc.sinks.postgres_owners import canonical_table

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
    source_path: str | None = None,
) -> dict[str, Any]:
    """The definition of a query as JSON values (stored with its checkpoint).

    Args:
        spec: The query's shape.
        topic: The source topic (a file source: its path, normalised, as its
            checkpoint rows are keyed).
        sink: Where results go: ``{"table": name}`` or ``{"topic": name}``.
        source_path: A file source's path made absolute: the same relative path
            run from another directory is other files.
    """
    window = spec.window
    shape: dict[str, Any] | None = None
    if window is not None:
        shape = {"duration_ms": window.size_ms, "slide_ms": window.slide_ms}
    elif spec.session is not None:
        # Sessions (issue 22) under the same name: a fixed window changed to sessions,
        # or another gap, is a change of "window" (the rows' bounds mean other things).
        shape = {"gap_ms": spec.session.gap_ms}
    definition: dict[str, Any] = {
        "layout": LAYOUT_VERSION,
        "source topic": topic,
        "group-by": list(spec.group_by),
        "window": shape,
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
    if source_path is not None:
        definition["source path"] = source_path
    return definition


#: Keys compared only when the stored definition has them too: definitions stored
#: before a key was added must still compare equal where nothing changed.
_SINCE_LATER = frozenset({"source path"})
#: The order a value's keys are shown in, whatever order jsonb stored them in (it
#: sorts keys by length: `{slide_ms ..., duration_ms ...}`); others follow, sorted.
_KEY_ORDER = ("duration_ms", "slide_ms", "gap_ms", "column", "format", "table", "topic")


def _normal(name: str, value: Any) -> Any:
    """A definition's value as one spelling per object, so that only real changes count.

    A table is one whatever its spelling: `x` and `public.x` (`canonical_table`), in
    any case (a name is lower case since table names with upper-case letters are
    refused: the same table, renamed so, then compares equal). A path's trailing
    slash or `.` components are no change.
    """
    if name == "sink" and isinstance(value, dict) and isinstance(value.get("table"), str):
        return {**value, "table": canonical_table(value["table"]).lower()}
    if name == "source path" and isinstance(value, str):
        return os.path.normpath(value)
    return value


def _show(value: Any) -> str:
    """A definition's value as the config says it: durations in its units, keys in one order."""
    if value is None:
        return "none"
    if isinstance(value, list):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    if isinstance(value, dict):
        keys = [k for k in _KEY_ORDER if k in value] + sorted(set(value) - set(_KEY_ORDER))
        return "{" + ", ".join(_show_item(k, value[k]) for k in keys) + "}"
    return str(value)


def _show_item(key: str, value: Any) -> str:
    if key.endswith("_ms") and isinstance(value, int) and not isinstance(value, bool):
        return f"{key.removesuffix('_ms')} {format_duration_ms(value)}"
    return f"{key} {_show(value)}"


def definition_changes(stored: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """What differs between a stored definition and the current one, one phrase each.

    Names are compared after `_normal` (so `x` and `public.x` are one table) and shown
    as the config says them (`window changed from {duration 10 minutes, slide 10
    minutes} to {duration 5 minutes, slide 5 minutes}`).

    Example: ``aggregations changed from [value_max=value:max] to [value_sum=value:sum]``.
    """
    changes = []
    for name in current:
        if name == "layout" or (name in _SINCE_LATER and name not in stored):
            continue
        before, after = stored.get(name), current[name]
        if _normal(name, before) != _normal(name, after):
            changes.append(f"{name} changed from {_show(before)} to {_show(after)}")
    return changes

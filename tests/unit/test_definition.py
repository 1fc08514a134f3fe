"""A query's stored definition against the current one: only real changes count, and a
change reads as the config says it (pure: the JSON as `streamproc_queries` holds it)."""

from __future__ import annotations

import json
from dataclasses import replace

from streamproc.engine import AggSpec, QuerySpec, WindowSpec
from streamproc.sinks.definition import definition_changes, query_definition

MINUTE = 60_000
SPEC = QuerySpec(
    ("user_id",),
    (AggSpec("count", None, "count"),),
    "append",
    event_time_column="event_time",
    delay_ms=5 * MINUTE,
    window=WindowSpec(10 * MINUTE, 10 * MINUTE),
)


def as_stored(definition: dict[str, object]) -> dict[str, object]:
    """Through jsonb and back: keys come back ordered by length, then bytes."""

    def jsonb(value: object) -> object:
        if isinstance(value, dict):
            return {k: jsonb(value[k]) for k in sorted(value, key=lambda k: (len(k), k))}
        if isinstance(value, list):
            return [jsonb(v) for v in value]
        return value

    loaded = jsonb(json.loads(json.dumps(definition)))
    assert isinstance(loaded, dict)
    return loaded


def test_a_window_change_reads_in_the_configs_units_in_one_key_order() -> None:
    stored = as_stored(query_definition(SPEC, topic="t", sink={"table": "x"}))
    shorter = replace(SPEC, window=WindowSpec(5 * MINUTE, 5 * MINUTE))
    current = query_definition(shorter, topic="t", sink={"table": "x"})
    # It said: window changed from {slide_ms 600000, duration_ms 600000} to
    # {duration_ms 300000, slide_ms 300000}.
    assert definition_changes(stored, current) == [
        "window changed from {duration 10 minutes, slide 10 minutes} to "
        "{duration 5 minutes, slide 5 minutes}"
    ]
    assert definition_changes(current, as_stored(stored)) == [
        "window changed from {duration 5 minutes, slide 5 minutes} to "
        "{duration 10 minutes, slide 10 minutes}"
    ]


def test_one_table_spelled_two_ways_is_no_change() -> None:
    stored = as_stored(query_definition(SPEC, topic="t", sink={"table": "x"}))
    for spelling in ("public.x", "x"):
        current = query_definition(SPEC, topic="t", sink={"table": spelling})
        assert definition_changes(stored, current) == []
    moved = query_definition(SPEC, topic="t", sink={"table": "analytics.x"})
    assert definition_changes(stored, moved) == [
        "sink changed from {table x} to {table analytics.x}"
    ]
    # A table created quoted with upper case (refused now), renamed to lower case.
    old = as_stored(query_definition(SPEC, topic="t", sink={"table": "Totals"}))
    assert (
        definition_changes(old, query_definition(SPEC, topic="t", sink={"table": "totals"})) == []
    )


def test_a_file_sources_absolute_path_counts_only_when_both_have_it() -> None:
    # A definition stored before "source path" existed compares equal where nothing
    # changed; from then on the same relative path in another directory is a change.
    before = as_stored(query_definition(SPEC, topic="data", sink={"table": "x"}))
    now = query_definition(SPEC, topic="data", sink={"table": "x"}, source_path="/srv/a/data")
    assert definition_changes(before, now) == []
    stored = as_stored(now)
    assert definition_changes(stored, now) == []
    elsewhere = query_definition(SPEC, topic="data", sink={"table": "x"}, source_path="/srv/b/data")
    assert definition_changes(stored, elsewhere) == [
        "source path changed from /srv/a/data to /srv/b/data"
    ]


def test_an_unchanged_definition_stored_by_the_previous_release_is_no_change() -> None:
    # As streamproc_queries holds it from before this release: every key, jsonb's order.
    stored = {
        "sink": {"table": "user_event_aggregations"},
        "layout": 2,
        "window": {"slide_ms": 600000, "duration_ms": 600000},
        "group-by": ["user_id"],
        "event time": {"column": "event_time", "format": "auto"},
        "output mode": "append",
        "aggregations": ["count=*:count"],
        "source topic": "user-events",
        "state timeout": None,
    }
    current = query_definition(
        SPEC, topic="user-events", sink={"table": "public.user_event_aggregations"}
    )
    assert definition_changes(stored, current) == []

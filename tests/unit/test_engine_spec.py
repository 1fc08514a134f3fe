"""QuerySpec validation: every relation the engine relies on is checked up front."""

from __future__ import annotations

from typing import Any

import pytest

from streamproc.engine import AggSpec, QuerySpec, WindowSpec

COUNT = (AggSpec("count", None, "count"),)


def make(**kw: Any) -> QuerySpec:
    base: dict[str, Any] = {"group_by": ("k",), "aggregations": COUNT, "output_mode": "update"}
    base.update(kw)
    return QuerySpec(**base)


def test_a_full_windowed_spec_is_valid() -> None:
    spec = make(
        output_mode="append",
        event_time_column="ts",
        delay_ms=1000,
        window=WindowSpec(60_000, 30_000),
        idle_timeout_ms=5_000,
    )
    assert spec.window is not None and not spec.window.tumbling


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"aggregations": ()}, "at least one aggregation"),
        ({"aggregations": COUNT + COUNT}, "duplicate output columns"),
        ({"group_by": ("k", "k")}, "duplicate group-by"),
        ({"group_by": ("count",)}, "clash with group-by"),
        ({"output_mode": "append"}, "append mode needs a window and a watermark"),
        (
            {"output_mode": "append", "event_time_column": "ts", "window": WindowSpec(10, 10)},
            "append mode needs a window and a watermark",
        ),
        ({"window": WindowSpec(10, 10)}, "a window needs an event time column"),
        ({"delay_ms": 5}, "a watermark needs an event time column"),
        ({"event_time_column": "ts", "delay_ms": -1}, "delay must be >= 0"),
        ({"idle_timeout_ms": 0}, "idle timeout must be positive"),
        (
            {"event_time_column": "ts", "window": WindowSpec(10, 10), "state_timeout_ms": 5},
            "a state timeout on a windowed aggregation needs a watermark",
        ),
        (
            {
                "output_mode": "complete",
                "event_time_column": "ts",
                "delay_ms": 0,
                "window": WindowSpec(10, 10),
                "state_timeout_ms": 5,
            },
            "a state timeout on a windowed aggregation needs update or append mode",
        ),
        ({"state_timeout_ms": 0}, "state timeout must be positive"),
        ({"output_mode": "sometimes"}, "unknown output mode"),
        ({"event_time_column": "ts", "event_time_format": "rfc"}, "unknown event time format"),
    ],
)
def test_invalid_specs_say_what_is_wrong(kw: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make(**kw)


def test_star_only_with_count() -> None:
    with pytest.raises(ValueError, match="only allowed with count"):
        AggSpec("s", None, "sum")
    with pytest.raises(ValueError, match="unknown function"):
        AggSpec("s", "v", "median")  # type: ignore[arg-type]
    assert AggSpec("s", "v", "sum").label == "v:sum"
    assert COUNT[0].label == "*:count"

"""Engine queries from the model's `Query`, for the harnesses that build plans."""

from __future__ import annotations

from streamproc.engine import AggSpec, QuerySpec, WindowSpec
from tests.reference import Query


def spec_of(query: Query) -> QuerySpec:
    """The engine's `QuerySpec` of a model query.

    Args:
        query: The model's description of the query.

    Returns:
        The same query as the engine takes it.
    """
    window = WindowSpec(query.size_ms, query.slide_ms or query.size_ms) if query.size_ms else None
    return QuerySpec(
        group_by=query.group_by,
        aggregations=tuple(AggSpec(o, c, f) for o, c, f in query.aggregations),  # type: ignore[arg-type]
        output_mode=query.output_mode,  # type: ignore[arg-type]
        event_time_column=query.time_column,
        event_time_format=query.time_format,  # type: ignore[arg-type]
        delay_ms=query.delay_ms,
        window=window,
        state_timeout_ms=query.state_timeout_ms,
    )

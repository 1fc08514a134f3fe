"""``transforms[]``: the (single) aggregation, with its group-by, aggregates and window."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import Field, model_validator
from typing_extensions import override

from streamproc.config.base import ConfigModel
from streamproc.config.fields import DurationMs, HouseType, choice
from streamproc.config.messages import expected, render
from streamproc.config.names import IDENT_PATTERN, IDENTIFIER_MAX, ColumnList, ColumnName
from streamproc.config.streaming import EventTimeFormat

AggregateFunc = Literal["sum", "avg", "count", "min", "max", "first", "last"]
AGGREGATE_FUNCS: tuple[AggregateFunc, ...] = ("sum", "avg", "count", "min", "max", "first", "last")
_FUNCS: dict[str, AggregateFunc] = {f: f for f in AGGREGATE_FUNCS}
TransformType = Literal["aggregation"]
WINDOW_BOUNDS = ("window_start", "window_end")
_TransformType = Annotated[TransformType, choice(TransformType, "transform type", component=True)]

_EventTimeFormat = Annotated[EventTimeFormat, choice(EventTimeFormat, "event time format")]
_AGGREGATION = "aggregation"
_IDENT = IDENT_PATTERN
_ITEM = re.compile(rf"\s*(?:({_IDENT})\s*=\s*)?(\*|{_IDENT})\s*:\s*([A-Za-z_]+)\s*")
_ITEM_SYNTAX = "'<column>:<function>' or '<name>=<column>:<function>'"
_NAME_IT = "name it with '<name>=<column>:<function>'"


@dataclass(frozen=True)
class Aggregation:
    """One aggregate of the aggregation transform.

    Attributes:
        output: the output column: ``<column>_<func>`` by default, ``count`` for
            ``*:count``, or the name given as ``name=column:func``.
        column: the input column, or None for ``*`` (count every record).
        func: the aggregate function.
    """

    output: str
    column: str | None
    func: AggregateFunc

    @property
    def spec(self) -> str:
        """The item as the config writes it (``total_value:sum``, ``n=*:count``)."""
        item = f"{self.column or '*'}:{self.func}"
        default = _default_output(self.column, self.func)
        return item if self.output == default else f"{self.output}={item}"


def _default_output(column: str | None, func: AggregateFunc) -> str:
    # The original's rule, <column>_<func>; counting records ("*") gives "count".
    return "count" if column is None else f"{column}_{func}"


def parse_aggregations(text: str) -> tuple[Aggregation, ...]:
    """Parse ``"col:func,name=col:func,*:count"``.

    Raises:
        ValueError: one line naming the bad item and what is accepted.
    """
    out: list[Aggregation] = []
    seen: set[str] = set()
    for raw in text.split(","):
        if not raw.strip():
            raise ValueError(f"{render(text)} has an empty item; expected {_ITEM_SYNTAX} items")
        match = _ITEM.fullmatch(raw)
        if match is None:
            raise ValueError(f"{render(raw.strip())} is not {_ITEM_SYNTAX}")
        name, column, func_name = match.groups()
        item = raw.strip()
        func = _FUNCS.get(func_name.lower())
        if func is None:
            raise ValueError(
                f"{render(item)} uses unknown function '{func_name}'; "
                f"expected one of {', '.join(AGGREGATE_FUNCS)}"
            )
        if column == "*" and func != "count":
            raise ValueError(f"{render(item)}: '*' only goes with count ('*:count' counts records)")
        source = None if column == "*" else column
        agg = Aggregation(output=name or _default_output(source, func), column=source, func=func)
        if len(agg.output) > IDENTIFIER_MAX:
            raise ValueError(
                f"output column '{agg.output}' is longer than {IDENTIFIER_MAX} characters; "
                f"{_NAME_IT}"
            )
        if agg.output in seen:
            raise ValueError(f"output column '{agg.output}' is produced twice; {_NAME_IT}")
        seen.add(agg.output)
        out.append(agg)
    return tuple(out)


@dataclass(frozen=True)
class _AggregationSpec(HouseType):
    @override
    def parse(self, value: Any) -> tuple[Aggregation, ...]:
        if not isinstance(value, str):
            raise ValueError(expected("a string", value))
        return parse_aggregations(value)

    @override
    def dump(self, value: Any) -> Any:
        return ",".join(a.spec for a in value) if isinstance(value, tuple) else value

    @override
    def schema(self) -> dict[str, Any]:
        item = rf"\s*(?:{_IDENT}\s*=\s*)?(?:\*|{_IDENT})\s*:\s*[A-Za-z_]+\s*"
        return {
            "type": "string",
            "pattern": rf"^{item}(?:,{item})*$",
            "description": "comma-separated <column>:<function> or <name>=<column>:<function>; "
            f"functions: {', '.join(AGGREGATE_FUNCS)}",
        }


class AggregationParams(ConfigModel):
    """``transforms[i].parameters`` of an aggregation.

    Attributes:
        group_by: ``groupByColumns``: the group-by columns, comma-separated; a
            missing field groups as null, and values keep their JSON type.
        aggregations: the aggregates, comma-separated, in result-column order:
            ``col:func`` makes the column ``<col>_<func>``; NEW ``name=col:func``
            names it and ``*:count`` counts records (column ``count``). ``count``
            counts non-null values; ``sum``, ``avg``, ``min``, ``max`` skip nulls;
            ``first``/``last`` take the value of the earliest/latest event time.
        window_column: the event-time field the windows are over (with
            ``windowDuration`` or ``gapDuration``; both or neither).
        window_size_ms: ``windowDuration``: the window length in event time;
            windows are aligned to the Unix epoch.
        slide_duration_ms: ``slideDuration``: a sliding window's step, at most
            ``windowDuration``; absent: tumbling windows.
        gap_duration_ms: NEW; ``gapDuration``: session windows (Spark's
            ``session_window``) instead of fixed ones: per group, a session is a
            run of records each less than the gap (event time) from the next;
            ``window_start`` is its first event time, ``window_end`` its last plus
            the gap. Not with ``windowDuration``/``slideDuration``. Batch mode
            runs them (every session final at the end), and so does the streaming
            runtime, exactly once, to a ``postgresql`` table (a ``kafka`` sink is
            refused with one line); STREAMING.md, "Session windows".
        state_timeout_ms: a non-windowed aggregation evicts a key with no record
            for this long (wall time), a windowed one a (key, window) idle this long
            in event time; as ``streamingConfigJson.stateTimeout``.
        event_time_format: NEW; how ``windowColumn`` is read, as
            ``streamingConfigJson.watermark.eventTimeFormat`` (which a batch job has
            not): 'auto', 'iso8601', 'epoch_millis' or 'epoch_seconds'; none: the
            watermark's, else 'auto'.
    """

    group_by: Annotated[tuple[str, ...], ColumnList()] = Field(alias="groupByColumns")
    aggregations: Annotated[tuple[Aggregation, ...], _AggregationSpec()]
    window_column: Annotated[str, ColumnName()] | None = None
    window_size_ms: Annotated[int, DurationMs()] | None = Field(
        default=None, alias="windowDuration"
    )
    slide_duration_ms: Annotated[int, DurationMs()] | None = Field(
        default=None, alias="slideDuration"
    )
    gap_duration_ms: Annotated[int, DurationMs()] | None = Field(default=None, alias="gapDuration")
    state_timeout_ms: Annotated[int, DurationMs()] | None = Field(
        default=None, alias="stateTimeout"
    )
    event_time_format: _EventTimeFormat | None = None

    @property
    def slide_ms(self) -> int | None:
        """The slide in event-time ms; equals the window size for a tumbling window."""
        return self.slide_duration_ms or self.window_size_ms

    @property
    def windowed(self) -> bool:
        """True when the aggregation is per event-time window: fixed or session."""
        return self.window_size_ms is not None or self.gap_duration_ms is not None

    @property
    def sessions(self) -> bool:
        """True when the windows are sessions (``gapDuration``)."""
        return self.gap_duration_ms is not None

    @property
    def output_columns(self) -> tuple[str, ...]:
        """The sink table's columns: group-by, then window bounds (if windowed), aggregates."""
        bounds = WINDOW_BOUNDS if self.windowed else ()
        return (*self.group_by, *bounds, *(a.output for a in self.aggregations))


class TransformConfig(ConfigModel):
    """``transforms[i]``: one transform; only ``aggregation`` is implemented.

    Attributes:
        transform_type: 'aggregation'; the original's 'join' and 'windowing' are
            refused (a window is a parameter of the aggregation).
        parameters: the aggregation's group-by, aggregates and window.
    """

    transform_type: _TransformType
    parameters: AggregationParams

    @model_validator(mode="before")
    @classmethod
    def _skip_parameters_of_other_types(cls, data: Any) -> Any:
        # A join's parameters are not an aggregation's: checking them against
        # AggregationParams would bury the one real error (the type) under noise.
        if isinstance(data, dict):
            kind = data.get("transformType")
            if not (isinstance(kind, str) and kind.strip().lower() == _AGGREGATION):
                return {**data, "parameters": AggregationParams.model_construct()}
        return data


def aggregation_transforms(
    transforms: tuple[TransformConfig, ...],
) -> list[tuple[int, AggregationParams]]:
    """(index, parameters) of every aggregation transform, in order."""
    return [(i, t.parameters) for i, t in enumerate(transforms) if t.transform_type == _AGGREGATION]

"""The query the engine runs: group-by columns, aggregates, event time, window, watermark.

A `QuerySpec` is the engine's whole configuration. The config layer builds it from the
pipeline JSON; the engine never sees JSON config. Every relation between fields that the
engine relies on is checked here, so an `Engine` can trust its spec.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

AggFunc = Literal["sum", "avg", "count", "min", "max", "first", "last"]
EventTimeFormat = Literal["auto", "iso8601", "epoch_millis", "epoch_seconds"]
OutputMode = Literal["append", "update", "complete"]

AGG_FUNCS: frozenset[str] = frozenset({"sum", "avg", "count", "min", "max", "first", "last"})
EVENT_TIME_FORMATS: frozenset[str] = frozenset({"auto", "iso8601", "epoch_millis", "epoch_seconds"})
OUTPUT_MODES: frozenset[str] = frozenset({"append", "update", "complete"})


@dataclass(frozen=True, slots=True)
class AggSpec:
    """One aggregate column of the result.

    Attributes:
        output: Name of the result column.
        column: Input field the aggregate reads; None means `*` (only with `count`).
        func: The aggregate function.
    """

    output: str
    column: str | None
    func: AggFunc

    def __post_init__(self) -> None:
        if self.func not in AGG_FUNCS:
            raise ValueError(f"aggregate {self.output!r}: unknown function {self.func!r}")
        if self.column is None and self.func != "count":
            raise ValueError(f"aggregate {self.output!r}: '*' is only allowed with count")

    @property
    def label(self) -> str:
        """The aggregate as written in the config, e.g. `amount:sum` or `*:count`."""
        return f"{self.column or '*'}:{self.func}"


@dataclass(frozen=True, slots=True)
class WindowSpec:
    """An event-time window, aligned to the Unix epoch.

    Attributes:
        size_ms: Window duration in milliseconds of event time.
        slide_ms: Distance between window starts in event-time milliseconds; equal to
            `size_ms` for a tumbling window, smaller for a sliding one.
    """

    size_ms: int
    slide_ms: int

    def __post_init__(self) -> None:
        if self.size_ms <= 0:
            raise ValueError(f"window size must be positive, got {self.size_ms} ms")
        if not 0 < self.slide_ms <= self.size_ms:
            raise ValueError(
                f"window slide must be in 1..size ({self.size_ms} ms), got {self.slide_ms} ms"
            )

    @property
    def tumbling(self) -> bool:
        """True when every event time falls in exactly one window."""
        return self.slide_ms == self.size_ms


@dataclass(frozen=True, slots=True)
class SessionSpec:
    """Session windows over event time (Spark's `session_window`), per group key.

    A session is a maximal run of a key's records whose event times are each less
    than `gap_ms` from the next one; it spans `[first event time, last event time +
    gap)`. Two records exactly `gap_ms` apart are in different sessions. The
    semantics, lateness and merging are in `streamproc.engine.sessions`.

    A field of its own on `QuerySpec`, beside `window`, rather than a kind of
    `WindowSpec`: code that reads `spec.window` relies on epoch-aligned windows of one
    size (end = start + size); a session has neither, so it must not pass for one.

    Attributes:
        gap_ms: The gap in event-time milliseconds.
    """

    gap_ms: int

    def __post_init__(self) -> None:
        if self.gap_ms <= 0:
            raise ValueError(f"session gap must be positive, got {self.gap_ms} ms")


@dataclass(frozen=True, slots=True)
class QuerySpec:
    """A streaming aggregation query.

    Attributes:
        group_by: Group-by columns; a missing column groups as None.
        aggregations: Result aggregates, in result-column order.
        output_mode: What the sink holds after each trigger (STREAMING.md, "Output modes").
        event_time_column: Field holding the event time; None means no event time, so no
            watermark and no window.
        event_time_format: How the event time is written.
        delay_ms: Watermark delay threshold in event-time milliseconds; None means no
            watermark (nothing is late, windows never close).
        window: The event-time window, or None for a non-windowed aggregation.
        idle_timeout_ms: Wall-clock time after which a partition without records is left
            out of the global watermark.
        state_timeout_ms: A key idle that long is evicted. Non-windowed: event time
            against the watermark when there is one, wall clock otherwise. Windowed
            (update or append mode, with a watermark): a (key, window) whose latest event
            time is that far behind W is evicted before its window closes, and later
            records for it are late (STREAMING.md, "stateTimeout on windows").
        jump_warning_ms: Report a record that moves its partition's max event time ahead
            by more than this (`BatchResult.jumps`); None: never.
        passthrough: No aggregation: each accepted record is one result row (append
            mode, no group-by, window or aggregates; see `engine.passthrough`).
        session: Session windows instead of fixed ones (`window` is then None); run by
            `SessionEngine`, not `Engine`.
    """

    group_by: tuple[str, ...]
    aggregations: tuple[AggSpec, ...]
    output_mode: OutputMode
    event_time_column: str | None = None
    event_time_format: EventTimeFormat = "auto"
    delay_ms: int | None = None
    window: WindowSpec | None = None
    idle_timeout_ms: int | None = None
    state_timeout_ms: int | None = None
    jump_warning_ms: int | None = None
    passthrough: bool = False
    session: SessionSpec | None = None

    def __post_init__(self) -> None:
        problems = _problems(self)
        if problems:
            raise ValueError("invalid query: " + "; ".join(problems))

    @property
    def windowed(self) -> bool:
        """True when results are per (key, window): fixed windows or sessions."""
        return self.window is not None or self.session is not None


def _problems(spec: QuerySpec) -> list[str]:
    if spec.passthrough:
        return _passthrough_problems(spec)
    out: list[str] = []
    if not spec.aggregations:
        out.append("at least one aggregation is needed")
    names = [a.output for a in spec.aggregations]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        out.append(f"duplicate output columns {dupes}")
    if len(set(spec.group_by)) != len(spec.group_by):
        out.append("duplicate group-by columns")
    clash = sorted(set(names) & set(spec.group_by))
    if clash:
        out.append(f"output columns {clash} clash with group-by columns")
    if spec.output_mode not in OUTPUT_MODES:
        out.append(f"unknown output mode {spec.output_mode!r}")
    if spec.event_time_format not in EVENT_TIME_FORMATS:
        out.append(f"unknown event time format {spec.event_time_format!r}")
    if spec.window is not None and spec.session is not None:
        out.append("a query has a window or sessions, not both")
    if spec.event_time_column is None:
        if spec.windowed:
            out.append("a window needs an event time column")
        if spec.delay_ms is not None:
            out.append("a watermark needs an event time column")
    if spec.delay_ms is not None and spec.delay_ms < 0:
        out.append(f"watermark delay must be >= 0, got {spec.delay_ms} ms")
    if spec.output_mode == "append" and (not spec.windowed or spec.delay_ms is None):
        out.append("append mode needs a window and a watermark")
    if spec.idle_timeout_ms is not None and spec.idle_timeout_ms <= 0:
        out.append(f"idle timeout must be positive, got {spec.idle_timeout_ms} ms")
    if spec.state_timeout_ms is not None:
        if spec.session is not None:
            out.append("a state timeout does not apply to sessions (the gap ends them)")
        if spec.window is not None and spec.delay_ms is None:
            out.append("a state timeout on a windowed aggregation needs a watermark")
        if spec.window is not None and spec.output_mode == "complete":
            out.append("a state timeout on a windowed aggregation needs update or append mode")
        if spec.state_timeout_ms <= 0:
            out.append(f"state timeout must be positive, got {spec.state_timeout_ms} ms")
    return out


def _passthrough_problems(spec: QuerySpec) -> list[str]:
    out: list[str] = []
    if spec.aggregations or spec.group_by or spec.windowed:
        out.append("a pass-through query has no aggregations, group-by or window")
    if spec.output_mode != "append":
        out.append("a pass-through query runs in append mode")
    if spec.state_timeout_ms is not None:
        out.append("a pass-through query keeps no state to time out")
    if spec.delay_ms is not None and spec.event_time_column is None:
        out.append("a watermark needs an event time column")
    return out

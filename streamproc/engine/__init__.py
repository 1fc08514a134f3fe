"""Pure event-time engine: time parsing, windows, sessions, aggregates, watermarks, emission.

No I/O but through the WindowStore port.
"""

from streamproc.engine.aggregates import MAX_ABS_NUMBER, finalize, merge_states
from streamproc.engine.engine import Engine, Record
from streamproc.engine.eventtime import (
    MAX_EVENT_TS_MS,
    MIN_EVENT_TS_MS,
    EventTimeError,
    event_time_parser,
    format_event_time,
    parse_event_time,
)
from streamproc.engine.passthrough import (
    PassThroughEngine,
    StreamEngine,
    engine_for,
    record_row,
)
from streamproc.engine.results import (
    EXPIRED_STATE,
    LATE_SESSION_CLOSED,
    LATE_STATE_EXPIRED,
    LATE_WATERMARK,
    LATE_WINDOW_CLOSED,
    BadRecord,
    BatchResult,
    Emission,
    LateRecord,
    PartialRow,
    PartitionProgress,
    ResultRow,
    WatermarkJump,
    WindowKey,
)
from streamproc.engine.session_engine import SessionEmission, SessionEngine
from streamproc.engine.sessions import MergedSession, SessionChange, merge_sessions, state_row_ops
from streamproc.engine.spec import (
    AggFunc,
    AggSpec,
    EventTimeFormat,
    OutputMode,
    QuerySpec,
    SessionSpec,
    WindowSpec,
)
from streamproc.engine.windows import open_window_starts, window_start, window_starts

__all__ = [
    "EXPIRED_STATE",
    "LATE_SESSION_CLOSED",
    "LATE_STATE_EXPIRED",
    "LATE_WATERMARK",
    "LATE_WINDOW_CLOSED",
    "MAX_ABS_NUMBER",
    "MAX_EVENT_TS_MS",
    "MIN_EVENT_TS_MS",
    "AggFunc",
    "AggSpec",
    "BadRecord",
    "BatchResult",
    "Emission",
    "Engine",
    "EventTimeError",
    "EventTimeFormat",
    "LateRecord",
    "MergedSession",
    "OutputMode",
    "PartialRow",
    "PartitionProgress",
    "PassThroughEngine",
    "QuerySpec",
    "Record",
    "ResultRow",
    "SessionChange",
    "SessionEmission",
    "SessionEngine",
    "SessionSpec",
    "StreamEngine",
    "WatermarkJump",
    "WindowKey",
    "WindowSpec",
    "engine_for",
    "event_time_parser",
    "finalize",
    "format_event_time",
    "merge_sessions",
    "merge_states",
    "open_window_starts",
    "parse_event_time",
    "record_row",
    "state_row_ops",
    "window_start",
    "window_starts",
]

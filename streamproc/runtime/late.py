"""Late and bad records: counting, summaries, dead-letter messages, rate-limited logs.

Pure except for logging: routing decisions are values (`OutgoingMessage`,
`LateRow`) that the query hands to the sinks.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from streamproc.engine import LateRecord
from streamproc.sinks.base import OutgoingMessage
from streamproc.sinks.rows import ms_to_datetime
from streamproc.sources.base import RawRecord

log = logging.getLogger("streamproc.late")


@dataclass(slots=True)
class LateSummary:
    """Late records seen by a run, for the closing summary line (event time)."""

    count: int = 0
    min_event_ts_ms: int | None = None
    max_event_ts_ms: int | None = None

    def add(self, record: LateRecord) -> None:
        """Count one late record."""
        self.count += 1
        ts = record.event_ts_ms
        if self.min_event_ts_ms is None or ts < self.min_event_ts_ms:
            self.min_event_ts_ms = ts
        if self.max_event_ts_ms is None or ts > self.max_event_ts_ms:
            self.max_event_ts_ms = ts

    def text(self) -> str:
        """The seed's words, with dates: a time alone hides a record from 2100.

        ``Late data: 142 record(s), event time range: 2025-11-26 10:15:00 to
        2025-11-26 10:18:00 UTC``.
        """
        if self.count == 0 or self.min_event_ts_ms is None or self.max_event_ts_ms is None:
            return "Late data: 0 record(s)"
        lo = ms_to_datetime(self.min_event_ts_ms)
        hi = ms_to_datetime(self.max_event_ts_ms)
        assert lo is not None and hi is not None
        fmt = "%Y-%m-%d %H:%M:%S"
        return (
            f"Late data: {self.count} record(s), event time range: "
            f"{lo.strftime(fmt)} to {hi.strftime(fmt)} UTC"
        )


class RateLimitedLog:
    """Logs at most `per_interval` lines per interval (wall time), then one tally."""

    def __init__(
        self,
        logger: logging.Logger,
        per_interval: int = 20,
        interval_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._logger = logger
        self._per_interval = per_interval
        self._interval_s = interval_s
        self._clock = clock
        self._window_start = clock()
        self._logged = 0
        self._suppressed = 0

    def warning(self, message: str, *args: object) -> None:
        """Log a line unless this interval's quota is spent."""
        now = self._clock()
        if now - self._window_start >= self._interval_s:
            if self._suppressed:
                self._logger.warning("%d more line(s) like these suppressed", self._suppressed)
            self._window_start, self._logged, self._suppressed = now, 0, 0
        if self._logged < self._per_interval:
            self._logged += 1
            self._logger.warning(message, *args)
        else:
            self._suppressed += 1


def _iso(ms: int | None) -> bytes:
    dt = ms_to_datetime(ms)
    return dt.isoformat().encode() if dt is not None else b""


def late_dlq_message(
    topic: str, source_topic: str, raw: RawRecord, late: LateRecord
) -> OutgoingMessage:
    """The original bytes of a late record, with headers saying where and why."""
    return OutgoingMessage(
        topic,
        raw.key,
        raw.value or b"",
        (
            ("source_topic", source_topic.encode()),
            ("source_partition", str(raw.partition).encode()),
            ("source_offset", str(raw.offset).encode()),
            ("event_time", _iso(late.event_ts_ms)),
            ("event_time_ms", str(late.event_ts_ms).encode()),
            ("partition_watermark", _iso(late.watermark_ms)),
            ("partition_watermark_ms", str(late.watermark_ms).encode()),
            ("reason", late.reason.encode()),
        ),
    )


def failed_record_dlq_message(
    topic: str,
    source_topic: str,
    raw: RawRecord,
    batch_id: str,
    start_offset: int,
    next_offset: int,
    error: str,
) -> OutgoingMessage:
    """The original bytes of a record the sink rejected, with its ledger batch and the error.

    ``batch_id``, ``batch_start_offset`` and ``batch_next_offset`` name the
    ledger row that records it as dead-lettered (FAULTS.md).
    """
    message = bad_dlq_message(topic, source_topic, raw, f"rejected by the sink: {error}")
    return OutgoingMessage(
        message.topic,
        message.key,
        message.value,
        (
            *message.headers,
            ("batch_id", batch_id.encode("utf-8", "replace")),
            ("batch_start_offset", str(start_offset).encode()),
            ("batch_next_offset", str(next_offset).encode()),
            ("error", error.encode("utf-8", "replace")),
        ),
    )


def bad_dlq_message(topic: str, source_topic: str, raw: RawRecord, reason: str) -> OutgoingMessage:
    """The original bytes of a bad record, with headers saying where and why."""
    return OutgoingMessage(
        topic,
        raw.key,
        raw.value or b"",
        (
            ("source_topic", source_topic.encode()),
            ("source_partition", str(raw.partition).encode()),
            ("source_offset", str(raw.offset).encode()),
            ("reason", reason.encode("utf-8", "replace")),
        ),
    )

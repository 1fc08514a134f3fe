"""Event-time outliers: records from the far future, watermark jumps, epoch seconds.

One record dated 2100 moves its partition's watermark to 2099, and every
later record of the partition is late. So:

* with `watermark.maxFutureSkew`, a record whose event time is further ahead
  of the time it was written to the topic (its Kafka timestamp, else the wall
  clock: the injected one the engine reads too) is a bad record, with the
  reason. The Kafka timestamp, not the wall clock at processing, is the
  reference so that a replay classifies the record the same way;
* a record that moves its partition's watermark ahead by more than
  `watermark.jumpWarning` (default 1 day) logs a warning naming it (rate
  limited; the engine reports such records, `BatchResult.jumps`);
* under `eventTimeFormat: auto`, integers are epoch milliseconds; integers
  that look like epoch seconds (1e8 to 1e11: 1973 to 5138 as seconds, days
  after 1970 as milliseconds) log one warning.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from streamproc.config.durations import format_duration_ms
from streamproc.engine import BatchResult, EventTimeError, event_time_parser, format_event_time
from streamproc.runtime.clock import wall_clock_ms
from streamproc.runtime.decode import UndecodableRecord
from streamproc.runtime.late import RateLimitedLog
from streamproc.runtime.plan import QueryPlan
from streamproc.sources.base import RawRecord
from streamproc.sources.position import Where, offset_where

log = logging.getLogger("streamproc.eventtime")

#: A decoded record: (partition, offset, object).
Decoded = tuple[int, int, dict[str, Any]]
_SECONDS_LOW, _SECONDS_HIGH = 100_000_000, 100_000_000_000
_UNITS = (
    (365.25 * 86_400_000, "years"),
    (86_400_000, "days"),
    (3_600_000, "hours"),
    (60_000, "minutes"),
    (1_000, "seconds"),
)


def about(ms: int) -> str:
    """A length of time in its largest unit, roughly: ``about(2_592_000_000) == '30 days'``."""
    for unit, name in _UNITS:
        if ms >= unit:
            count = ms / unit
            text = f"{count:.0f}" if count >= 10 else f"{count:.1f}".removesuffix(".0")
            return f"{text} {name}"
    return f"{ms} ms"


class EventTimeGuard:
    """Finds event-time outliers in each batch (see the module docstring)."""

    def __init__(
        self,
        plan: QueryPlan,
        clock_ms: Callable[[], int] = wall_clock_ms,
        where: Where = offset_where,
    ) -> None:
        """Args:
        plan: The query (its event-time column and format, watermark.maxFutureSkew).
        clock_ms: Wall clock in epoch milliseconds: the reference of a record
            without a Kafka timestamp.
        where: How a line names a record's position (the source's terms).
        """
        self._clock_ms = clock_ms
        self._where = where
        spec = plan.spec
        self._column = spec.event_time_column
        self._parse = event_time_parser(spec.event_time_format)
        self._skew = plan.max_future_skew_ms if self._column else None
        self._check_seconds = spec.event_time_format == "auto" and self._column is not None
        self._jumps = RateLimitedLog(log, per_interval=5, interval_s=60.0)

    def future(
        self, good: list[Decoded], raws: Sequence[RawRecord]
    ) -> tuple[list[Decoded], list[UndecodableRecord]]:
        """Split off records dated too far ahead of the time they were written."""
        skew, column = self._skew, self._column
        if skew is None or column is None or not good:
            return good, []
        written = {(r.partition, r.offset): r for r in raws}
        now = self._clock_ms()
        kept: list[Decoded] = []
        bad: list[UndecodableRecord] = []
        for p, offset, record in good:
            raw = written[(p, offset)]
            try:
                ts = self._parse(record.get(column))
            except EventTimeError:
                kept.append((p, offset, record))  # the engine says why it is bad
                continue
            reference = raw.timestamp if raw.timestamp > 0 else now
            if ts - reference > skew:
                bad.append(
                    UndecodableRecord(
                        raw,
                        f"{column}: {format_event_time(ts)} is "
                        f"{about(ts - reference)} ahead of the time the record "
                        f"was written ({format_event_time(reference)}); "
                        f"watermark.maxFutureSkew is {format_duration_ms(skew)}",
                    )
                )
            else:
                kept.append((p, offset, record))
        return kept, bad

    def check_jumps(self, result: BatchResult, good: Sequence[Decoded]) -> None:
        """Warn about records that moved their partition's watermark far ahead."""
        if not result.jumps:
            return
        values = {(p, offset): record for p, offset, record in good}
        column = self._column or ""
        for jump in result.jumps:
            record = values.get((jump.partition, jump.offset), {})
            self._jumps.warning(
                "%s (%s %r) moved the watermark %s ahead at once, from %s "
                "to %s: every later record of the partition older than that is late; if the "
                "record is wrong, set watermark.maxFutureSkew to make such records bad instead",
                self._where(jump.partition, jump.offset),
                column,
                record.get(column),
                about(jump.to_ms - jump.from_ms),
                format_event_time(jump.from_ms),
                format_event_time(jump.to_ms),
            )

    def check_seconds(self, good: Sequence[Decoded]) -> None:
        """Warn once when `auto` reads integers that look like epoch seconds as milliseconds."""
        if not self._check_seconds or not good:
            return
        column = self._column
        assert column is not None
        value = good[0][2].get(column)
        if type(value) is int and _SECONDS_LOW <= value < _SECONDS_HIGH:
            self._check_seconds = False
            log.warning(
                "%s: integer %d is read as epoch milliseconds (%s) under eventTimeFormat auto; "
                "if it is epoch seconds (%s), set watermark.eventTimeFormat to epoch_seconds",
                column,
                value,
                format_event_time(value),
                format_event_time(value * 1000),
            )

"""The pure layer of a batch job: decode, check and transform the input chunk by chunk.

`BatchCollector` takes the bounded input's records (each partition's, or file's, in
offset order), decodes them, applies the data-quality rules after extract, runs the
aggregation (the streaming engine without a watermark: `Engine` for fixed windows and
no window, `SessionEngine` for session windows) or keeps the records, and remembers
what the report and the dead letters need. It does no I/O: `job.py` reads the input,
loads the rows and sends the dead letters.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from streamproc.batch.plan import BatchPlan
from streamproc.batch.report import BatchReport
from streamproc.engine import Engine, ResultRow, SessionEngine
from streamproc.runtime.decode import decode_records
from streamproc.runtime.late import RateLimitedLog, bad_dlq_message
from streamproc.runtime.quality import QualityGate
from streamproc.sinks.base import DeadLetterRow, OutgoingMessage
from streamproc.sinks.layout import result_layout
from streamproc.sinks.load_rows import result_doc
from streamproc.sources.base import RawRecord
from streamproc.state.memory import memory_store_factory

if TYPE_CHECKING:  # load.py imports asyncpg: this layer stays free of it
    from streamproc.batch.load import Doc


class BatchFailedError(RuntimeError):
    """The job stopped (failFast, an abort rule, ...): one line, nothing loaded."""


class BatchCollector:
    """Decodes, checks and transforms the input chunk by chunk; remembers what to report."""

    def __init__(self, plan: BatchPlan, report: BatchReport) -> None:
        self._plan = plan
        self.report = report
        self.files: list[str] = []
        spec = plan.spec
        quality = plan.quality
        if spec is None:
            quality = quality.on_records_only()
        outputs = [a.output for a in spec.aggregations] if spec else []
        self._gate = QualityGate(quality, spec.group_by if spec else (), outputs)
        self._engine: Engine | SessionEngine | None = None
        if spec is not None and spec.session is not None:
            # No watermark: no session closes and no record is "session closed"
            # until the end, whose emit (complete mode) gives every session.
            self._engine = SessionEngine(spec, lambda: 0)
        elif spec is not None:
            self._engine = Engine(spec, memory_store_factory, lambda: 0)
        # A `unique` rule after extract is over the whole input (the job is one
        # batch), so the decoded records are held until the input ends.
        unique = any(r.rule_type == "unique" for r in quality.rules)
        hold = quality.active and quality.after_extract and unique
        self._held: tuple[list[Any], list[RawRecord]] | None = ([], []) if hold else None
        #: A file source: each file's identity (path and head digest), by file index.
        self.identities: list[str] = []
        self.records: list[RawRecord] = []  # no aggregation: the records to load
        self.fields: set[str] = set()
        self.letters: list[OutgoingMessage] = []
        self.dead_rows: list[DeadLetterRow] = []
        # At most 20 lines per 10 s, then a tally: a million bad lines must not
        # become a million log lines.
        self.log = RateLimitedLog(logging.getLogger("streamproc.dlq"))

    def where(self, partition: int, offset: int) -> str:
        """A record's position as the user reads it (file:line, or partition and offset)."""
        if self._plan.source_type == "file":
            return f"{self.files[partition]}:{offset + 1}"
        return f"partition {partition} offset {offset}"

    def add(self, raws: Sequence[RawRecord]) -> None:
        """Take one chunk of the input (each partition's records in offset order)."""
        self.report.read += len(raws)
        good, undecodable = decode_records(raws)
        for item in undecodable:
            self.bad(item.raw, item.reason)
        if self._held is not None:
            self._held[0].extend(good)
            self._held[1].extend(raws)
            return
        self._take(good, raws)

    def finish(self) -> None:
        """The end of the input: records held for a `unique` rule are taken now."""
        if self._held is not None:
            good, raws = self._held
            self._held = None
            self._take(good, raws)

    def _take(self, good: list[tuple[int, int, dict[str, Any]]], raws: Sequence[RawRecord]) -> None:
        kept, quarantined = self._gate.filter_records(good)
        self.report.filtered += len(quarantined)
        if quarantined:
            index = {(r.partition, r.offset): r for r in raws}
            for q in quarantined:
                self.dead_letter(index[(q.partition, q.offset)], q.reason)
        if self._engine is not None:
            result = self._engine.process(kept)
            self.report.used += result.aggregated
            if result.bad:
                index = {(r.partition, r.offset): r for r in raws}
                for b in result.bad:
                    self.bad(index[(b.partition, b.offset)], b.reason)
            return
        index = {(r.partition, r.offset): r for r in raws}
        keys = self._plan.upsert_keys if self._plan.write_mode == "upsert" else ()
        for partition, offset, obj in kept:
            raw = index[(partition, offset)]
            # A record without a key would merge into one NULL-key row: it is bad.
            keyless = next((k for k in keys if obj.get(k) is None), None)
            if keyless is not None:
                state = "missing" if keyless not in obj else "null"
                self.bad(raw, f"{keyless}: {state}; load.upsertKeys needs every key to upsert")
                continue
            self.records.append(raw)
            self.fields.update(obj)
            self.report.used += 1

    def bad(self, raw: RawRecord, reason: str) -> None:
        """Count a bad record; stop on it with failFast; else log or dead-letter it."""
        where = self.where(raw.partition, raw.offset)
        self.report.bad.append((where, reason))
        plan = self._plan
        if plan.fail_fast:
            raise BatchFailedError(
                f"bad record at {where}: {reason} (errorHandlingConfig.failFast: nothing loaded)"
            )
        if plan.dlq_type == "logging":
            self.log.warning("bad record: %s: %s", where, reason)
        self.dead_letter(raw, reason)

    def source_of(self, raw: RawRecord) -> tuple[str, RawRecord]:
        """Where a record's dead letter says it came from, and the record as it says so.

        A file's records are named by the file's identity (path and head digest) and
        the line: positions that stay the same when other files come and go.
        """
        if self._plan.source_type != "file":
            return self._plan.source_name, raw
        return self.identities[raw.partition], replace(raw, partition=0)

    def dead_letter(self, raw: RawRecord, reason: str) -> None:
        """A dead letter for dlqType kafka or postgresql (nothing for logging and none)."""
        self.letter_for(raw, reason, None, self.letters, self.dead_rows)

    def letter_for(
        self,
        raw: RawRecord,
        reason: str,
        error: str | None,
        letters: list[OutgoingMessage],
        rows: list[DeadLetterRow],
    ) -> None:
        """Add a record's dead letter, per dlqType, to `letters` (kafka) or `rows` (postgresql)."""
        plan = self._plan
        source, where = self.source_of(raw)
        if plan.dlq_type == "kafka" and plan.dlq_topic:
            letters.append(bad_dlq_message(plan.dlq_topic, source, where, reason))
        elif plan.dlq_type == "postgresql":
            rows.append(
                DeadLetterRow(
                    where.partition, where.offset, raw.key, raw.value, reason, error, source
                )
            )

    def rows(self) -> tuple[list[Doc], list[str]]:
        """The documents to load, and where each one came from (for refusals)."""
        plan, spec = self._plan, self._plan.spec
        if self._engine is None or spec is None:
            records = [(i, (r.value or b"").decode("utf-8")) for i, r in enumerate(self.records)]
            return records, [self.where(r.partition, r.offset) for r in self.records]
        rows = self._engine.emit().rows
        self._gate.check_rows(rows)
        layout = result_layout(spec, plan.table)
        docs: list[Doc] = []
        places: list[str] = []
        for row in rows:
            places.append(_describe(spec.group_by, row))
            try:
                docs.append((len(places) - 1, result_doc(layout, row)))
            except ValueError as exc:
                self.report.refused.append((places[-1], f"not storable as JSON: {exc}"))
        return docs, places


def _describe(group_by: Sequence[str], row: ResultRow) -> str:
    key = ", ".join(f"{c}={v!r}" for c, v in zip(group_by, row.key, strict=True))
    window = f" window_start_ms={row.window_start_ms}" if row.window_start_ms is not None else ""
    return f"result row ({key}){window}"

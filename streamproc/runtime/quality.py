"""Data-quality rules (dataQualityConfig), checked per micro-batch. Pure.

- After extract (`validateAfterExtract`): rules run on each decoded record.
  A record that breaks an `error` rule is, per `onFailure`: `continue` ->
  quarantined (to the DLQ like a bad record, the rule as its reason; counted
  in the ledger's `filtered`, logged); `warn` -> logged and kept; `abort` ->
  the query stops before the batch is written.
- After transform (`validateAfterTransform`): rules run on the result rows a
  batch emits (columns: group-by, window_start/window_end, aggregates; the
  window column stands for window_start). A row cannot be dropped without
  breaking the exactly-once accounting, so `continue` and `warn` log the
  violation and write the row; `abort` stops the query before the batch is
  written. Rows are this worker's merge: exact when it owns every partition.
- `warning` and `info` rules only log.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from streamproc.engine import QuerySpec
from streamproc.runtime.late import RateLimitedLog
from streamproc.sources.position import Where, offset_where

RuleType = Literal["not_null", "range", "unique", "pattern", "allowed_values"]
#: A JSON value as rules compare it: its type apart ("1" is not 1, true is not 1).
JsonKey = tuple[str, Any]


def json_key(value: Any) -> JsonKey:
    """A value's JSON identity: equal numbers are equal (1 == 1.0), types stay apart."""
    if isinstance(value, bool):
        return ("boolean", value)
    if isinstance(value, int | float):
        return ("number", value)
    if isinstance(value, str):
        return ("string", value)
    # null, objects and arrays: by their canonical JSON text
    return ("json", json.dumps(value, sort_keys=True))


def json_keys(values: Iterable[Any]) -> frozenset[JsonKey]:
    """The JSON identities of the values of an allowed_values rule."""
    return frozenset(json_key(v) for v in values)


@dataclass(frozen=True, slots=True)
class QualityRule:
    """One rule, resolved.

    Attributes:
        min, max: range bounds (inclusive).
        regex: pattern: the expression the whole value must match.
        allowed: allowed_values: the JSON identities allowed (`json_keys`).
        shown_values: allowed_values: the list as configured, for messages.
    """

    name: str
    rule_type: RuleType
    columns: tuple[str, ...]
    severity: Literal["error", "warning", "info"] = "error"
    min: float | None = None
    max: float | None = None
    regex: re.Pattern[str] | None = None
    allowed: frozenset[JsonKey] = field(default_factory=frozenset)
    shown_values: str = ""


def describe_rule(rule: QualityRule) -> str:
    """A rule as one phrase: its name, type, columns, parameters and severity."""
    params = []
    if rule.min is not None:
        params.append(f"min {rule.min:g}")
    if rule.max is not None:
        params.append(f"max {rule.max:g}")
    if rule.regex is not None:
        params.append(f"regex {rule.regex.pattern!r}")
    if rule.rule_type == "allowed_values":
        params.append(f"values {rule.shown_values}")
    shown = f" ({', '.join(params)})" if params else ""
    return f"{rule.name}: {rule.rule_type} on {', '.join(rule.columns)}{shown}, {rule.severity}"


@dataclass(frozen=True, slots=True)
class Quarantined:
    """A record an error rule took out of the stream (onFailure continue), and why.

    It goes to the DLQ like a bad record, with `reason` (which starts with the
    rule's name), and is counted in the ledger's `filtered`.
    """

    partition: int
    offset: int
    reason: str


def per_partition(quarantined: Sequence[Quarantined]) -> dict[int, int]:
    """How many records were quarantined in each partition."""
    counts: dict[int, int] = {}
    for q in quarantined:
        counts[q.partition] = counts.get(q.partition, 0) + 1
    return counts


@dataclass(frozen=True, slots=True)
class QualityPlan:
    """The rules of a query and when and how they act."""

    rules: tuple[QualityRule, ...] = ()
    on_failure: Literal["abort", "continue", "warn"] = "abort"
    after_extract: bool = False
    after_transform: bool = True
    window_column: str | None = None

    @property
    def active(self) -> bool:
        """True when some rule runs at some point."""
        return bool(self.rules) and (self.after_extract or self.after_transform)

    def on_records_only(self) -> QualityPlan:
        """The plan of a pipeline without aggregation: the records are the rows, so
        rules meant for either stage run on the records."""
        after = self.after_extract or self.after_transform
        return replace(self, after_extract=after, after_transform=False)


@dataclass(frozen=True, slots=True)
class Violation:
    """A record or row that broke a rule."""

    index: int
    rule: QualityRule
    reason: str

    @property
    def blocking(self) -> bool:
        """True for error-severity rules (the ones onFailure acts on)."""
        return self.rule.severity == "error"


def check(items: Sequence[Mapping[str, Any]], rules: Sequence[QualityRule]) -> list[Violation]:
    """Every violation of the rules by the items (records or rows), in item order."""
    out: list[Violation] = []
    for rule in rules:
        if rule.rule_type == "unique":
            out += _unique(items, rule)
            continue
        for i, item in enumerate(items):
            for column in rule.columns:
                reason = _violates(rule, column, item.get(column))
                if reason is not None:
                    out.append(Violation(i, rule, reason))
                    break
    out.sort(key=lambda v: v.index)
    return out


def _violates(rule: QualityRule, column: str, value: Any) -> str | None:
    label = f"rule {rule.name} ({rule.rule_type})"
    if rule.rule_type == "not_null":
        return f"{label}: {column} is null" if value is None else None
    if value is None:
        return None  # null is not_null's business
    if rule.rule_type == "pattern":
        return _mismatch(rule, label, column, value)
    if rule.rule_type == "allowed_values":
        if json_key(value) in rule.allowed:
            return None
        return f"{label}: {column} = {value!r} is not one of {rule.shown_values}"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"{label}: {column} = {value!r} is not a number"
    if rule.min is not None and value < rule.min:
        return f"{label}: {column} = {value!r} is below {rule.min:g}"
    if rule.max is not None and value > rule.max:
        return f"{label}: {column} = {value!r} is above {rule.max:g}"
    return None


def _mismatch(rule: QualityRule, label: str, column: str, value: Any) -> str | None:
    # Strings match as they are, numbers and booleans as their JSON text (Spark's
    # rlike casts to string the same way); objects and arrays never match.
    assert rule.regex is not None  # planning compiles it for every pattern rule
    if isinstance(value, dict | list):
        return f"{label}: {column} is a JSON {'object' if isinstance(value, dict) else 'array'}"
    text = value if isinstance(value, str) else json.dumps(value)
    if rule.regex.fullmatch(text) is None:
        return f"{label}: {column} = {value!r} does not match '{rule.regex.pattern}'"
    return None


def _unique(items: Sequence[Mapping[str, Any]], rule: QualityRule) -> list[Violation]:
    seen: set[tuple[Any, ...]] = set()
    out = []
    for i, item in enumerate(items):
        key = tuple(repr(item.get(c)) for c in rule.columns)
        if key in seen:
            shown = ", ".join(f"{c}={item.get(c)!r}" for c in rule.columns)
            out.append(Violation(i, rule, f"rule {rule.name} (unique): {shown} repeats"))
        seen.add(key)
    return out


def row_view(
    group_by: Sequence[str],
    outputs: Sequence[str],
    key: Sequence[Any],
    window_start_ms: int | None,
    window_end_ms: int | None,
    values: Sequence[Any],
    window_column: str | None,
) -> dict[str, Any]:
    """A result row as the mapping after-transform rules see."""
    row: dict[str, Any] = dict(zip(group_by, key, strict=True))
    if window_start_ms is not None:
        row["window_start"] = window_start_ms
        row["window_end"] = window_end_ms
        if window_column:
            row[window_column] = window_start_ms
    row.update(zip(outputs, values, strict=True))
    return row


class QualityAbortError(RuntimeError):
    """An error-severity rule failed and onFailure is abort: stop before writing."""


class QualityGate:
    """Applies a QualityPlan to a batch's records and to its result rows.

    Logging is rate limited (wall time); everything else is pure.
    """

    def __init__(
        self,
        plan: QualityPlan,
        group_by: Sequence[str],
        outputs: Sequence[str],
        where: Where = offset_where,
    ) -> None:
        self._plan = plan
        self._where = where
        self._group_by = tuple(group_by)
        self._outputs = tuple(outputs)
        self._log = RateLimitedLog(logging.getLogger("streamproc.quality"))

    @classmethod
    def of(cls, plan: QualityPlan, spec: QuerySpec, where: Where = offset_where) -> QualityGate:
        """The gate of a query: its rules, group columns and aggregate outputs."""
        return cls(plan, spec.group_by, [a.output for a in spec.aggregations], where)

    def filter_records(
        self, records: list[tuple[int, int, dict[str, Any]]]
    ) -> tuple[list[tuple[int, int, dict[str, Any]]], list[Quarantined]]:
        """After-extract rules: the records kept, and the ones quarantined (in input order).

        A record breaking several error rules is quarantined once, for the first.

        Raises:
            QualityAbortError: an error rule failed and onFailure is abort.
        """
        plan = self._plan
        if not (plan.active and plan.after_extract) or not records:
            return records, []
        violations = check([r[2] for r in records], plan.rules)
        if not violations:
            return records, []
        drop: dict[int, Quarantined] = {}
        for v in violations:
            partition, offset, _ = records[v.index]
            where = self._where(partition, offset)
            if v.blocking and plan.on_failure == "abort":
                raise QualityAbortError(f"data quality: {where}: {v.reason} (onFailure: abort)")
            if v.blocking and plan.on_failure == "continue":
                if v.index not in drop:
                    drop[v.index] = Quarantined(partition, offset, v.reason)
                    self._log.warning("record quarantined: %s: %s", where, v.reason)
            else:
                self._log.warning("record kept: %s: %s", where, v.reason)
        kept = [r for i, r in enumerate(records) if i not in drop]
        return kept, [drop[i] for i in sorted(drop)]

    def check_rows(self, rows: Sequence[Any]) -> None:
        """After-transform rules on result rows: log, or raise QualityAbortError on abort."""
        plan = self._plan
        if not (plan.active and plan.after_transform) or not rows:
            return
        views = [
            row_view(
                self._group_by,
                self._outputs,
                r.key,
                r.window_start_ms,
                r.window_end_ms,
                r.values,
                plan.window_column,
            )
            for r in rows
        ]
        for v in check(views, plan.rules):
            where = f"result row {dict(zip(self._group_by, rows[v.index].key, strict=True))}"
            if v.blocking and plan.on_failure == "abort":
                raise QualityAbortError(f"data quality: {where}: {v.reason} (onFailure: abort)")
            self._log.warning("result row written despite: %s: %s", where, v.reason)

"""Load and validate a pipeline config: read, interpolate, parse, cross-check, report."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from streamproc.config.errors import ConfigError
from streamproc.config.interpolation import interpolate
from streamproc.config.messages import expected, join_path
from streamproc.config.parsing import translate, validate_sections
from streamproc.config.pipeline import PipelineConfig
from streamproc.config.semantic import Draft, check

log = logging.getLogger("streamproc.config")

ConfigSource = str | os.PathLike[str] | Mapping[str, Any]


@dataclass(frozen=True)
class ValidationReport:
    """The outcome of :func:`validate_config`.

    Attributes:
        config: the parsed config, or None when there is any error.
        errors: one line per problem: ``<path>: <what is wrong>; <what is accepted>``.
        warnings: one line per warning (accepted, but worth knowing).
    """

    config: PipelineConfig | None
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when the config is valid (warnings allowed)."""
        return not self.errors


class _SourceError(Exception):
    """The document could not be read or is not a JSON object; the message is one line."""


class _DuplicateKey(ValueError):
    pass


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # json.loads keeps the last of two equal keys; a config must not silently lose one.
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key)
        out[key] = value
    return out


def _read(source: ConfigSource) -> dict[str, Any]:
    if isinstance(source, Mapping):
        document: Any = dict(source)
    else:
        # Errors name the file as it was given ("./x.json", not pathlib's "x.json"),
        # so that callers can tell the name is already there and not repeat it.
        path = str(source)
        try:
            text = Path(source).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise _SourceError(f"{path}: cannot read the file: {reason}") from None
        try:
            document = json.loads(text, object_pairs_hook=_reject_duplicates)
        except json.JSONDecodeError as exc:
            raise _SourceError(
                f"{path}: not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}"
            ) from None
        except _DuplicateKey as exc:
            raise _SourceError(f"{path}: key '{exc}' appears twice in one object") from None
    if not isinstance(document, dict):
        raise _SourceError(f"(top level): {expected('an object', document)}")
    return document


def validate_config(source: ConfigSource, env: Mapping[str, str] | None = None) -> ValidationReport:
    """Validate a pipeline config and report every problem at once.

    Args:
        source: a path to a JSON file, or the already-parsed JSON object.
        env: variables for ``${NAME}`` references (default: ``os.environ``).

    Returns:
        A report with the config (when valid), the errors and the warnings. Never
        raises for a bad config; an unreadable file or invalid JSON is one error.
    """
    try:
        document = _read(source)
    except _SourceError as exc:
        return ValidationReport(None, [str(exc)], [])
    data, env_problems = interpolate(document, os.environ if env is None else env)
    env_paths = {p.path for p in env_problems}
    sections = validate_sections(PipelineConfig, data)
    # An unresolved reference explains whatever its raw text then fails.
    problems = env_problems + [p for p in sections.problems if p.path not in env_paths]
    findings = check(Draft.of(sections.values, sections.failed | env_paths))
    problems += findings.errors
    warnings = _spark_only_warning(sections.values) + findings.warnings
    if problems:
        return ValidationReport(None, [str(p) for p in problems], warnings)
    try:
        config = PipelineConfig.model_validate(data)
    except ValidationError as exc:  # pragma: no cover - the checks above are the same
        return ValidationReport(None, [str(translate(e)) for e in exc.errors()], warnings)
    return ValidationReport(config, [], warnings)


def load_config(source: ConfigSource, env: Mapping[str, str] | None = None) -> PipelineConfig:
    """Load a pipeline config, or raise with every problem.

    Warnings (such as ignored Spark-only keys) are logged on ``streamproc.config``.

    Args:
        source: a path to a JSON file, or the already-parsed JSON object.
        env: variables for ``${NAME}`` references (default: ``os.environ``).

    Returns:
        The parsed config.

    Raises:
        ConfigError: the config is invalid; ``errors`` holds one line per problem.
    """
    report = validate_config(source, env)
    if report.config is None:
        raise ConfigError(report.errors, report.warnings)
    for warning in report.warnings:
        log.warning("%s", warning)
    return report.config


def _spark_only_warning(values: Mapping[str, Any]) -> list[str]:
    keys: list[str] = []
    for name, field_info in PipelineConfig.model_fields.items():
        if name in values:
            keys += _spark_only_keys(values[name], field_info.alias or name)
    if not keys:
        return []
    return [f"Spark-only keys accepted and ignored (no effect in streamproc): {', '.join(keys)}"]


def _spark_only_keys(value: Any, path: str) -> list[str]:
    """Paths of the Spark-only keys present in a parsed value (see ``base.spark_only``)."""
    if isinstance(value, tuple):
        return [k for i, item in enumerate(value) for k in _spark_only_keys(item, f"{path}[{i}]")]
    if not isinstance(value, BaseModel):
        return []
    keys: list[str] = []
    for name, field_info in type(value).model_fields.items():
        child = join_path(path, field_info.alias or name)
        if field_info.deprecated:
            keys += [child] if name in value.model_fields_set else []
        else:
            keys += _spark_only_keys(getattr(value, name), child)
    return keys

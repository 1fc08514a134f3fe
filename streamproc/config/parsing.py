"""Validate a config section by section, in the house format, salvaging what parsed.

Pydantic reports every field error of a value in one pass, but a model with one
bad field produces no model at all, and the cross-field checks need models. So
each top-level section is validated on its own; when it fails, the failing values
are dropped (the nearest enclosing key that has a default, or the whole list for
an item of a list, so that indexes in messages stay true) and the section is
validated again, to obtain a model for the cross-field checks. The dropped paths
are recorded so that those checks skip what they would read from a stand-in.
"""

from __future__ import annotations

import copy
import functools
import types
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, TypeAdapter, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails

from streamproc.config.messages import Problem, expected, format_path, unknown_key

Loc = tuple[str | int, ...]

# Enough for the deepest nesting of the format; each round drops at least one key.
_MAX_ROUNDS = 8

_EXPECTED = {
    "model_type": "an object",
    "model_attributes_type": "an object",
    "dict_type": "an object",
    "string_type": "a string",
    "list_type": "a list",
    "tuple_type": "a list",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "int_type": "an integer",
    "int_parsing": "an integer",
    "float_type": "a number",
    "float_parsing": "a number",
}


@dataclass(frozen=True)
class SectionsResult:
    """The outcome of validating each top-level key of a document.

    Attributes:
        values: field name -> parsed value (or the field's default when absent);
            a field whose section failed entirely is missing.
        problems: every problem found, in document order of the model's fields.
        failed: rendered paths of the values that failed or were dropped.
    """

    values: dict[str, Any]
    problems: list[Problem]
    failed: frozenset[str]


def validate_sections(model: type[BaseModel], data: Mapping[str, Any]) -> SectionsResult:
    """Validate each top-level key of ``data`` against the matching field of ``model``.

    The model's own validators (the cross-field checks of the root) are not run.
    """
    problems: list[Problem] = []
    failed: set[str] = set()
    values: dict[str, Any] = {}
    fields = {_key(name, f): (name, f) for name, f in model.model_fields.items()}
    for key in data:
        if key not in fields:
            problems.append(Problem(key, _unknown_key_text(model, key)))
            failed.add(key)
    for key, (name, field_info) in fields.items():
        if key not in data:
            if field_info.is_required():
                problems.append(Problem(key, "required key is missing"))
                failed.add(key)
            else:
                values[name] = field_info.get_default(call_default_factory=True)
            continue
        value, found, dropped = _validate_value(_field_type(field_info), data[key], (key,))
        problems.extend(found)
        failed.update(dropped)
        if format_path((key,)) not in dropped:
            values[name] = value
    return SectionsResult(values, problems, frozenset(failed))


def translate(error: ErrorDetails, prefix: Loc = (), root: Any = None) -> Problem:
    """Turn one pydantic error into a house-format problem.

    Args:
        error: the error as given by ``ValidationError.errors()``.
        prefix: the location of the validated value in the document.
        root: the type that was validated, to find the accepted keys of an unknown key.
    """
    loc = tuple(part for part in error["loc"] if part != "[key]")
    path = format_path(prefix + loc)
    kind = error["type"]
    if kind == "streamproc":
        return Problem(path, str((error.get("ctx") or {})["message"]))
    if kind == "extra_forbidden":
        model = _model_class(_type_at(root, loc[:-1]))
        if model is not None:
            return Problem(path, _unknown_key_text(model, str(loc[-1])))
        return Problem(path, "unknown key")
    if kind == "missing":
        return Problem(path, "required key is missing")
    if kind == "string_too_short":
        return Problem(path, "must not be empty")
    if kind in _EXPECTED:
        return Problem(path, expected(_EXPECTED[kind], error["input"]))
    # Not expected from the models of this package; keep the first line only, so
    # that even an unforeseen message stays one line and carries no URL.
    return Problem(path, error["msg"].splitlines()[0])


def _key(name: str, field_info: FieldInfo) -> str:
    return field_info.alias or name


def _unknown_key_text(model: type[BaseModel], key: str) -> str:
    live = [_key(n, f) for n, f in model.model_fields.items() if not f.deprecated]
    spark = [_key(n, f) for n, f in model.model_fields.items() if f.deprecated]
    extra = list(getattr(model, "extra_keys", ()))
    return unknown_key(key, [*live, *spark, *extra], listed=[*live, *extra])


def _field_type(field_info: FieldInfo) -> Any:
    # A field's constraints live in its metadata; put them back on the annotation
    # so the field can be validated on its own.
    if not field_info.metadata:
        return field_info.annotation
    return Annotated[(field_info.annotation, *field_info.metadata)]


@functools.cache
def _adapter(tp: Any) -> TypeAdapter[Any]:
    return TypeAdapter(tp)


def _validate_value(tp: Any, raw: Any, prefix: Loc) -> tuple[Any, list[Problem], set[str]]:
    adapter = _adapter(tp)
    try:
        return adapter.validate_python(raw), [], set()
    except ValidationError as exc:
        errors = exc.errors()
    problems = [translate(e, prefix, tp) for e in errors]
    work = copy.deepcopy(raw)
    dropped: set[str] = set()
    for _ in range(_MAX_ROUNDS):
        for error in errors:
            target = _drop_target(tp, tuple(p for p in error["loc"] if p != "[key]"))
            if target is None:
                return None, problems, dropped | {format_path(prefix)}
            _delete(work, target)
            dropped.add(format_path(prefix + target))
        try:
            return adapter.validate_python(work), problems, dropped
        except ValidationError as exc:
            errors = exc.errors()
    return None, problems, dropped | {format_path(prefix)}


def _drop_target(tp: Any, loc: Loc) -> Loc | None:
    """The deepest key on ``loc`` that can be dropped without a new error, if any.

    That is a key with a default, an unknown key, or an entry of a string map. An
    item of a list is never dropped alone: later items would change index.
    """
    target: Loc | None = None
    current = tp
    for depth, part in enumerate(loc):
        if isinstance(part, int):
            return target
        model = _model_class(current)
        if model is None:
            return loc[: depth + 1] if _is_mapping(current) else target
        field_info = _field_by_key(model, part)
        if field_info is None:
            return loc[: depth + 1]
        if not field_info.is_required():
            target = loc[: depth + 1]
        current = _field_type(field_info)
    return target


def _delete(data: Any, loc: Loc) -> None:
    for part in loc[:-1]:
        if isinstance(data, dict) and isinstance(part, str):
            data = data.get(part)
        elif isinstance(data, list) and isinstance(part, int) and part < len(data):
            data = data[part]
        else:
            return
    if isinstance(data, dict):
        data.pop(loc[-1], None)


def _type_at(tp: Any, loc: Loc) -> Any:
    """The declared type of the value at ``loc`` inside a value of type ``tp``."""
    current = tp
    for part in loc:
        inner = _strip(current)
        model = _model_class(inner)
        if model is not None and isinstance(part, str):
            field_info = _field_by_key(model, part)
            if field_info is None:
                return None
            current = _field_type(field_info)
        elif isinstance(part, int) and get_origin(inner) in (tuple, list):
            current = get_args(inner)[0]
        else:
            return None
    return current


def _strip(tp: Any) -> Any:
    """Remove ``Annotated`` and ``| None`` around a type."""
    while True:
        origin = get_origin(tp)
        if origin is Annotated:
            tp = get_args(tp)[0]
        elif origin in (Union, types.UnionType):
            rest = [a for a in get_args(tp) if a is not type(None)]
            if len(rest) != 1:
                return tp
            tp = rest[0]
        else:
            return tp


def _model_class(tp: Any) -> type[BaseModel] | None:
    inner = _strip(tp)
    if isinstance(inner, type) and issubclass(inner, BaseModel):
        return inner
    return None


def _is_mapping(tp: Any) -> bool:
    return get_origin(_strip(tp)) in (dict, Mapping)


def _field_by_key(model: type[BaseModel], key: str | int) -> FieldInfo | None:
    for name, field_info in model.model_fields.items():
        if _key(name, field_info) == key:
            return field_info
    return None

"""CONFIG.md, the config reference, generated from the pydantic models.

The models are the one source: each key's JSON path, type, default and accepted
values come from its field, and its description from the ``Attributes:`` section
of its model's docstring (Google style; ``a, b: text`` describes two fields). A
field without a description is an error here, so the reference cannot silently
miss a key. Regenerate the committed file after changing a model::

    python -m streamproc.config.reference_doc > CONFIG.md      # or: make docs

``tests/unit/test_config_doc.py`` fails while CONFIG.md differs from this output.
"""

from __future__ import annotations

import inspect
import re
import sys
import types
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo

from streamproc.config.base import SPARK_ONLY, ConfigModel
from streamproc.config.durations import format_duration_ms
from streamproc.config.fields import Choice, DurationMs, Flag, HouseType, Number, WholeNumber
from streamproc.config.ignored import IGNORED_OPTIONS
from streamproc.config.messages import join_path
from streamproc.config.pipeline import PipelineConfig

REGENERATE = "python -m streamproc.config.reference_doc > CONFIG.md"

_HEAD = """\
# Pipeline config reference

<!-- Generated from the models in streamproc/config/ by
     `{regenerate}` (or `make docs`); do not edit by hand. -->

A pipeline config is one JSON object. streamproc reads the configs of the Spark
ETL framework it replaces unchanged; keys marked **NEW** are streamproc's own.
`streamproc validate CONFIG` checks one and reports every problem at once, one
line each (path, value, what is accepted); `streamproc schema` prints the JSON
Schema editors complete keys from. How the settings behave at run time is in
[STREAMING.md](STREAMING.md).

**Spelling.** Keys are exactly as shown (camelCase): an unknown key is an error
with a did-you-mean, so a typo never changes behaviour silently. Words chosen
from a list (`outputMode`, `strategy`, ...) are case-insensitive. Integers and
numbers may be written as JSON numbers or as strings holding one (`"10000"`),
booleans as `true`/`false` or `"true"`/`"false"`.

**Durations** are `<number> <unit>`, unit one of ms, millisecond(s), s, sec(s),
second(s), min(s), minute(s), h, hour(s), d, day(s), in any case (`"10 minutes"`,
`"1.5 s"`); a whole number of milliseconds above zero. Months and years are not
durations: a window has one fixed length. Windows and watermark delays are in
event time, triggers, retries and timeouts in wall time.

**Values from the environment.** Any string value may hold `${{NAME}}` or
`${{NAME:-default}}`, filled from the environment when the config loads (so
passwords stay out of files); an unset name without a default is an error that
names it. The example configs use `${{STREAMPROC_KAFKA_BOOTSTRAP:-localhost:9092}}`
and `${{STREAMPROC_PG_DSN:-...}}`.

**Required** keys say so in the default column; a section that is absent takes the
defaults of its keys. Relations between keys (a `dlqTopic` when the strategy needs
one, `slideDuration` <= `windowDuration`, a watermark for append mode, ...) are
checked by `validate` and named in its messages.
"""


@dataclass(frozen=True)
class Key:
    """One row of the reference.

    Attributes:
        path: the JSON path (``streamingConfigJson.watermark.delayThreshold``).
        key: the last key of the path (``delayThreshold``).
        kind: the type and accepted values, in words.
        default: the default in the config's notation, or 'required'.
        text: the description.
        spark_only: accepted for compatibility and ignored.
    """

    path: str
    key: str
    kind: str
    default: str
    text: str
    spark_only: bool


@dataclass(frozen=True)
class Section:
    """One model: its JSON path, its summary and its keys."""

    path: str
    summary: str
    keys: tuple[Key, ...]


def field_docs(model: type[BaseModel]) -> dict[str, str]:
    """Field name -> description, from the ``Attributes:`` section of the model's docstring."""
    doc = inspect.cleandoc(model.__doc__ or "")
    _, found, rest = doc.partition("\nAttributes:\n")
    if not found:
        return {}
    docs: dict[str, str] = {}
    names: list[str] = []
    for line in rest.splitlines():
        entry = re.fullmatch(r" {4}([a-z_][a-z0-9_, ]*):(?: (.*))?", line)
        if entry:
            names = [n.strip() for n in entry.group(1).split(",")]
            for name in names:
                docs[name] = (entry.group(2) or "").strip()
        elif line.startswith("        ") and names:
            for name in names:
                docs[name] += " " + line.strip()
        elif line.strip():
            break  # the section ended (another heading)
    return {name: _markdown(text.strip()) for name, text in docs.items()}


def _markdown(text: str) -> str:
    # reST roles and double backquotes to Markdown code.
    text = re.sub(r":(?:class|attr|func|meth):`~?([^`]+)`", r"`\1`", text)
    return text.replace("``", "`").replace("|", "\\|")


def _summary(model: type[BaseModel]) -> str:
    first = inspect.cleandoc(model.__doc__ or "").split("\n\n")[0]
    # The summary starts with the key it documents (``load``: ...); the heading says it.
    text = _markdown(re.sub(r"^``[^`]+``: ", "", " ".join(first.split())))
    return text[:1].upper() + text[1:]


def _parts(field: FieldInfo) -> tuple[Any, list[Any]]:
    """(the base type, the field's metadata), looking through ``X | None`` and ``Annotated``."""
    annotation, metadata = field.annotation, list(field.metadata)
    if get_origin(annotation) in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        annotation = args[0] if len(args) == 1 else annotation
    if get_origin(annotation) is Annotated:
        annotation, *more = get_args(annotation)
        metadata += more
    return annotation, metadata


def _house_kind(house: HouseType) -> str:
    if isinstance(house, Choice):
        words = ", ".join(f"`{v}`" for v in house.values)
        aliases = ", ".join(f"`{a}` = `{c}`" for a, c in house.aliases)
        extra = f"; also {aliases}" if aliases else ""
        separators = ", `_` and `-` ignored" if house.ignore_separators else ""
        return f"one of {words} (any case{separators}{extra})"
    if isinstance(house, WholeNumber):
        top = f" to {house.maximum}" if house.maximum is not None else " or more"
        return f"integer, {house.minimum}{top}"
    if isinstance(house, Number):
        return "number > 0" if house.positive else "number"
    if isinstance(house, Flag):
        return "boolean"
    if isinstance(house, DurationMs):
        return "duration"
    described = house.schema().get("description")
    if isinstance(described, str):  # the trigger and the aggregations say what they take
        return described.removeprefix("expected ")
    first = inspect.cleandoc(type(house).__doc__ or "").split("\n\n")[0]
    return re.sub(r"^An? ", "", _markdown(" ".join(first.split()))).rstrip(".")


def _kind(field: FieldInfo, link: str | None) -> str:
    if field.deprecated:
        return "any"
    base, metadata = _parts(field)
    house = next((m for m in metadata if isinstance(m, HouseType)), None)
    if house is not None:
        kind = _house_kind(house)
    elif link is not None:
        kind = f"object ([below]({link}))"
        if get_origin(base) is tuple:
            kind = f"list of objects ([below]({link}))"
    elif base in (str, SecretStr):  # a secret is a string kept out of logs and reprs
        kind = "string"
    elif get_origin(base) is tuple:
        kind = "list of JSON values"
    else:  # pragma: no cover - every field type of the format is handled above
        raise ValueError(f"no description of the type {base!r}")
    return kind


def _default(field: FieldInfo, metadata: list[Any]) -> str:
    if field.is_required():
        return "required"
    extra = field.json_schema_extra
    if isinstance(extra, dict) and "default" in extra:
        return f"`{extra['default']}`"
    if field.default_factory is not None:
        return "see below" if _model_of(field) is not None else "`{}`"
    value = field.default
    if value is None:
        return "none"
    if value == ():
        return "`[]`"
    if any(isinstance(m, DurationMs) for m in metadata) and isinstance(value, int):
        value = format_duration_ms(value)
    if isinstance(value, bool):
        value = "true" if value else "false"
    return f"`{value}`"


def _model_of(field: FieldInfo) -> type[ConfigModel] | None:
    base, _ = _parts(field)
    if get_origin(base) is tuple:
        base = get_args(base)[0]
    return base if isinstance(base, type) and issubclass(base, ConfigModel) else None


def _anchor(path: str) -> str:
    return "#" + re.sub(r"[^a-z0-9 _-]", "", path.lower()).replace(" ", "-")


def sections(model: type[ConfigModel] = PipelineConfig, path: str = "") -> Iterator[Section]:
    """Each model reachable from ``model``, depth first, with its keys.

    Raises:
        ValueError: a field has no description in its model's docstring.
    """
    docs = field_docs(model)
    keys: list[Key] = []
    nested: list[tuple[type[ConfigModel], str]] = []
    for name, field in model.model_fields.items():
        key_path = join_path(path, field.alias or name)
        child = _model_of(field)
        child_path = key_path + ("[]" if get_origin(_parts(field)[0]) is tuple else "")
        if child is not None:
            nested.append((child, child_path))
        text = docs.get(name)
        if text is None:
            raise ValueError(f"{model.__name__}.{name} ({key_path}) has no description")
        _, metadata = _parts(field)
        keys.append(
            Key(
                key_path,
                field.alias or name,
                _kind(field, _anchor(f"`{child_path}`") if child else None),
                _default(field, metadata),
                text,
                field.deprecated == SPARK_ONLY,
            )
        )
    for extra in model.extra_keys:
        keys.append(Key(join_path(path, extra), extra, "string", "none", _extra_doc(extra), False))
    yield Section(path, _summary(model), tuple(keys))
    for child, child_path in nested:
        yield from sections(child, child_path)


def _extra_doc(key: str) -> str:
    return (
        f"NEW; passed to the Kafka client (`{key}`), for secured clusters; the "
        "dead-letter producer and a Kafka sink use the same settings"
    )


def _row(*cells: str) -> str:
    return "| " + " | ".join(cells) + " |"


def render() -> str:
    """CONFIG.md as committed."""
    out = [_HEAD.format(regenerate=REGENERATE)]
    all_sections = list(sections())
    spark_only = [k for s in all_sections for k in s.keys if k.spark_only]
    for section in all_sections:
        title = f"`{section.path}`" if section.path else "Top level"
        out.append(f"## {title}\n\n{section.summary}\n")
        honoured = [k for k in section.keys if not k.spark_only]
        if honoured:
            out.append(_row("key", "type and accepted values", "default", "what it does"))
            out.append(_row("---", "---", "---", "---"))
        for key in honoured:
            out.append(_row(f"`{key.path}`", key.kind, key.default, key.text))
        ignored = ", ".join(f"`{k.key}`" for k in section.keys if k.spark_only)
        if ignored:
            below = "([below](#accepted-and-ignored))"
            out.append(f"\nSpark-only, accepted and ignored {below}: {ignored}.")
        out.append("")
    out.append("## Accepted and ignored\n")
    out.append(
        "A config written for Spark loads unchanged, so these keys are accepted; none of\n"
        "them changes what a run does. `validate` and every run warn once per key given,\n"
        "saying what streamproc does instead:\n"
    )
    out.append(_row("key", "ignored in", "what streamproc does instead"))
    out.append(_row("---", "---", "---"))
    for option in IGNORED_OPTIONS:
        mode = {"any": "both modes", "batch": "batch mode"}.get(option.mode, "streaming mode")
        out.append(_row(f"`{option.path}`", mode, option.instead))
    for key in spark_only:
        instead = key.text.removeprefix("Spark-only: ")
        out.append(_row(f"`{key.path}`", "both modes (Spark-only)", instead))
    out.append(
        "\nThe Spark-only keys share one warning line: `Spark-only keys accepted and ignored\n"
        "(no effect in streamproc): ...`. A `streamingConfigJson` in batch mode is ignored\n"
        "whole, with one warning.\n"
    )
    return "\n".join(out)


def main() -> int:
    """Print CONFIG.md on stdout."""
    sys.stdout.write(render())
    return 0


if __name__ == "__main__":
    sys.exit(main())

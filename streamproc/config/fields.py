"""Field types of the config: parse one JSON value, fail with one house-format line.

Each type is a small frozen dataclass used as ``Annotated`` metadata, e.g.
``Annotated[int, DurationMs()]``. It gives pydantic a plain validator (so the error
text is ours, never pydantic's), a serializer that writes the value back in the
config's own notation, and a JSON Schema fragment for editors. Every fragment also
admits a ``${NAME}`` reference, since references are resolved before validation.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, get_args

from pydantic import GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import PydanticCustomError, PydanticKnownError, core_schema
from typing_extensions import override

from streamproc.config.durations import (
    DURATION_HELP,
    case_insensitive,
    duration_pattern,
    format_duration_ms,
    parse_duration_ms,
)
from streamproc.config.interpolation import REFERENCE_PATTERN
from streamproc.config.messages import expected, render

_WHOLE = re.compile(r"\s*[+-]?\d+\s*")
_NUMBER = re.compile(r"\s*[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?\s*")
_REFERENCE_SCHEMA = {"type": "string", "pattern": REFERENCE_PATTERN}


def house_error(message: str) -> PydanticCustomError:
    """A pydantic error whose message is exactly ``message`` (braces and all)."""
    # The message goes through the context: as a template, the braces of
    # "${NAME:-default}" would be taken for placeholders.
    return PydanticCustomError("streamproc", "{message}", {"message": message})


def as_string(value: Any) -> str:
    """``value`` if it is a string, else ValueError('expected a string, got ...')."""
    if not isinstance(value, str):
        raise ValueError(expected("a string", value))
    return value


@dataclass(frozen=True)
class HouseType:
    """Base of the field types: subclasses define ``parse`` and ``schema``, maybe ``dump``."""

    def parse(self, value: Any) -> Any:
        """Turn the JSON value into the typed value; raise ValueError(one line) if bad."""
        raise NotImplementedError

    def dump(self, value: Any) -> Any:
        """Write the typed value back in the config's notation (used by ``model_dump``)."""
        return value

    def schema(self) -> dict[str, Any]:
        """The JSON Schema of the raw value."""
        raise NotImplementedError

    def _validate(self, value: Any) -> Any:
        try:
            return self.parse(value)
        except (PydanticCustomError, PydanticKnownError):
            raise
        except ValueError as exc:
            raise house_error(str(exc)) from None

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.no_info_plain_validator_function(
            self._validate,
            serialization=core_schema.plain_serializer_function_ser_schema(self.dump),
        )

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return {"anyOf": [self.schema(), _REFERENCE_SCHEMA]}


@dataclass(frozen=True)
class Choice(HouseType):
    """One of a few words, case-insensitive, with aliases.

    Attributes:
        what: what the word names, for messages ("output mode").
        values: the canonical words; the parsed value is one of them.
        aliases: (alias, canonical) pairs, e.g. ("logdrop", "loganddrop").
        ignore_separators: '_' and '-' do not count ("send_to_dlq" is "sendtodlq").
        component: the word picks an implementation (a source type, say); an
            unknown word is then "not supported", listing what is implemented.
    """

    what: str
    values: tuple[str, ...]
    aliases: tuple[tuple[str, str], ...] = ()
    ignore_separators: bool = False
    component: bool = False

    def _key(self, word: str) -> str:
        key = word.strip().lower()
        return key.replace("_", "").replace("-", "") if self.ignore_separators else key

    @override
    def parse(self, value: Any) -> str:
        word = as_string(value)
        table = {self._key(v): v for v in self.values}
        table.update((self._key(alias), canonical) for alias, canonical in self.aliases)
        hit = table.get(self._key(word))
        if hit is not None:
            return hit
        listed = ", ".join(self.values)
        if self.component:
            raise ValueError(
                f"{render(word)} is not a supported {self.what}; implemented: {listed}"
            )
        raise ValueError(f"{render(word)} is not a valid {self.what}; expected one of {listed}")

    @override
    def schema(self) -> dict[str, Any]:
        spellings = dict.fromkeys([*self.values, *(alias for alias, _ in self.aliases)])
        sep = "[_-]*" if self.ignore_separators else ""

        alternatives = (sep.join(case_insensitive(c) for c in self._key(w)) for w in spellings)
        pattern = rf"^\s*(?:{'|'.join(alternatives)})\s*$"
        # The enum branch gives editors their completions; the pattern accepts the
        # other spellings that load fine (any case, the aliases).
        return {
            "anyOf": [{"enum": list(self.values)}, {"type": "string", "pattern": pattern}],
            "description": f"{self.what}, case-insensitive",
        }


def choice(
    words: Any,
    what: str,
    *,
    aliases: Mapping[str, str] | None = None,
    ignore_separators: bool = False,
    component: bool = False,
) -> Choice:
    """A :class:`Choice` over the words of a ``Literal`` type (so they are written once)."""
    return Choice(
        what, get_args(words), tuple((aliases or {}).items()), ignore_separators, component
    )


@dataclass(frozen=True)
class WholeNumber(HouseType):
    """An integer, written as a JSON number or as a string holding one (``"5432"``)."""

    minimum: int = 1
    maximum: int | None = None

    def _range(self) -> str:
        if self.maximum is None:
            return f"an integer >= {self.minimum}"
        return f"an integer from {self.minimum} to {self.maximum}"

    @override
    def parse(self, value: Any) -> int:
        whole_float = isinstance(value, float) and value.is_integer()
        if isinstance(value, int) and not isinstance(value, bool):
            number = value
        elif whole_float or (isinstance(value, str) and _WHOLE.fullmatch(value)):
            number = int(value)
        else:
            raise ValueError(
                f"{render(value)} is not a whole number; expected {self._range()}"
                " (a number or a string holding one)"
            )
        if number < self.minimum or (self.maximum is not None and number > self.maximum):
            raise ValueError(f"{render(value)} is out of range; expected {self._range()}")
        return number

    @override
    def schema(self) -> dict[str, Any]:
        number: dict[str, Any] = {"type": "integer", "minimum": self.minimum}
        if self.maximum is not None:
            number["maximum"] = self.maximum
        return {"anyOf": [number, {"type": "string", "pattern": r"^\s*\d+\s*$"}]}


@dataclass(frozen=True)
class Number(HouseType):
    """A number (int or float, or a string holding one); ``positive`` requires > 0."""

    positive: bool = True

    @override
    def parse(self, value: Any) -> float:
        wanted = "a number > 0" if self.positive else "a number"
        if isinstance(value, int | float) and not isinstance(value, bool):
            number: float = value
        elif isinstance(value, str) and _NUMBER.fullmatch(value):
            text = value.strip()
            number = int(text) if _WHOLE.fullmatch(text) else float(text)
        else:
            raise ValueError(f"{render(value)} is not a number; expected {wanted}")
        if number != number or number in (float("inf"), float("-inf")):
            raise ValueError(f"{render(value)} is not a finite number; expected {wanted}")
        if self.positive and number <= 0:
            raise ValueError(f"{render(value)} is out of range; expected {wanted}")
        return number

    @override
    def schema(self) -> dict[str, Any]:
        number: dict[str, Any] = {"type": "number"}
        if self.positive:
            number["exclusiveMinimum"] = 0
        return {"anyOf": [number, {"type": "string", "pattern": f"^{_NUMBER.pattern}$"}]}


@dataclass(frozen=True)
class Flag(HouseType):
    """A boolean: JSON true/false, or the strings "true"/"false" in any case."""

    @override
    def parse(self, value: Any) -> bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"
        raise ValueError(f"{render(value)} is not a boolean; expected true or false")

    @override
    def schema(self) -> dict[str, Any]:
        return {"anyOf": [{"type": "boolean"}, {"enum": ["true", "false"]}]}


@dataclass(frozen=True)
class DurationMs(HouseType):
    """A duration such as ``"10 minutes"``, parsed to milliseconds (see ``durations``)."""

    @override
    def parse(self, value: Any) -> int:
        return parse_duration_ms(as_string(value))

    @override
    def dump(self, value: Any) -> Any:
        return format_duration_ms(value) if isinstance(value, int) else value

    @override
    def schema(self) -> dict[str, Any]:
        return {"type": "string", "pattern": duration_pattern(), "description": DURATION_HELP}


@dataclass(frozen=True)
class StringMap(HouseType):
    """A JSON object of string settings; numbers and booleans are turned into strings."""

    @override
    def parse(self, value: Any) -> dict[str, str]:
        if not isinstance(value, Mapping):
            raise ValueError(expected("an object", value))
        out: dict[str, str] = {}
        for key, item in value.items():
            if isinstance(item, bool):
                out[key] = "true" if item else "false"
            elif isinstance(item, str | int | float):
                out[key] = str(item)
            else:
                raise ValueError(f"'{key}': {expected('a string', item)}")
        return out

    @override
    def schema(self) -> dict[str, Any]:
        return {
            "type": "object",
            "additionalProperties": {"type": ["string", "number", "boolean"]},
        }

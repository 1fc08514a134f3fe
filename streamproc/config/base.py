"""The base of every config model, and the note marking keys only Spark understood."""

from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel

# The deprecation note of every field for a key the Spark original knew and that
# means nothing here. Such a key is accepted (a config that ran on Spark must load
# unchanged) and named in the single warning line of the load; editors show it
# struck through, since the JSON Schema marks it deprecated.
SPARK_ONLY = "Spark-only: accepted for compatibility and ignored by streamproc"


class ConfigModel(BaseModel):
    """Frozen, closed model whose JSON keys are the camelCase names of the original format.

    ``extra='forbid'`` makes every unknown key an error (the loader turns it into a
    did-you-mean); aliases are the only accepted spelling, so a snake_case key is
    unknown too rather than a second way to say the same thing.
    """

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        alias_generator=to_camel,
        validate_by_alias=True,
        validate_by_name=False,
        serialize_by_alias=True,
        # Editors show the title: make it the JSON key, not a prettified Python name.
        field_title_generator=lambda name, info: info.alias or to_camel(name),
    )

    # Keys accepted beyond the declared fields (patterns, for models that allow
    # extras); shown in "accepted keys" listings. Empty for closed models.
    extra_keys: ClassVar[tuple[str, ...]] = ()

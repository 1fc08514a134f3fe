"""The JSON Schema of pipeline configs, for editors (``schema/pipeline.schema.json``).

Regenerate the committed file after changing a model::

    streamproc schema > schema/pipeline.schema.json

The schema helps an editor complete keys and flag typos; the loader stays the
authority (cross-field rules are not in the schema).
"""

from __future__ import annotations

import json
from typing import Any

from streamproc.config.pipeline import PipelineConfig

DIALECT = "https://json-schema.org/draft/2020-12/schema"


def json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a pipeline config, keyed by the JSON names."""
    generated = PipelineConfig.model_json_schema(by_alias=True, mode="validation")
    generated.pop("title", None)
    # Model docstrings become descriptions; their "Attributes:" part speaks of
    # Python names, so editors get the first paragraph only.
    for definition in [generated, *generated.get("$defs", {}).values()]:
        if "description" in definition:
            definition["description"] = definition["description"].split("\n\n")[0]
    return {"$schema": DIALECT, "title": "streamproc pipeline config", **generated}


def render_schema() -> str:
    """The schema as the committed file holds it (2-space indent, final newline)."""
    return json.dumps(json_schema(), indent=2) + "\n"

"""schema/pipeline.schema.json is what ``json_schema()`` generates, and it is usable."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from streamproc.config import json_schema
from streamproc.config.schema import render_schema

ROOT = Path(__file__).resolve().parents[2]
SCHEMA_FILE = ROOT / "schema" / "pipeline.schema.json"
REGENERATE = "streamproc schema > schema/pipeline.schema.json"


def walk(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from walk(value)


def test_committed_schema_is_in_sync() -> None:
    committed = SCHEMA_FILE.read_text(encoding="utf-8")
    assert json.loads(committed) == json_schema(), f"stale schema; run: {REGENERATE}"
    assert committed == render_schema(), f"stale schema; run: {REGENERATE}"


def test_schema_describes_the_top_level() -> None:
    schema = json_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["additionalProperties"] is False
    assert set(schema["required"]) == {"pipelineId", "extract", "load"}
    assert "$schema" in schema["properties"]
    assert "streamingConfigJson" in schema["properties"]


def test_every_pattern_is_a_valid_regex() -> None:
    patterns = [n["pattern"] for n in walk(json_schema()) if isinstance(n.get("pattern"), str)]
    assert patterns
    for pattern in patterns:
        re.compile(pattern)


def test_spark_only_keys_are_marked_deprecated() -> None:
    performance = json_schema()["$defs"]["PerformanceConfig"]["properties"]
    assert performance["shufflePartitions"]["deprecated"] is True
    assert performance["broadcastThreshold"]["deprecated"] is True


def test_security_settings_are_pattern_properties() -> None:
    params = json_schema()["$defs"]["SourceConnectionParams"]
    assert params["additionalProperties"] is False
    [pattern] = params["patternProperties"]
    for key in ("kafka.security.protocol", "kafka.sasl.mechanism", "kafka.ssl.truststore.type"):
        assert re.search(pattern, key)
    assert not re.search(pattern, "kafka.bootstrap.server")


def test_choice_patterns_accept_every_spelling_the_loader_accepts() -> None:
    strategy = json_schema()["$defs"]["LateDataConfig"]["properties"]["strategy"]
    [choice, _reference] = strategy["anyOf"]
    assert choice["anyOf"][0] == {"enum": ["drop", "loganddrop", "sendtodlq", "separatestream"]}
    pattern = choice["anyOf"][1]["pattern"]
    for spelling in ("SendToDLQ", "send_to_dlq", "LogDrop", "separate-stream", "dlq"):
        assert re.search(pattern, spelling), spelling
    assert not re.search(pattern, "retry")

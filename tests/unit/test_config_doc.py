"""CONFIG.md is what the models generate, and the generator leaves no key out."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from streamproc.commands.preflight import preflight
from streamproc.config.base import ConfigModel
from streamproc.config.ignored import IGNORED_OPTIONS
from streamproc.config.pipeline import PipelineConfig
from streamproc.config.reference_doc import REGENERATE, field_docs, render, sections

ROOT = Path(__file__).resolve().parents[2]


def test_committed_config_md_is_what_the_models_generate() -> None:
    committed = (ROOT / "CONFIG.md").read_text(encoding="utf-8")
    assert committed == render(), f"CONFIG.md is out of date; run: {REGENERATE} (or make docs)"


def _json_paths(model: type[ConfigModel], path: str = "") -> set[str]:
    # Independent of the generator: every key the models accept, by alias.
    out: set[str] = set()
    for name, field in model.model_fields.items():
        key = f"{path}.{field.alias or name}" if path else field.alias or name
        out.add(key)
        annotation = str(field.annotation)
        for child in ConfigModel.__subclasses__():
            if re.search(rf"\b{child.__name__}\b", annotation):
                listed = "tuple[" in annotation
                out |= _json_paths(child, key + ("[]" if listed else ""))
    return out


def test_every_key_of_the_models_is_in_the_reference() -> None:
    rows = {k.path for s in sections() for k in s.keys}
    expected = _json_paths(PipelineConfig)
    assert expected - rows == set()
    assert "streamingConfigJson.watermark.delayThreshold" in rows
    assert "dataQualityConfig.rules[].parameters.regex" in rows
    assert "extract.connectionParams.kafka.sasl.*" in rows  # the pass-through keys too


def test_a_field_without_a_description_stops_the_generator() -> None:
    class Undocumented(ConfigModel):
        """A model.

        Attributes:
            documented: has one.
        """

        documented: str | None = None
        forgotten: str | None = None

    assert field_docs(Undocumented) == {"documented": "has one."}
    with pytest.raises(
        ValueError, match=r"Undocumented\.forgotten \(forgotten\) has no description"
    ):
        list(sections(Undocumented))


def test_grouped_and_wrapped_descriptions_are_read_per_field() -> None:
    class Grouped(ConfigModel):
        """A model.

        Attributes:
            a, b: shared text
                that wraps.
            c:
                text on the next line.

        Other:
            not an attribute.
        """

    assert field_docs(Grouped) == {
        "a": "shared text that wraps.",
        "b": "shared text that wraps.",
        "c": "text on the next line.",
    }


def test_the_ignored_table_says_what_the_warnings_say() -> None:
    config = {
        "pipelineId": "p",
        "mode": "streaming",
        "extract": {
            "sourceType": "kafka",
            "topic": "t",
            "connectionParams": {"kafka.bootstrap.servers": "localhost:9092"},
            "pathGlobFilter": "*.log",
        },
        "transforms": [
            {
                "transformType": "aggregation",
                "parameters": {"groupByColumns": "k", "aggregations": "*:count"},
            }
        ],
        "load": {
            "sinkType": "postgresql",
            "table": "t",
            "connectionParams": {"url": "postgresql://h/d"},
        },
        "streamingConfigJson": {
            "checkpointLocation": "/tmp/c",
            "queryName": "q",
            "outputMode": "update",
            "enableIdempotence": True,
            "maxFilesPerTrigger": 3,
            "onFileTruncated": "continue",
            "onFileDeleted": "stop",
        },
        "errorHandlingConfig": {"dlqConfig": {"bufferSize": 5, "producerConfig": {"acks": "1"}}},
    }
    streaming = preflight(config, env={})
    batch = preflight(
        {
            **config,
            "mode": "batch",
            "streamingConfigJson": None,
            "transforms": [
                {
                    "transformType": "aggregation",
                    "parameters": {
                        "groupByColumns": "k",
                        "aggregations": "*:count",
                        "stateTimeout": "1 hour",
                    },
                }
            ],
            "loggingConfig": {"metricsPort": 0},
        },
        env={},
    )
    warnings = streaming.warnings + batch.warnings
    doc = render()
    for option in IGNORED_OPTIONS:
        shown = option.warning().replace("[...]", "[0]")
        assert shown in warnings, option.path
        assert f"| `{option.path}` |" in doc and option.instead in doc

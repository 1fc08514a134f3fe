"""Every config in configs/ loads; the seed's three use cases are in them, unchanged."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from streamproc.config import PipelineConfig, Trigger, load_config, validate_config

ROOT = Path(__file__).resolve().parents[2]
CONFIG_FILES = sorted((ROOT / "configs").glob("*.json"))

# The "Example Use Cases" fragments of the seed (seed/000_b7f5402ba389b314.txt),
# verbatim: each must be contained, key for key, in the runnable config named here.
SEED_USE_CASES = {
    "user-analytics.json": """{
      "pipelineId": "user-analytics",
      "mode": "streaming",
      "streamingConfigJson": {
        "watermark": {
          "eventTimeColumn": "event_time",
          "delayThreshold": "15 minutes"
        },
        "triggerMode": "processingtime=30 seconds",
        "outputMode": "append"
      },
      "transforms": [{
        "transformType": "aggregation",
        "parameters": {
          "windowDuration": "10 minutes",
          "aggregations": "page_views:count,clicks:sum"
        }
      }]
    }""",
    "sales-dashboard.json": """{
      "transforms": [{
        "transformType": "aggregation",
        "parameters": {
          "windowColumn": "sale_time",
          "windowDuration": "1 hour",
          "slideDuration": "15 minutes",
          "groupByColumns": "store_id,category",
          "aggregations": "quantity:sum,revenue:sum,avg_price:avg"
        }
      }]
    }""",
    "fraud-detection.json": """{
      "streamingConfigJson": {
        "triggerMode": "continuous",
        "outputMode": "append",
        "queryName": "fraud-detection"
      }
    }""",
}


def contains(whole: Any, part: Any) -> bool:
    """True when ``part`` is ``whole`` with some object keys left out (lists item by item)."""
    if isinstance(part, dict):
        return isinstance(whole, dict) and all(
            key in whole and contains(whole[key], value) for key, value in part.items()
        )
    if isinstance(part, list):
        return (
            isinstance(whole, list)
            and len(whole) == len(part)
            and all(contains(w, p) for w, p in zip(whole, part, strict=True))
        )
    return bool(whole == part)


def load(name: str) -> PipelineConfig:
    return load_config(ROOT / "configs" / name, env={})


def test_the_expected_files_exist() -> None:
    names = {path.name for path in CONFIG_FILES}
    assert {"streaming-example.json", *SEED_USE_CASES} <= names


#: The examples of batch mode; every other config is a streaming query.
BATCH_EXAMPLES = {"sales-daily-report.json", "user-sessions.json"}


@pytest.mark.parametrize("path", CONFIG_FILES, ids=lambda p: p.name)
def test_every_config_loads_cleanly(path: Path) -> None:
    report = validate_config(path, env={})
    assert report.errors == []
    assert report.warnings == []
    assert report.config is not None
    assert report.config.is_streaming == (path.name not in BATCH_EXAMPLES)


@pytest.mark.parametrize("path", CONFIG_FILES, ids=lambda p: p.name)
def test_every_config_names_the_schema_first(path: Path) -> None:
    document = json.loads(path.read_text(encoding="utf-8"))
    assert next(iter(document)) == "$schema"
    assert document["$schema"] == "../schema/pipeline.schema.json"


@pytest.mark.parametrize("name", sorted(SEED_USE_CASES))
def test_seed_use_case_is_part_of_its_config(name: str) -> None:
    whole = json.loads((ROOT / "configs" / name).read_text(encoding="utf-8"))
    assert contains(whole, json.loads(SEED_USE_CASES[name]))


def test_user_analytics() -> None:
    cfg = load("user-analytics.json")
    agg, streaming = cfg.aggregation, cfg.streaming
    assert agg is not None and streaming is not None and streaming.watermark is not None
    assert (agg.window_size_ms, agg.slide_ms) == (600_000, 600_000)
    assert streaming.watermark.delay_ms == 900_000
    assert streaming.trigger == Trigger("processingtime", 30_000)
    assert streaming.output_mode == "append"
    assert [a.output for a in agg.aggregations] == ["page_views_count", "clicks_sum"]


def test_sales_dashboard() -> None:
    cfg = load("sales-dashboard.json")
    agg, streaming = cfg.aggregation, cfg.streaming
    assert agg is not None and streaming is not None
    assert agg.group_by == ("store_id", "category")
    assert (agg.window_size_ms, agg.slide_ms) == (3_600_000, 900_000)
    assert streaming.output_mode == "update"
    assert agg.output_columns == (
        "store_id",
        "category",
        "window_start",
        "window_end",
        "quantity_sum",
        "revenue_sum",
        "avg_price_avg",
    )


def test_fraud_detection() -> None:
    cfg = load("fraud-detection.json")
    agg, streaming = cfg.aggregation, cfg.streaming
    assert agg is not None and streaming is not None
    assert streaming.trigger == Trigger("continuous", None)
    assert (streaming.output_mode, streaming.query_name) == ("append", "fraud-detection")
    assert [(a.output, a.column, a.func) for a in agg.aggregations] == [
        ("amount_sum", "amount", "sum"),
        ("amount_max", "amount", "max"),
        ("count", None, "count"),
    ]


def test_streaming_example_takes_servers_from_the_environment() -> None:
    env = {
        "STREAMPROC_KAFKA_BOOTSTRAP": "broker:29092",
        "STREAMPROC_PG_DSN": "postgresql://u:p@db:5433/x",
    }
    cfg = load_config(ROOT / "configs" / "streaming-example.json", env=env)
    assert cfg.extract.bootstrap_servers == "broker:29092"
    assert cfg.dlq_bootstrap_servers == "broker:29092"
    assert cfg.load.dsn() == "postgresql://u:p@db:5433/x"
    defaults = load("streaming-example.json")
    assert defaults.extract.bootstrap_servers == "localhost:9092"
    assert defaults.load.dsn() == "postgresql://postgres@127.0.0.1:5432/postgres"
    assert defaults.streaming is not None
    assert defaults.streaming.checkpoint_location.startswith(".checkpoints/")


@pytest.mark.parametrize("path", CONFIG_FILES, ids=lambda p: p.name)
def test_dump_writes_the_config_notation_back(path: Path) -> None:
    cfg = load_config(path, env={})
    dumped = cfg.model_dump(mode="json", exclude_unset=True)
    assert PipelineConfig.model_validate(dumped) == cfg

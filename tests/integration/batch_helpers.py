"""Batch jobs as a user runs them: a `mode: batch` config, JSON-lines files, the table."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

#: A line of a file that is not JSON (the model sees it as a bad record).
NOT_JSON = "{not json"


def batch_config(
    tmp: Path,
    name: str,
    extract: dict[str, Any],
    *,
    transforms: list[dict[str, Any]] | None = None,
    write_mode: str = "append",
    upsert_keys: str | None = None,
    batchsize: int | None = None,
    error_handling: dict[str, Any] | None = None,
) -> Path:
    """Write a batch config loading into table `name` (servers from ${TEST_*}, see env_for)."""
    params: dict[str, Any] = {"url": "${TEST_PG_DSN}"}
    if batchsize is not None:
        params["batchsize"] = batchsize
    load: dict[str, Any] = {
        "sinkType": "postgresql",
        "table": name,
        "writeMode": write_mode,
        "connectionParams": params,
    }
    if upsert_keys is not None:
        load["upsertKeys"] = upsert_keys
    config: dict[str, Any] = {
        "pipelineId": name,
        "mode": "batch",
        "extract": extract,
        "transforms": transforms or [],
        "load": load,
    }
    if error_handling is not None:
        config["errorHandlingConfig"] = error_handling
    path = tmp / f"{name}.json"
    path.write_text(json.dumps(config, indent=2))
    return path


def kafka_extract(topic: str) -> dict[str, Any]:
    """A Kafka source at ${TEST_BOOTSTRAP} (startingOffsets left to the batch default)."""
    return {
        "sourceType": "kafka",
        "connectionParams": {"kafka.bootstrap.servers": "${TEST_BOOTSTRAP}", "subscribe": topic},
    }


def aggregation(
    aggregations: str = "count=*:count,value:sum,value:max", *, window: bool = True
) -> list[dict[str, Any]]:
    """The aggregation transform over user_id (10-minute windows on event_time)."""
    parameters: dict[str, Any] = {"groupByColumns": "user_id", "aggregations": aggregations}
    if window:
        parameters |= {"windowColumn": "event_time", "windowDuration": "10 minutes"}
    return [{"transformType": "aggregation", "parameters": parameters}]


def write_lines(path: Path, records: list[Any], *, complete: bool = True) -> Path:
    """Write records as JSON lines (NOT_JSON and other strings as they are); gzip for .gz.

    Args:
        path: The file.
        records: JSON values, or raw line text.
        complete: False leaves the last line without its newline.
    """
    lines = [r if isinstance(r, str) else json.dumps(r) for r in records]
    text = "\n".join(lines) + ("\n" if complete else "")
    data = text.encode()
    path.write_bytes(gzip.compress(data) if path.name.endswith(".gz") else data)
    return path

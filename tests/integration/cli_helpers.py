"""Running `streamproc` as a user does, on the real broker and PostgreSQL: configs, runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from tests.reference import Query
from tests.streams import MINUTE

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[2]

#: The query `write_config` writes.
CLI_QUERY = Query(
    ("user_id",),
    (("count", None, "count"), ("value_sum", "value", "sum"), ("value_max", "value", "max")),
    delay_ms=5 * MINUTE,
    size_ms=10 * MINUTE,
    output_mode="append",
)


def write_config(
    tmp: Path, name: str, bootstrap: str, dsn: str, trigger: str = "availablenow"
) -> Path:
    """Write the config of `CLI_QUERY` on topic `name` into table `name`.

    The servers are written as ``${TEST_BOOTSTRAP}`` and ``${TEST_PG_DSN}`` (see `env_for`).

    Args:
        tmp: Where the config and the checkpoint location go.
        name: Pipeline, query, topic and table name.
        bootstrap: Unused in the file (interpolated from the environment).
        dsn: Unused in the file (interpolated from the environment).
        trigger: The trigger mode.

    Returns:
        The config file.
    """
    config = {
        "pipelineId": name,
        "mode": "streaming",
        "extract": {
            "sourceType": "kafka",
            "connectionParams": {
                "kafka.bootstrap.servers": "${TEST_BOOTSTRAP}",
                "subscribe": name,
                "startingOffsets": "earliest",
            },
        },
        "transforms": [
            {
                "transformType": "aggregation",
                "parameters": {
                    "groupByColumns": "user_id",
                    "windowColumn": "event_time",
                    "windowDuration": "10 minutes",
                    "aggregations": "count=*:count,value:sum,value:max",
                },
            }
        ],
        "load": {
            "sinkType": "postgresql",
            "table": name,
            "connectionParams": {"url": "${TEST_PG_DSN}"},
        },
        "streamingConfigJson": {
            "checkpointLocation": str(tmp / "checkpoints"),
            "queryName": name,
            "outputMode": "append",
            "triggerMode": trigger,
            "maxRecordsPerTrigger": 400,
            "watermark": {"eventTimeColumn": "event_time", "delayThreshold": "5 minutes"},
        },
    }
    path = tmp / f"{name}.json"
    path.write_text(json.dumps(config, indent=2))
    return path


def edit(config: Path, change: Callable[[dict[str, Any]], Any]) -> Path:
    """Apply change(document) to a config file.

    Args:
        config: The config file.
        change: Edits the parsed document in place.

    Returns:
        The same file.
    """
    document = json.loads(config.read_text())
    change(document)
    config.write_text(json.dumps(document, indent=2))
    return config


def env_for(bootstrap: str, dsn: str, config: Path | None = None) -> dict[str, str]:
    """The environment of a run: the servers `write_config` refers to, and the config."""
    env = dict(os.environ, TEST_BOOTSTRAP=bootstrap, TEST_PG_DSN=dsn)
    if config is not None:
        env["STREAMPROC_CONFIG"] = str(config)
    return env


def run_cli(
    config: Path, bootstrap: str, dsn: str, *args: str, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """``streamproc ARGS CONFIG`` (``streamproc run CONFIG`` without args), to its end.

    Args:
        config: The config file.
        bootstrap: Kafka bootstrap servers.
        dsn: PostgreSQL URL.
        *args: The subcommand and its options; none for ``run``.
        timeout: Seconds before the run fails.

    Returns:
        The finished process, its output as text.
    """
    return subprocess.run(
        [str(BIN / "streamproc"), *(args or ("run",)), str(config)],
        env=env_for(bootstrap, dsn),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def last_line(stderr: str) -> str:
    """The one `streamproc:` line of a run that stopped: the last line, and the only one."""
    lines = stderr.strip().splitlines()
    assert [x for x in lines if x.startswith("streamproc:")] == lines[-1:], stderr[-3000:]
    return lines[-1]


async def run_to_the_end(
    tmp: Path, name: str, bootstrap: str, dsn: str, stream: Mapping[int, Sequence[Any]]
) -> Path:
    """Produce a stream to a new 4-partition topic and run `CLI_QUERY` over it (availablenow).

    Returns:
        The config of the finished run (see `write_config`).
    """
    from streamproc.local import create_topic
    from tests.kafka_io import produce

    await create_topic(bootstrap, name, 4)
    await produce(bootstrap, name, stream)
    config = write_config(tmp, name, bootstrap, dsn)
    done = run_cli(config, bootstrap, dsn)
    assert done.returncode == 0, done.stderr[-2000:]
    return config

"""What an operator sees of a running query: /metrics, progress lines, and their agreement
with the ledger; a metrics port that is taken."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

from streamproc.local import create_topic
from tests.integration.cli_helpers import BIN, edit, env_for, write_config
from tests.kafka_io import produce
from tests.results import ledger_records
from tests.streams import make_stream
from tests.waiting import wait_until

_PORT_LINE = re.compile(r"metrics on http://127\.0\.0\.1:(\d+)/metrics")


_SAMPLE = re.compile(r"^(\w+)(?:\{(.*)\})? (\S+)$")
_LABEL = re.compile(r'(\w+)="([^"]*)"')

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(port: int) -> Samples:
    """Every sample of /metrics: {(name, labels): value}."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    samples: Samples = {}
    for line in text.splitlines():
        found = _SAMPLE.match(line)
        if found and not line.startswith("#"):
            labels = frozenset(_LABEL.findall(found.group(2) or ""))
            samples[(found.group(1), labels)] = float(found.group(3))
    return samples


def values(samples: Samples, name: str, **labels: str) -> list[float]:
    """The values of every sample of a metric whose labels include these."""
    wanted = set(labels.items())
    return [v for (n, have), v in samples.items() if n == name and wanted <= have]


def test_a_metrics_port_in_use_stops_the_run_with_one_line(tmp_path: Path) -> None:
    config = write_config(tmp_path, "taken", "127.0.0.1:1", "postgresql://x@127.0.0.1:1/x")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [str(BIN / "streamproc"), "run", str(config)],
            env=env_for("127.0.0.1:1", "postgresql://x@127.0.0.1:1/x")
            | {"STREAMPROC_METRICS_PORT": str(port)},
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    # (Before it, the config's warnings, if any.)
    assert done.stderr.splitlines()[-1] == (
        f"streamproc: cannot serve metrics on 127.0.0.1:{port}: already in use (set metricsPort "
        "or STREAMPROC_METRICS_PORT to a free port, or 0 for any)"
    )


async def test_metrics_and_progress_lines_agree_with_the_ledger(
    kafka_bootstrap: str, pg_dsn: str, pg: Any, unique_name: str, tmp_path: Path
) -> None:
    stream = make_stream(1_200, seed=31)
    await create_topic(kafka_bootstrap, unique_name, 4)
    config = write_config(tmp_path, unique_name, kafka_bootstrap, pg_dsn, "processingtime=1 second")
    edit(config, lambda doc: doc.update(loggingConfig={"metricsPort": 0}))
    log_path = tmp_path / "worker.log"
    with log_path.open("w") as log_file:
        # key=value lines: the progress lines are read back below
        worker = subprocess.Popen(
            [str(BIN / "streamproc"), "run", str(config)],
            env={**env_for(kafka_bootstrap, pg_dsn), "STREAMPROC_LOG_FORMAT": "kv"},
            stdout=subprocess.DEVNULL,
            stderr=log_file,
            text=True,
        )
    try:

        def port_logged() -> int | None:
            assert worker.poll() is None, log_path.read_text()[-2000:]
            found = _PORT_LINE.search(log_path.read_text())
            return int(found.group(1)) if found else None

        port = await wait_until(port_logged, "the worker logs its metrics port", timeout=60)
        await produce(kafka_bootstrap, unique_name, stream)

        async def all_committed() -> bool:
            assert worker.poll() is None, log_path.read_text()[-2000:]
            return await ledger_records(pg, unique_name) == 1_200

        await wait_until(all_committed, "the ledger counts all 1200 records", timeout=90)
        ours = {"pipeline": unique_name, "query": unique_name}

        def caught_up() -> Samples | None:
            samples = scrape(port)
            lags = [
                values(samples, "streamproc_consumer_lag_records", **ours, partition=str(p))
                for p in range(4)
            ]
            # The ledger row is visible a moment before the worker counts its batch,
            # and the lag of the batch before may read 0 already (the client's end
            # offsets come with fetch responses): both must be there.
            counted = sum(values(samples, "streamproc_records_total", query=unique_name))
            return samples if lags == [[0.0]] * 4 and counted == 1_200 else None

        samples = await wait_until(
            caught_up, "consumer lag 0 on every partition, 1200 records counted", timeout=30
        )
        counts = await pg.fetchrow(
            "SELECT sum(aggregated) aggregated, sum(late) late, sum(bad) bad, "
            "sum(filtered) filtered FROM streamproc_ledger WHERE query = $1",
            unique_name,
        )
        for outcome, n in counts.items():
            assert sum(values(samples, "streamproc_records_total", **ours, outcome=outcome)) == n
        # pipelineId labels every series of streamproc's own.
        unlabelled = {
            name
            for name, labels in samples
            if name.startswith("streamproc_") and "pipeline" not in dict(labels)
        }
        assert unlabelled == set()
        # Event-time lag: the wall clock at the scrape minus the committed W, in seconds.
        w_ms = await pg.fetchval(
            "SELECT global_watermark_ms FROM streamproc_queries WHERE query = $1", unique_name
        )
        (event_lag,) = values(samples, "streamproc_event_time_lag_seconds", **ours)
        assert abs(event_lag - (time.time() - w_ms / 1000)) < 60
        assert values(samples, "streamproc_assigned_partitions", **ours) == [4.0]
        positions = await pg.fetch(
            "SELECT partition, watermark_ms FROM streamproc_positions WHERE query = $1",
            unique_name,
        )
        assert len(positions) == 4
        for partition, watermark_ms in positions:
            assert values(
                samples,
                "streamproc_watermark_timestamp_seconds",
                **ours,
                partition=str(partition),
            ) == [watermark_ms / 1000]
        (last_commit,) = values(samples, "streamproc_last_commit_timestamp_seconds", **ours)
        assert last_commit > 0
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=60)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    assert worker.returncode == 0
    lines = [line for line in log_path.read_text().splitlines() if " progress pipeline=" in line]
    rows = [re.search(r" rows=(\d+) ", line) for line in lines]
    assert sum(int(found.group(1)) for found in rows if found) == 1_200
    ledger_batches = await pg.fetchval(
        "SELECT count(DISTINCT batch_id) FROM streamproc_ledger WHERE query = $1", unique_name
    )
    offsets = [re.search(r" offsets=(\S+) ", line) for line in lines]
    spans = [span for found in offsets if found for span in found.group(1).split(",")]
    assert len([span for span in spans if span != "-"]) == ledger_batches

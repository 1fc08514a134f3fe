"""What an operator sees of a running query: /metrics, progress lines, and their agreement
with the ledger; a metrics port that is taken."""

from __future__ import annotations

import json
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
from tests.unit.test_compose import alert_rules, dashboard_exprs
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


#: Series a worker has per partition it owns (and per local store): made at assignment.
_PER_PARTITION = {
    "streamproc_consumer_lag_records",
    "streamproc_watermark_timestamp_seconds",
    "streamproc_max_event_time_timestamp_seconds",
    "streamproc_state_bytes",
}
#: A file source's own series (made at 0 when it starts; a Kafka query has none).
_FILE_SOURCE = {"streamproc_files_unread_total", "streamproc_file_bytes_unread_total"}


def queried_metrics() -> dict[str, set[str]]:
    """The streamproc_* names each shipped query uses: the dashboard's and the alert rules'."""
    queries = {
        **{f"dashboard: {expr}": expr for expr in dashboard_exprs()},
        **{f"alert {rule['alert']}": rule["expr"] for rule in alert_rules()},
    }
    return {where: set(re.findall(r"\bstreamproc_\w+", expr)) for where, expr in queries.items()}


async def test_every_series_a_dashboard_or_alert_queries_is_there_from_the_first_scrape(
    kafka_bootstrap: str, pg_dsn: str, unique_name: str, tmp_path: Path
) -> None:
    # A fresh query, nothing produced: before, the labelled counters (dead letters,
    # retries, records by outcome), W and the per-partition gauges had no series until
    # their first increment or commit, and `increase(...) > 0` could not tell "none"
    # from "not scraped".
    await create_topic(kafka_bootstrap, unique_name, 2)
    config = write_config(tmp_path, unique_name, kafka_bootstrap, pg_dsn, "continuous")
    edit(config, lambda doc: doc.update(loggingConfig={"metricsPort": 0}))
    log_path = tmp_path / "worker.log"
    with log_path.open("w") as log_file:
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
        first = {name for name, _ in scrape(port)}
        queried = queried_metrics()
        for where, names in queried.items():
            assert names - _PER_PARTITION - _FILE_SOURCE <= first, (where, sorted(names - first))

        def assigned() -> Samples | None:
            assert worker.poll() is None, log_path.read_text()[-2000:]
            samples = scrape(port)
            owned = values(samples, "streamproc_assigned_partitions", query=unique_name)
            return samples if owned == [2.0] else None

        samples = await wait_until(assigned, "the worker owns both partitions", timeout=60)
        exposed = {name for name, _ in samples}
        for where, names in queried.items():
            assert names - _FILE_SOURCE <= exposed, (where, sorted(names - exposed))
        ours = {"pipeline": unique_name, "query": unique_name}
        for kind in ("bad", "refused", "late"):
            assert values(samples, "streamproc_dead_letters_total", **ours, kind=kind) == [0.0]
        assert values(samples, "streamproc_retries_total", **ours) == [0.0]
        for outcome in ("aggregated", "late", "bad", "filtered"):
            assert values(samples, "streamproc_records_total", **ours, outcome=outcome) == [0.0]
        assert values(samples, "streamproc_circuit_breaker_open", **ours) == [0.0]
        # No commit yet: no W, no last commit; NaN, which max() skips and no alert compares.
        for gauge in (
            "streamproc_global_watermark_timestamp_seconds",
            "streamproc_last_commit_timestamp_seconds",
        ):
            (value,) = values(samples, gauge, **ours)
            assert value != value, gauge
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=60)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    assert worker.returncode == 0


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
        # streamproc run keeps RocksDB state: its own estimate of the bytes it holds.
        (state_bytes,) = values(samples, "streamproc_state_bytes", **ours)
        assert state_bytes > 0
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

    # The progress table: a row per commit, written with the ledger rows, so the
    # same counts, spans and batches as the ledger and the progress lines.
    progress = await pg.fetch(
        "SELECT * FROM streamproc_progress WHERE query = $1 ORDER BY seq", unique_name
    )
    assert [r["seq"] for r in progress] == list(range(1, len(progress) + 1))
    assert sum(r["input_rows"] for r in progress) == 1_200
    assert len(progress) == len(lines)
    ledger = await pg.fetch(
        """SELECT batch_id, records, aggregated, late, bad, filtered FROM streamproc_ledger
           WHERE query = $1""",
        unique_name,
    )
    by_span = {r["batch_id"]: r for r in ledger}
    assert sorted(s["batchId"] for r in progress for s in json.loads(r["sources"])) == sorted(
        by_span
    )
    for row in progress:
        mine = [by_span[s["batchId"]] for s in json.loads(row["sources"])]
        for column in ("aggregated", "late", "bad", "filtered"):
            assert row[column] == sum(r[column] for r in mine)
        assert row["input_rows"] == sum(r["records"] for r in mine)
        assert (row["breaker"], row["retries"]) == ("closed", 0)
    states = await pg.fetchval(
        "SELECT count(*) FROM streamproc_state WHERE query = $1", unique_name
    )
    assert progress[-1]["state_rows_total"] == states
    totals = [re.search(r" state_total=(\d+) ", line) for line in lines]
    assert [int(found.group(1)) for found in totals if found] == [
        r["state_rows_total"] for r in progress
    ]
    assert values(samples, "streamproc_state_rows", **ours)[0] in {
        float(r["state_rows_total"]) for r in progress
    }


async def test_two_workers_on_one_host_both_serve_metrics(
    kafka_bootstrap: str, pg_dsn: str, pg: Any, unique_name: str, tmp_path: Path
) -> None:
    stream = make_stream(1_200, seed=32)
    await create_topic(kafka_bootstrap, unique_name, 4)
    config = write_config(tmp_path, unique_name, kafka_bootstrap, pg_dsn, "processingtime=1 second")
    env = {**env_for(kafka_bootstrap, pg_dsn), "STREAMPROC_LOG_FORMAT": "kv"}
    env["STREAMPROC_METRICS_PORT"] = "0"  # one config, a free port each
    logs = [tmp_path / f"worker{i}.log" for i in range(2)]
    workers = []
    for log_path in logs:
        with log_path.open("w") as log_file:
            workers.append(
                subprocess.Popen(
                    [str(BIN / "streamproc"), "run", str(config)],
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=log_file,
                    text=True,
                )
            )
    try:

        def ports_logged() -> list[int] | None:
            found = []
            for worker, log_path in zip(workers, logs, strict=True):
                assert worker.poll() is None, log_path.read_text()[-2000:]
                port = _PORT_LINE.search(log_path.read_text())
                if port is None:
                    return None
                found.append(int(port.group(1)))
            return found

        ports = await wait_until(ports_logged, "both workers log a metrics port", timeout=60)
        assert ports[0] != ports[1]
        ours = {"pipeline": unique_name, "query": unique_name}

        def split() -> bool:
            owned = [
                values(scrape(port), "streamproc_assigned_partitions", **ours) for port in ports
            ]
            return owned == [[2.0], [2.0]]

        # Records come once the group has split the partitions, so both commit some.
        await wait_until(split, "each worker owns two partitions", timeout=90)
        await produce(kafka_bootstrap, unique_name, stream)

        async def all_committed() -> bool:
            for worker, log_path in zip(workers, logs, strict=True):
                assert worker.poll() is None, log_path.read_text()[-2000:]
            return await ledger_records(pg, unique_name) == 1_200

        await wait_until(all_committed, "the ledger counts all 1200 records", timeout=120)

        def shared() -> list[Samples] | None:
            scraped = [scrape(port) for port in ports]
            owned = [values(s, "streamproc_assigned_partitions", **ours) for s in scraped]
            counted = sum(
                sum(values(s, "streamproc_records_total", query=unique_name)) for s in scraped
            )
            # Settled: the group split the partitions and every record is counted once.
            return scraped if sorted(owned) == [[2.0], [2.0]] and counted == 1_200 else None

        scraped = await wait_until(shared, "both workers own two partitions", timeout=60)
        lagging = [
            {
                p
                for p in range(4)
                if values(s, "streamproc_consumer_lag_records", **ours, partition=str(p))
            }
            for s in scraped
        ]
        # Between them, their per-partition series cover every partition, each once.
        assert lagging[0] | lagging[1] == {0, 1, 2, 3} and not lagging[0] & lagging[1]
        for worker in workers:
            worker.send_signal(signal.SIGTERM)
        for worker in workers:
            worker.wait(timeout=60)
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
    assert [w.returncode for w in workers] == [0, 0]
    progress = await pg.fetch(
        "SELECT worker, input_rows FROM streamproc_progress WHERE query = $1", unique_name
    )
    assert sum(r["input_rows"] for r in progress) == 1_200
    assert len({r["worker"] for r in progress}) == 2  # both committed, each named

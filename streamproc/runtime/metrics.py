"""Prometheus metrics of the streaming runtime, and the server that exposes them.

Every record read is counted in exactly one of aggregated, late, bad or
filtered. The metrics added with the progress record follow Prometheus
naming (base units: seconds; `_timestamp_seconds` for points in time) and
carry only the labels pipeline, query, partition, phase, outcome, strategy,
result and kind, all bounded (OPERATING.md "Progress and metrics" lists
them all); `streamproc_watermark_ms` stays for the dashboards that read it,
next to `streamproc_watermark_timestamp_seconds`.

Every series a query has is there from its start (`init_query_series`, and
`init_partition_series` when a partition is assigned): a counter at 0, a
gauge at its current value, or NaN while it has none (no commit yet, no
watermark yet), so that `rate()` panels and `increase(...) > 0` alerts tell
"none" from "not scraped" (Prometheus' advice: initialise the label sets you
know).

`start_metrics_server` serves /metrics on the address and port of the config
(`loggingConfig.metricsAddress`, `metricsPort`) or of the environment
(`STREAMPROC_METRICS_ADDRESS`, `STREAMPROC_METRICS_PORT`, which win: one
config, several workers on a host, a port each).
"""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Callable
from typing import Any

from prometheus_client import Counter, Gauge, Histogram, start_http_server

from streamproc.timing import PHASES

log = logging.getLogger("streamproc.metrics")

RECORDS = Counter(
    "streamproc_records_total",
    "Records read, by outcome (aggregated, late, bad, filtered)",
    ["pipeline", "query", "outcome"],
)
LATE = Counter(
    "streamproc_late_records_total",
    "Late records, by strategy",
    ["pipeline", "query", "strategy"],
)
BATCHES = Counter(
    "streamproc_batches_total",
    "Micro-batches, by result (committed, stale, failed, dead_lettered, unavailable)",
    ["pipeline", "query", "result"],
)
RESULT_ROWS = Counter("streamproc_result_rows_total", "Result rows written", ["pipeline", "query"])
COMMIT_SECONDS = Histogram(
    "streamproc_commit_seconds", "Wall time of a batch's sink transaction", ["pipeline", "query"]
)
COMMIT_ROUND_TRIPS = Counter(
    "streamproc_commit_round_trips_total",
    "Round trips to PostgreSQL of committed batches' commits (a statement 1, a COPY 2, BEGIN "
    'and COMMIT 1 each); over streamproc_batches_total{result="committed"}: per commit',
    ["pipeline", "query"],
)
WATERMARK = Gauge(
    "streamproc_watermark_ms",
    "Partition watermark (event time, epoch ms)",
    ["pipeline", "query", "partition"],
)
BREAKER_OPEN = Gauge(
    "streamproc_circuit_breaker_open",
    "1 while the sink circuit breaker is open or half-open (probing), 0 while closed",
    ["pipeline", "query"],
)
RETRIES = Counter(
    "streamproc_retries_total",
    "Retried calls to a sink (the sink transaction, a dead-letter write), after a failure",
    ["pipeline", "query"],
)
DEAD_LETTERS = Counter(
    "streamproc_dead_letters_total",
    "Records written to a dead-letter topic or table, by kind (bad, refused by the sink, late)",
    ["pipeline", "query", "kind"],
)
EVENT_TIME_LAG = Gauge(
    "streamproc_event_time_lag_seconds",
    "Wall time now minus the global watermark W of this worker's last commit",
    ["pipeline", "query"],
)

# Batches take from about a millisecond (continuous, few records) to many
# seconds (a bounded run's large batches, a slow sink).
_SECONDS_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

PARTITION_WATERMARK = Gauge(
    "streamproc_watermark_timestamp_seconds",
    "Partition watermark wm(p) after the last committed batch (event time, Unix seconds)",
    ["pipeline", "query", "partition"],
)
GLOBAL_WATERMARK = Gauge(
    "streamproc_global_watermark_timestamp_seconds",
    "Global watermark W of the query after this worker's last commit (event time, Unix seconds)",
    ["pipeline", "query"],
)
MAX_EVENT_TIME = Gauge(
    "streamproc_max_event_time_timestamp_seconds",
    "Max event time seen in a partition (event time, Unix seconds)",
    ["pipeline", "query", "partition"],
)
PHASE_SECONDS = Histogram(
    "streamproc_phase_duration_seconds",
    "Wall time of a batch's phase (fetch, decode, engine, checkpoint, sink, commit)",
    ["pipeline", "query", "phase"],
    buckets=_SECONDS_BUCKETS,
)
BATCH_SECONDS = Histogram(
    "streamproc_batch_duration_seconds",
    "Wall time from a batch's fetch to its commit",
    ["pipeline", "query"],
    buckets=_SECONDS_BUCKETS,
)
CONSUMER_LAG = Gauge(
    "streamproc_consumer_lag_records",
    "Records of a partition past this worker's last commit: the end offset its client "
    "last saw minus the committed next offset",
    ["pipeline", "query", "partition"],
)
ASSIGNED_PARTITIONS = Gauge(
    "streamproc_assigned_partitions",
    "Source partitions this worker owns",
    ["pipeline", "query"],
)
REBALANCES = Counter(
    "streamproc_rebalances_total",
    "Assignments this worker received from its consumer group (the first one included)",
    ["pipeline", "query"],
)
STATE_ROWS = Gauge(
    "streamproc_state_rows",
    "Partial states (key, window, partition) of the query in the checkpoint after this "
    "worker's last commit, every partition's",
    ["pipeline", "query"],
)
STATE_ROWS_UPDATED = Counter(
    "streamproc_state_rows_updated_total",
    "Partial states this worker's commits wrote (inserted or updated)",
    ["pipeline", "query"],
)
STATE_BYTES = Gauge(
    "streamproc_state_bytes",
    "This worker's local state (its partitions' RocksDB stores: live data and memtables, "
    "as RocksDB estimates them); absent with in-memory state",
    ["pipeline", "query"],
)
FILES_UNREAD = Counter(
    "streamproc_files_unread_total",
    "Files a file source found gone (kind deleted) or truncated in place (kind truncated, "
    "onFileTruncated continue) with bytes it had not read",
    ["pipeline", "query", "kind"],
)
FILE_BYTES_UNREAD = Counter(
    "streamproc_file_bytes_unread_total",
    "Bytes of those files the file source had not read (at least: what it had seen of them)",
    ["pipeline", "query", "kind"],
)
LAST_COMMIT = Gauge(
    "streamproc_last_commit_timestamp_seconds",
    "Wall time of this worker's last committed batch (Unix seconds)",
    ["pipeline", "query"],
)

#: The label values of the labelled counters, each series made at 0 at start.
OUTCOMES = ("aggregated", "late", "bad", "filtered")
BATCH_RESULTS = ("committed", "stale", "failed", "dead_lettered", "unavailable")
DEAD_LETTER_KINDS = ("bad", "refused", "late")
UNREAD_KINDS = ("deleted", "truncated")

#: A gauge with no value yet (no commit, no watermark): NaN, which PromQL's max
#: and min skip, and no comparison holds for, so no alert fires on it.
NO_VALUE = float("nan")


def init_query_series(pipeline: str, query: str, *, late_strategy: str) -> None:
    """Make every series of a query, before its first batch.

    Counters at 0; the breaker closed and no partition assigned; gauges that only a
    commit gives a value (the last commit's time, the global watermark W, the
    checkpoint's state rows, the event-time lag) NaN until then.

    Args:
        pipeline: The pipelineId label.
        query: The queryName label.
        late_strategy: The late router's strategy (the one strategy label it counts).
    """
    labels = (pipeline, query)
    for outcome in OUTCOMES:
        RECORDS.labels(*labels, outcome)
    LATE.labels(*labels, late_strategy)
    for result in BATCH_RESULTS:
        BATCHES.labels(*labels, result)
    for kind in DEAD_LETTER_KINDS:
        DEAD_LETTERS.labels(*labels, kind)
    for phase in PHASES:
        PHASE_SECONDS.labels(*labels, phase)
    for series in (
        RESULT_ROWS,
        RETRIES,
        REBALANCES,
        STATE_ROWS_UPDATED,
        COMMIT_SECONDS,
        COMMIT_ROUND_TRIPS,
    ):
        series.labels(*labels)
    BATCH_SECONDS.labels(*labels)
    BREAKER_OPEN.labels(*labels).set(0)
    ASSIGNED_PARTITIONS.labels(*labels).set(0)
    for gauge in (LAST_COMMIT, GLOBAL_WATERMARK, STATE_ROWS, EVENT_TIME_LAG):
        gauge.labels(*labels).set(NO_VALUE)


def init_partition_series(
    pipeline: str,
    query: str,
    partition: int,
    *,
    watermark_ms: int | None,
    max_event_ts_ms: int | None,
    lag: int | None,
) -> None:
    """Make the series of a partition this worker was assigned, at their current values.

    Args:
        pipeline: The pipelineId label.
        query: The queryName label.
        partition: The partition.
        watermark_ms: Its watermark as restored from the checkpoint (event time), if any.
        max_event_ts_ms: Its max event time as restored, if any.
        lag: Records past its committed offset, when its end is known (else NaN).
    """
    labels = (pipeline, query, str(partition))
    for gauge, ms in ((PARTITION_WATERMARK, watermark_ms), (MAX_EVENT_TIME, max_event_ts_ms)):
        gauge.labels(*labels).set(NO_VALUE if ms is None else ms / 1000)
    CONSUMER_LAG.labels(*labels).set(NO_VALUE if lag is None else lag)


def unread_counter(pipeline: str, query: str) -> Callable[[str, int], None]:
    """Count a file found gone or truncated with bytes unread (the file source's `on_unread`).

    Makes the series of both kinds at 0: a file source's alert tells "none" from "not
    scraped".
    """
    for kind in UNREAD_KINDS:
        FILES_UNREAD.labels(pipeline, query, kind)
        FILE_BYTES_UNREAD.labels(pipeline, query, kind)

    def count(kind: str, unread: int) -> None:
        FILES_UNREAD.labels(pipeline, query, kind).inc()
        FILE_BYTES_UNREAD.labels(pipeline, query, kind).inc(unread)

    return count


#: Listen on loopback only unless told otherwise: /metrics has no authentication.
DEFAULT_ADDRESS = "127.0.0.1"

_port: int | None = None


class MetricsServerError(RuntimeError):
    """The metrics server cannot listen where it was told to (one line: where and why)."""


def metrics_endpoint(address: str | None = None, port: int | None = None) -> tuple[str, int] | None:
    """Where to serve /metrics: the environment over the config; None when no port is set.

    Raises:
        MetricsServerError: STREAMPROC_METRICS_PORT is not a port number.
    """
    env_port = os.environ.get("STREAMPROC_METRICS_PORT", "").strip()
    if env_port:
        if not env_port.isdigit() or int(env_port) > 65535:
            raise MetricsServerError(
                f"STREAMPROC_METRICS_PORT={env_port!r} is not a port; expected 0 to 65535 "
                "(0: any free port)"
            )
        port = int(env_port)
    if port is None:
        return None
    env_address = os.environ.get("STREAMPROC_METRICS_ADDRESS", "").strip()
    return env_address or address or DEFAULT_ADDRESS, port


def serve_metrics(host: str, port: int) -> tuple[Any, int]:
    """Start a /metrics server on host:port (0: any free port); returns it and its port.

    Raises:
        MetricsServerError: the address cannot be bound (in use, not local).
    """
    try:
        server, _thread = start_http_server(port, addr=host)
    except OSError as exc:
        why = "already in use" if exc.errno == errno.EADDRINUSE else exc.strerror or str(exc)
        raise MetricsServerError(
            f"cannot serve metrics on {host}:{port}: {why} (set metricsPort or "
            "STREAMPROC_METRICS_PORT to a free port, or 0 for any)"
        ) from None
    return server, int(server.server_address[1])


def start_metrics_server(address: str | None = None, port: int | None = None) -> int | None:
    """Serve /metrics (see `metrics_endpoint`) once per process; returns the port, None if none.

    Port 0 takes any free port; the port taken is logged and returned. A
    second call in one process returns the first server's port.

    Raises:
        MetricsServerError: no port number, or the address cannot be bound.
    """
    global _port
    if _port is not None:
        return _port
    endpoint = metrics_endpoint(address, port)
    if endpoint is None:
        return None
    host, wanted = endpoint
    _server, _port = serve_metrics(host, wanted)
    log.info("metrics on http://%s:%d/metrics", host, _port)
    return _port
